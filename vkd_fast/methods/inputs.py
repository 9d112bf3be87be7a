"""The items a method receives, checked once at the boundary: a non-empty list of dicts with an
``image`` (a local path opened, a URL refused), and a question and answer where output-level terms
need them."""

from __future__ import annotations

import torch


def check_items(name: str, items) -> list:
    """A non-empty list of dicts with an ``image``."""
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of items (dicts with an 'image'), "
                        f"got {type(items).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty: unlearning needs at least one {name} image")
    for i, it in enumerate(items):
        if not isinstance(it, dict) or "image" not in it:
            raise ValueError(f"{name}[{i}] must be a dict with an 'image' (a PIL image), got {type(it).__name__}"
                             + (f" with keys {sorted(it)}" if isinstance(it, dict) else ""))
        image = _local_image(f"{name}[{i}]['image']", it["image"])
        if image is not it["image"]:
            items[i] = {**it, "image": image}
    return items


def _local_image(where: str, image):
    """A PIL image (or an array / tensor of pixels) as it is; a local file path opened as an RGB PIL
    image; a URL refused -- nothing at run time touches the network."""
    import os

    from PIL import Image

    if isinstance(image, Image.Image) or isinstance(image, torch.Tensor) or type(image).__module__ == "numpy":
        return image
    if isinstance(image, (str, os.PathLike)):
        text = os.fspath(image)
        if "://" in text or text.startswith(("www.", "data:")):
            raise ValueError(f"{where} is a URL ({text[:80]}); vkd_fast never reads the network: download the image "
                             "and pass a PIL image or a local path")
        try:
            with Image.open(text) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise ValueError(f"{where}: cannot read the image file {text!r} ({exc})") from None
    raise ValueError(f"{where} must be a PIL image or a local image path, got {type(image).__name__}")


def check_qa(name: str, items: list[dict]) -> None:
    """Every item carries a question and an answer (output-level terms train on answer tokens)."""
    bare = [i for i, it in enumerate(items) if not it.get("question") or not it.get("answer")]
    if bare:
        raise ValueError(f"{name} items {bare[:5]} carry no question/answer: output-level methods train "
                         "on answer tokens, so every item needs 'question' and 'answer'")
