"""MLLMU-Bench (Liu et al., 2025) from local parquet files (the Hugging Face dataset layout).

Layout: a root directory with one folder per split, each holding one or more ``*.parquet`` files
(read in file-name order)::

    <root>/forget_5/ forget_10/ forget_15/     fictitious people to forget (evaluation questions)
           retain_95/ retain_90/ retain_85/    the complementary fictitious people
           Test_Set/                           the forget people on unseen images (``images`` list)
           Retain_Set/                         real celebrities (utility)
           Full_Set/                           all fictitious people
           ft_Data/                            fine-tuning data (``metadata`` Q/A pairs)

Every function takes ``path``: a split folder or a single parquet file; ``mllmu_split_path(root,
split)`` maps a root and a split name to its folder.

Evaluation rows (``forget_NN``, ``retain_NN``, ``Test_Set``, ``Retain_Set``, ``Full_Set``):

* ``ID`` (optional; ids fall back to ``"<file name>:<row>"``);
* ``image``: an image struct ``{"bytes": binary, "path": str | null}`` (or raw bytes); ``Test_Set``
  has ``images`` (a list of image structs) instead;
* ``Classification_Task`` (required): struct ``{Image_Textual_Questions, Pure_Text_Questions}``, each
  a list of ``{Question, Options: {A, B, C, D}, Correct_Answer}``; ``Correct_Answer`` is an option
  key such as ``"A"`` (a lower-case key is accepted; an ``Options`` list is keyed ``A``, ``B``, ...);
* ``Generation_Task`` (optional): list of ``{Type, Question, Ground_Truth}``; ``Type`` is
  ``"Image_Textual"`` or ``"Pure_Text"``;
* ``Mask_Task`` (optional): list of cloze items ``{Type, Question, Ground_Truth}`` whose question
  marks the blank with ``__`` (any text field containing ``__`` is taken as the question, and
  ``Ground_Truth`` / ``Answer`` as the answer).

The nested columns may be structs / lists or JSON strings (both accepted). Keys inside them are
matched case-insensitively, ignoring underscores.

Training rows (``ft_Data`` and baseline train files): ``image`` + ``metadata``, a JSON string holding a
list of ``{"Question": ..., "Answer": ...}`` (a single object is accepted too).
"""

from __future__ import annotations

from pathlib import Path

from ._files import (
    DataFormatError,
    check_limit,
    decode_image,
    file_columns,
    iter_rows,
    key_of,
    location,
    missing_column,
    parquet_files,
    parse_json,
    require_columns,
    row_id,
)

__all__ = ["DEFAULT_SPLITS", "MLLMU_SPLITS", "DataFormatError", "load_mllmu_eval", "load_mllmu_train",
           "mllmu_split_path"]

#: (forget split, retain split) every reader uses unless told otherwise: the paper's forget-5% setting
DEFAULT_SPLITS = ("forget_5", "retain_95")
MLLMU_SPLITS = ("forget_5", "forget_10", "forget_15", "retain_95", "retain_90", "retain_85", "Test_Set",
                "Retain_Set", "Full_Set", "ft_Data")
_TASK_COLUMNS = ("Classification_Task", "Generation_Task", "Mask_Task")
_MC_GROUPS = (("Image_Textual_Questions", "vqa"), ("Pure_Text_Questions", "qa"))


