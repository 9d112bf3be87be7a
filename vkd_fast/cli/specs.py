"""What the command line's arguments name: data specs (folders, ``.jsonl`` files, a task's
``<task>:...`` specs), models (a local directory or a task's, e.g. ``toy:vanilla``) and tokenizers."""

from __future__ import annotations

import json

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def _quiet_transformers() -> None:
    """The CLI prints its own progress: no per-file load / save bars from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _task_spec(spec: str):
    """(task, rest) for a ``<task>:<rest>`` spec naming a registered task, else None."""
    from ..tasks import TASKS, get_task

    name, sep, rest = spec.partition(":")
    return (get_task(name), rest) if sep and name in TASKS else None


def _open_image(where: str, path):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:  # missing, unreadable, not an image, truncated
        raise ValueError(f"dataset {where}: cannot read the image {path} ({exc})") from None


def _image_files(folder) -> list:
    """The image files directly in ``folder``, sorted by name (hidden files left out)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _IMAGE_SUFFIXES)


def _folder_items(spec: str, path) -> list[dict]:
    """A folder -> items: ``FOLDER/<person>/<image>`` (one subfolder per person, the ImageFolder
    convention) gives ``{"image", "path", "identity": <subfolder name>}`` (people and their images
    sorted by name); a flat folder of images gives ``{"image", "path"}`` (no person). Images beside
    person folders are refused: it would be unclear whom they picture."""
    files = _image_files(path)
    people = {d.name: _image_files(d) for d in sorted(path.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    with_images = sorted(name for name, images in people.items() if images)
    if files and with_images:
        raise ValueError(f"dataset {spec}: the folder holds both images ({files[0].name}, ...) and person subfolders "
                         f"with images ({with_images[0]}/, ...); put every image in its person's subfolder "
                         "(FOLDER/<person>/<image>) or use a flat folder of images")
    if files:
        return [{"image": _open_image(spec, p), "path": str(p)} for p in files]
    if not with_images:
        raise ValueError(f"dataset {spec}: the folder holds no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}), "
                         "neither directly nor in one subfolder per person (FOLDER/<person>/<image>)")
    empty = sorted(name for name, images in people.items() if not images)
    if empty:
        raise ValueError(f"dataset {spec}: the person folder {empty[0]!r} holds no image files (a person's images sit "
                         "directly in FOLDER/<person>/)")
    return [{"image": _open_image(spec, p), "path": str(p), "identity": name}
            for name in with_images for p in people[name]]


def load_items(spec: str, args=None, *, person_per_image: bool = False) -> list[dict]:
    """A dataset spec -> items: ``toy:forget`` / ``toy:retain`` (the toy world's training images with a
    question and answer), ``mllmu:PATH`` (MLLMU-Bench training rows with metadata), ``clear:PATH``
    (CLEAR image rows, caption as the answer), a folder of images, or a ``.jsonl`` file of
    ``{"image": path, "question", "answer", "identity"}`` objects (image paths relative to the file;
    all but ``image`` optional; other keys kept).

    Who each item pictures (its person, :func:`vkd_fast.data.person_of`): the toy world's
    ``identity``, CLEAR's ``name``, MLLMU-Bench's ``id``; a folder with one subfolder per person
    (``FOLDER/<person>/<image>``, the ImageFolder convention) gives ``"identity": <subfolder name>``;
    a ``.jsonl`` row its ``identity`` (or ``name`` / ``id``). A flat folder of images, or rows without
    one, name no person: methods that group images by person refuse them, unless
    ``person_per_image`` (or ``args.person_per_image``, the CLI's ``--person-per-image``) counts each
    such image as a person of its own (``identity``: the image's path; rows of one image share it)."""
    from ..utils.items import person_per_image as per_image

    per_image_wanted = bool(person_per_image or getattr(args, "person_per_image", False))
    items = _read_items(spec, args, per_image_wanted)
    return per_image(items) if per_image_wanted else items


def _read_items(spec: str, args, per_image_wanted: bool) -> list[dict]:
    """:func:`load_items` before ``person_per_image`` (a ``.jsonl`` row without a person gets its
    image's path as its person here, when asked, so that rows of one image share it)."""
    from pathlib import Path

    from ..utils.items import person_key

    found = _task_spec(spec)
    if found is not None:
        task, rest = found
        return task.train_items(rest, args)
    path = Path(spec)
    if path.is_dir():
        return _folder_items(spec, path)
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
            found = person_key(row)
            if found is not None and not isinstance(found[1], (str, int, float)):
                raise ValueError(f"dataset {spec}, line {n}: the person ({found[0]!r}) must be a string or a number, "
                                 f"got {type(found[1]).__name__}")
            item = {**row, "image": _open_image(f"{spec}, line {n}", path.parent / row["image"])}
            if found is None and per_image_wanted:
                item["identity"] = str(path.parent / row["image"])  # the image's own person
            items.append(item)
        return items
    from ..tasks import available_tasks, get_task

    tasks = ", ".join(h for h in (get_task(n).train_spec_help for n in available_tasks()) if h)
    raise ValueError(f"dataset {spec!r} must be a folder of images (FOLDER/<person>/<image>, or flat), a .jsonl file "
                     f"of {{\"image\": path, \"identity\": person, ...}} rows, or a task's data: {tasks}")


def load_model(spec: str, args=None, dtype=None, device=None):
    """``toy:vanilla`` / ``toy:gold`` (the toy world's cached models, built on first use; float32) or a
    local model directory -> (model, tokenizer or None), on ``device`` when given. ``dtype``: of a local
    model's weights -- a torch dtype, None (the checkpoint's own) or ``"16bit"`` (the checkpoint's when
    it is 16-bit, else bfloat16: the accelerator default)."""
    _quiet_transformers()
    found = _task_spec(spec)
    if found is not None:
        task, rest = found
        return task.load_model(rest, args, device)
    from pathlib import Path

    if not Path(spec).is_dir():
        from ..tasks import available_tasks, get_task

        models = "".join(f", {h}" for h in (get_task(n).model_spec_help for n in available_tasks()) if h)
        raise ValueError(f"model {spec!r} must be a local model directory{models}")
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    asked = "auto" if dtype in (None, "16bit") else dtype
    try:
        model = AutoModelForImageTextToText.from_pretrained(spec, local_files_only=True, dtype=asked).eval()
    except (OSError, ValueError, KeyError) as exc:  # no weights, a bad config.json, an unknown model type
        raise ValueError(f"model {spec}: cannot be loaded ({' '.join(str(exc).split())[:300]})") from None
    if dtype == "16bit" and next(model.parameters()).dtype not in (torch.bfloat16, torch.float16):
        model.to(torch.bfloat16)
    model.requires_grad_(False)
    if device is not None:
        model.to(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=True)
    except (OSError, ValueError):
        tokenizer = None
    if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = _processor_chat_template(Path(spec))
    return model, tokenizer


def _processor_chat_template(folder):
    """The chat template a checkpoint folder keeps for its processor (``chat_template.json``, the older
    layout that AutoTokenizer does not read; ``chat_template.jinja`` it reads itself), or None."""
    path = folder / "chat_template.json"
    if not path.is_file():
        return None
    try:
        template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"model {folder}: chat_template.json is not a JSON object with a chat_template "
                         f"({exc})") from None
    return template if isinstance(template, str) and template else None


def load_visual(spec: str, dtype=None):
    """A local model directory with only its vision tower and projector in memory (``dtype``: theirs;
    None: the checkpoint's)."""
    from ..checkpoints import load_visual_model

    _quiet_transformers()
    model = load_visual_model(spec, dtype=dtype)
    model.requires_grad_(False)
    return model


def _tokenizer_for(args, tokenizer):
    """--tokenizer DIR wins; else the model directory's; else the task's (--data, or the task named by
    the --forget spec)."""
    if getattr(args, "tokenizer", None):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    if tokenizer is not None:
        return tokenizer
    from ..tasks import TASKS, get_task

    found = _task_spec(str(getattr(args, "forget", "")))
    task = found[0] if found else get_task(args.data) if getattr(args, "data", None) in TASKS else None
    default = task.tokenizer(args) if task is not None else None
    if default is not None:
        return default
    raise ValueError("no tokenizer: the model directory has none; pass --tokenizer DIR")
