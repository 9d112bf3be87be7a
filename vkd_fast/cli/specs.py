"""What the command line's arguments name: data specs (folders, ``.jsonl`` files, ``toy:`` /
``mllmu:`` / ``clear:`` specs), models (a local directory or ``toy:vanilla`` / ``toy:gold``) and
tokenizers."""

from __future__ import annotations

import json

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def _quiet_transformers() -> None:
    """The CLI prints its own progress: no per-file load / save bars from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _toy_world(args):
    from ..data import ToyWorld, ToyWorldConfig

    return ToyWorld(ToyWorldConfig(seed=getattr(args, "world_seed", 0), n_identities=getattr(args, "identities", 24),
                                   forget_fraction=getattr(args, "forget_fraction", 0.1)))


def _open_image(where: str, path):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:  # missing, unreadable, not an image, truncated
        raise ValueError(f"dataset {where}: cannot read the image {path} ({exc})") from None


def _toy_model(args):
    """The toy models' build options from the command line (the defaults without it)."""
    from ..data import ToyModelConfig

    return ToyModelConfig(max_steps=getattr(args, "build_max_steps", 600), lr=getattr(args, "build_lr", 2e-3))


def load_items(spec: str, args=None) -> list[dict]:
    """A dataset spec -> items: ``toy:forget`` / ``toy:retain`` (the toy world's training images with a
    question and answer), ``mllmu:PATH`` (MLLMU-Bench training rows with metadata), ``clear:PATH``
    (CLEAR image rows, caption as the answer), a folder of images (sorted by name), or a ``.jsonl``
    file of objects with an ``image`` path (relative to the file) and optional ``question`` / ``answer``."""
    from pathlib import Path


    if spec in ("toy:forget", "toy:retain"):
        world = _toy_world(args)
        return world.unlearn_items(world.forget_ids if spec == "toy:forget" else world.retain_ids)
    if spec.startswith("mllmu:"):
        from ..data import load_mllmu_train

        return load_mllmu_train(spec[len("mllmu:"):])
    if spec.startswith("clear:"):
        from ..data import load_clear_train

        return load_clear_train(spec[len("clear:"):])
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"dataset {spec}: the folder holds no image files ({', '.join(sorted(_IMAGE_SUFFIXES))})")
        return [{"image": _open_image(spec, p), "path": str(p)} for p in files]
    if path.suffix == ".jsonl" and path.is_file():
        items = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"dataset {spec}, line {n}: not JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("image"), str):
                raise ValueError(f"dataset {spec}, line {n}: no 'image' path")
            if "://" in row["image"]:
                raise ValueError(f"dataset {spec}, line {n}: the image is a URL; vkd_fast never reads the network")
            items.append({**row, "image": _open_image(f"{spec}, line {n}", path.parent / row["image"])})
        return items
    raise ValueError(f"dataset {spec!r} must be toy:forget, toy:retain, mllmu:PATH, clear:PATH, a folder of images "
                     "or a .jsonl file of {\"image\": path, ...} rows")


def load_model(spec: str, args=None, dtype=None):
    """``toy:vanilla`` / ``toy:gold`` (the toy world's cached models, built on first use) or a local
    model directory -> (model, tokenizer or None). ``dtype``: of a local model's weights (None: the
    checkpoint's)."""
    _quiet_transformers()
    if spec in ("toy:vanilla", "toy:gold"):
        from ..data import load_toy_models

        models = load_toy_models(_toy_world(args), _toy_model(args), progress=True)
        return (models.vanilla if spec == "toy:vanilla" else models.gold), models.tokenizer
    from pathlib import Path

    if not Path(spec).is_dir():
        raise ValueError(f"model {spec!r} must be toy:vanilla, toy:gold or a local model directory")
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    try:
        model = AutoModelForImageTextToText.from_pretrained(spec, local_files_only=True,
                                                            **({"dtype": dtype} if dtype is not None else {})).eval()
    except (OSError, ValueError, KeyError) as exc:  # no weights, a bad config.json, an unknown model type
        raise ValueError(f"model {spec}: cannot be loaded ({' '.join(str(exc).split())[:300]})") from None
    model.requires_grad_(False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=True)
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


def load_visual(spec: str, dtype=None):
    """A local model directory with only its vision tower and projector in memory (``dtype``: theirs;
    None: the checkpoint's)."""
    from ..checkpoints import load_visual_model

    _quiet_transformers()
    model = load_visual_model(spec, dtype=dtype)
    model.requires_grad_(False)
    return model


def _tokenizer_for(args, tokenizer):
    """--tokenizer DIR wins; else the model directory's; else the toy world's for toy data."""
    if getattr(args, "tokenizer", None):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    if tokenizer is not None:
        return tokenizer
    if getattr(args, "data", None) == "toy" or str(getattr(args, "forget", "")).startswith("toy:"):
        from ..data import load_toy_models

        return load_toy_models(_toy_world(args), _toy_model(args), progress=True).tokenizer
    raise ValueError("no tokenizer: the model directory has none; pass --tokenizer DIR")