def mllmu_split_path(root, split: str) -> Path:
    """The folder of ``split`` (e.g. ``"forget_5"``, ``"Test_Set"``; case-insensitive) under the
    MLLMU-Bench ``root``."""
    root = Path(root).expanduser()
    names = {s.lower(): s for s in MLLMU_SPLITS}
    if not isinstance(split, str) or split.lower() not in names:
        raise ValueError(f"unknown MLLMU-Bench split {split!r}; valid splits: {', '.join(MLLMU_SPLITS)}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory (expected the MLLMU-Bench root with split folders "
                                f"such as forget_5/)")
    canonical = names[split.lower()]
    folder = root / canonical
    if not folder.is_dir():  # tolerate a differently-cased folder name
        folder = next((d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() == canonical.lower()),
                      folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist (expected the MLLMU-Bench split folder {canonical}/ "
                                f"under {root})")
    return folder


def _what(kind: str) -> str:
    return f"MLLMU-Bench {kind} parquet files (a split folder such as forget_5/ or ft_Data/, or one .parquet file)"


def _text(value, file: Path, row: int, field: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        got = "missing or null" if value is None else f"{type(value).__name__} {value!r}"[:80]
        raise DataFormatError(f"{location(file, row, field)}: expected a non-empty string, got {got}")
    return value


def _list(value, file: Path, row: int, field: str) -> list:
    value = parse_json(value, file, row, field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataFormatError(f"{location(file, row, field)}: expected a list, got {type(value).__name__}")
    return value


def _struct(value, file: Path, row: int, field: str) -> dict:
    value = parse_json(value, file, row, field)
    if not isinstance(value, dict):
        raise DataFormatError(f"{location(file, row, field)}: expected an object, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------------- training


def load_mllmu_train(path, limit: int | None = None) -> list[dict]:
    """Training items, one per (image, Question, Answer) pair of the ``metadata`` column:
    ``{"image": PIL RGB, "question": str, "answer": str, "id": row ID or "<file>:<row>"}`` — the item
    format of ``vkd_fast.unlearn``. ``limit``: at most this many items."""
    limit = check_limit(limit)
    items: list[dict] = []
    for file in parquet_files(path, _what("training")):
        if limit is not None and len(items) >= limit:
            break
        cols = file_columns(file)
        if "metadata" not in cols:
            if any(c in cols for c in _TASK_COLUMNS):
                present = ", ".join(repr(c) for c in cols)
                raise DataFormatError(
                    f"{file} has no 'metadata' column: it is an MLLMU-Bench evaluation split (questions without "
                    f"training answers); train on ft_Data or the baseline train splits' files that carry metadata "
                    f"(columns present: {present})")
            raise missing_column(file, "metadata", cols)
        require_columns(file, cols, ["image"])
        for r, row in iter_rows(file, [c for c in ("ID", "image", "metadata") if c in cols]):
            pairs = parse_json(row["metadata"], file, r, "metadata")
            if isinstance(pairs, dict):
                pairs = [pairs]
            if not isinstance(pairs, list):
                got = "null" if pairs is None else type(pairs).__name__
                raise DataFormatError(f"{location(file, r, 'metadata')}: expected a list of {{Question, Answer}} "
                                      f"objects, got {got}")
            image = decode_image(row["image"], file, r, "image")
            rid = row_id(row, file, r, "ID")
            for k, pair in enumerate(pairs):
                if not isinstance(pair, dict):
                    raise DataFormatError(f"{location(file, r, f'metadata[{k}]')}: expected a {{Question, Answer}} "
                                          f"object, got {type(pair).__name__}")
                question = _text(key_of(pair, "Question"), file, r, f"metadata[{k}].Question")
                answer = _text(key_of(pair, "Answer"), file, r, f"metadata[{k}].Answer")
                items.append({"image": image, "question": question, "answer": answer, "id": rid})
                if limit is not None and len(items) >= limit:
                    return items
    return items


# -------------------------------------------------------------------------------------- evaluation


def _is_pure_text(type_value) -> bool:
    t = str(type_value or "").lower().replace("-", "_")
    return "pure" in t or "text_only" in t or t in ("text", "textual", "language")


class _RowImages:
    """The row's decoded images (``image`` or the ``images`` list), decoded on first use."""

    def __init__(self, row: dict, column: str | None, file: Path, index: int):
        self.row, self.column, self.file, self.index = row, column, file, index
        self._decoded = None

    def get(self, field: str) -> list[tuple[int | None, object]]:
        """``[(image_index or None, PIL image)]``; an error naming ``field`` when the row has none."""
        if self._decoded is None:
            cell = self.row.get(self.column) if self.column else None
            if self.column == "images":
                cells = _list(cell, self.file, self.index, "images")
                self._decoded = [(k, decode_image(c, self.file, self.index, f"images[{k}]"))
                                 for k, c in enumerate(cells)]
            elif cell is not None:
                self._decoded = [(None, decode_image(cell, self.file, self.index, self.column))]
            else:
                self._decoded = []
        if not self._decoded:
            col = self.column or "image"
            raise DataFormatError(f"{location(self.file, self.index, col)}: no image in this row, but "
                                  f"{field} is an image question")
        return self._decoded


def _with_image(item: dict, images: list, image_index_key: bool) -> list[dict]:
    out = []
    for k, img in images:
        it = dict(item, image=img)
        if image_index_key:
            it["image_index"] = k
        out.append(it)
    return out


def _mc_item(entry, file: Path, r: int, field: str, rid) -> dict:
    entry = _struct(entry, file, r, field)
    question = _text(key_of(entry, "Question"), file, r, f"{field}.Question")
    options = parse_json(key_of(entry, "Options"), file, r, f"{field}.Options")
    if isinstance(options, list):  # ["text", ...] -> {"A": "text", ...}
        options = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", options))
    options = _struct(options, file, r, f"{field}.Options")
    # what this loader normalises and MLLMU-Bench's own eval.py does not (it shows a null option as
    # "D: None" and accepts D; it never matches a lower-case Correct_Answer): the benchmark protocol
    # refuses such rows (vkd_fast.eval.protocols.mllmu), the likelihood protocol uses the normalised item
    quirks = [f"{location(file, r, f'{field}.Options.{k}')}: the option is null" for k, v in options.items()
              if v is None]
    options = {str(k): v for k, v in options.items() if v is not None}
    for k, v in options.items():
        _text(v, file, r, f"{field}.Options.{k}")
    options = {k: str(v) for k, v in options.items()}
    if len(options) < 2:
        raise DataFormatError(f"{location(file, r, f'{field}.Options')}: expected at least 2 options, "
                              f"got {sorted(options)}")
    answer = key_of(entry, "Correct_Answer", "Answer")
    key = str(answer).strip() if answer is not None else None
    if key not in options and key is not None and key.upper() in options:
        quirks.append(f"{location(file, r, f'{field}.Correct_Answer')}: {answer!r} is lower-case")
        key = key.upper()
    if key not in options:
        raise DataFormatError(f"{location(file, r, f'{field}.Correct_Answer')}: {answer!r} is not one of the "
                              f"Options keys {sorted(options)}")
    item = {"question": question, "options": options, "answer": key, "image": None, "id": rid}
    if quirks:
        item["quirks"] = quirks
    return item


def _cloze_question(entry: dict):
    q = key_of(entry, "Question", "Masked_Question", "Masked_Text", "Text", "Sentence", "Statement", "Prompt")
    if isinstance(q, str) and "__" in q:
        return q
    return next((v for v in entry.values() if isinstance(v, str) and "__" in v), None)


def _eval_row(out: dict, row: dict, file: Path, r: int, image_column: str | None, cols: list[str], rid,
              position: int) -> None:
    start = {k: len(v) for k, v in out.items()}
    images = _RowImages(row, image_column, file, r)
    per_image = image_column == "images"
    task = parse_json(row.get("Classification_Task"), file, r, "Classification_Task")
    if task is None:
        task = {}
    if not isinstance(task, dict):
        raise DataFormatError(f"{location(file, r, 'Classification_Task')}: expected an object with "
                              f"Image_Textual_Questions / Pure_Text_Questions, got {type(task).__name__}")
    for group, section in _MC_GROUPS:
        field = f"Classification_Task.{group}"
        for k, entry in enumerate(_list(key_of(task, group), file, r, field)):
            item = dict(_mc_item(entry, file, r, f"{field}[{k}]", rid), index=k)
            if section == "vqa":
                out["vqa"].extend(_with_image(item, images.get(f"{field}[{k}]"), per_image))
            else:
                out["qa"].append(item)
    for task, kind_key in (("Generation_Task", "generation"), ("Mask_Task", "cloze")):
        if task not in cols:
            continue
        for k, entry in enumerate(_list(row.get(task), file, r, task)):
            field = f"{task}[{k}]"
            entry = _struct(entry, file, r, field)
            if task == "Mask_Task":
                question = _cloze_question(entry)
                if question is None:
                    raise DataFormatError(f"{location(file, r, field)}: no question text with a '__' blank "
                                          f"(keys: {sorted(map(str, entry))})")
            else:
                question = _text(key_of(entry, "Question"), file, r, f"{field}.Question")
            answer = _text(key_of(entry, "Ground_Truth", "Answer"), file, r, f"{field}.Ground_Truth")
            kind = key_of(entry, "Type", "Question_Type")
            item = {"question": question, "answer": answer, "type": kind, "image": None, "id": rid, "index": k}
            if _is_pure_text(kind):
                out[kind_key].append(item)
            else:
                out[kind_key].extend(_with_image(item, images.get(field), per_image))
    for kind, items in out.items():
        for item in items[start[kind]:]:
            item["row"] = position


def load_mllmu_eval(path, limit: int | None = None, ids=None) -> dict:
    """The evaluation items of an MLLMU-Bench split, by task:

    * ``"vqa"``: image multiple-choice items (``Image_Textual_Questions``) and ``"qa"``: text-only ones
      (``Pure_Text_Questions``), each ``{"question", "options": {"A": str, ...}, "answer": "A",
      "image": PIL or None, "id", "index"}`` (the format of ``vkd_fast.eval.metrics.multiple_choice``);
    * ``"generation"``: ``{"question", "answer" (Ground_Truth), "type", "image", "id", "index"}``;
    * ``"cloze"``: ``{"question" (with "__"), "answer", "type", "image", "id", "index"}``.

    ``"index"`` is the question's position in its row's list (``Image_Textual_Questions``,
    ``Pure_Text_Questions``, ``Generation_Task`` or ``Mask_Task``): MLLMU-Bench's own protocol skips a
    demonstration person's questions by it.

    Image-typed items carry the row's image; ``Pure_Text`` ones have ``image`` None. With an ``images``
    list (``Test_Set``) each image-typed question gives one item per image, with ``"image_index"``.
    Every item also has ``"row"``, its row's position in the split (file order). ``limit``: read at most
    this many rows (people / images), in file order; ``ids``: keep only the rows whose ``ID`` is in
    it (the others are neither decoded nor counted).
    """
    limit = check_limit(limit)
    ids = None if ids is None else set(ids)
    out: dict[str, list] = {"vqa": [], "qa": [], "generation": [], "cloze": []}
    rows = seen = 0
    for file in parquet_files(path, _what("evaluation")):
        if limit is not None and rows >= limit:
            break
        cols = file_columns(file)
        image_column = "image" if "image" in cols else "images" if "images" in cols else None
        if image_column is None:
            raise missing_column(file, "image", cols, " (or 'images')")
        require_columns(file, cols, ["Classification_Task"],
                        " (an MLLMU-Bench evaluation split needs the question columns)")
        read = [c for c in ("ID", image_column, *_TASK_COLUMNS) if c in cols]
        for r, row in iter_rows(file, read):
            if limit is not None and rows >= limit:
                break
            rid = row_id(row, file, r, "ID")
            seen += 1
            if ids is not None and rid not in ids:
                continue
            _eval_row(out, row, file, r, image_column, cols, rid, seen - 1)
            rows += 1
    return out
