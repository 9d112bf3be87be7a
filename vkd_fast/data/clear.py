"""CLEAR (Dontsov et al., 2024: character unlearning in textual and visual modalities) from local
parquet files.

Every function takes ``path``: one parquet file or a directory of them (read in file-name order),
e.g. the folder of one configuration. Accepted columns (any subset; each use requires its own):

* ``image``: an image struct ``{"bytes": binary, "path": str | null}`` (or raw bytes), null for
  text-only rows (the ``+tofu`` configurations mix text-only TOFU questions into the data);
* ``caption`` (str), ``name`` (str): ``forget01/05/10``, ``retain90/95/99`` (and their variants);
* ``question``, ``answer`` (str): the ``+tofu`` configurations, and real-faces / real-world rows;
* ``perturbed_names`` (list of str, or a JSON string of one), ``perturbed_captions`` and any other
  ``perturbed_*`` column, and ``paraphrased_caption`` (str, any ``paraphrased_*`` column): the
  ``_perturbed`` configurations;
* ``options`` (list of str or ``{key: str}``, or a JSON string): multiple-choice rows (real faces /
  real world), whose ``answer`` is an option key or an option text;
* ``id`` / ``ID`` (optional): the row id, else ``"<file name>:<row>"``.

Other columns are ignored.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

from ._files import (
    DataFormatError,
    check_limit,
    decode_image,
    file_columns,
    iter_rows,
    location,
    missing_column,
    parquet_files,
    parse_json,
    require_columns,
    row_id,
)

__all__ = ["CAPTION_PROMPT", "NAME_PROMPT", "DataFormatError", "load_clear", "load_clear_eval", "load_clear_train"]

CAPTION_PROMPT = "Describe the person in the image."
NAME_PROMPT = "Who is the person in the image?"
_TEXT_COLUMNS = ("caption", "name", "question", "answer")
_ID_COLUMNS = ("id", "ID")
_WHAT = "CLEAR parquet files (a configuration folder such as forget05/, or one .parquet file)"


def _fields(cols: list[str]) -> list[str]:
    keep = ("image", "options", *_TEXT_COLUMNS)
    return [c for c in cols if c in keep or c.startswith(("perturbed_", "paraphrased_"))]


def _present(value) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _text(value, file: Path, r: int, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "null" if value is None else f"{type(value).__name__} {value!r}"[:80]
        raise DataFormatError(f"{location(file, r, field)}: expected a non-empty string, got {got}")
    return value


def _string_list(value, file: Path, r: int, field: str) -> list[str] | None:
    value = parse_json(value, file, r, field)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(f"{location(file, r, field)}: expected a list of strings, got {value!r}"[:300])
    return value


def _read_row(row: dict, file: Path, r: int) -> dict:
    out = {}
    for col, value in row.items():
        if col in _ID_COLUMNS:
            continue
        if col == "image":
            out[col] = None if value is None else decode_image(value, file, r, "image")
        elif col.startswith("perturbed_"):
            out[col] = _string_list(value, file, r, col)
        elif col == "options":
            out[col] = parse_json(value, file, r, col)
        else:
            out[col] = value
    out["id"] = row_id(row, file, r, *_ID_COLUMNS)
    return out


def _rows(path, limit, check):
    """``(file, row index, row dict)`` over the files of ``path``; ``check(file, cols)`` validates
    each file's columns and returns the columns to read. ``limit``: rows."""
    n = 0
    for file in parquet_files(path, _WHAT):
        if limit is not None and n >= limit:
            return
        cols = file_columns(file)
        read = check(file, cols)
        for r, row in iter_rows(file, read):
            if limit is not None and n >= limit:
                return
            n += 1
            yield file, r, _read_row(row, file, r)


def load_clear(path, limit: int | None = None) -> list[dict]:
    """Rows as dicts with the fields the file has among ``image`` (PIL RGB or None), ``caption``,
    ``name``, ``question``, ``answer``, ``options``, ``perturbed_*`` (lists of str), ``paraphrased_*``,
    plus ``"id"``.
    ``limit``: at most this many rows."""
    limit = check_limit(limit)

    def check(file, cols):
        if not any(c in cols for c in ("image", *_TEXT_COLUMNS)):
            raise missing_column(file, "image", cols, " (a CLEAR file has at least one of 'image', 'caption', "
                                                      "'name', 'question', 'answer')")
        return _fields(cols) + [c for c in _ID_COLUMNS if c in cols]

    return [row for _, _, row in _rows(path, limit, check)]


def load_clear_train(path, limit: int | None = None) -> list[dict]:
    """Unlearning items from the image rows: ``{"image": PIL RGB, "question": CAPTION_PROMPT,
    "answer": caption, "id"}`` (+ ``"name"`` when the file has one) — the item format of
    ``vkd_fast.unlearn``. Text-only rows (null image, ``+tofu``) are skipped (``load_clear`` returns
    them). ``limit``: at most this many items."""
    limit = check_limit(limit)
    items: list[dict] = []
    hint = " (load_clear_train trains on image captions; text-only rows are available from load_clear)"
    for file in parquet_files(path, _WHAT):
        if limit is not None and len(items) >= limit:
            break
        cols = file_columns(file)
        require_columns(file, cols, ["image", "caption"], hint)
        read = [c for c in ("image", "caption", "name", *_ID_COLUMNS) if c in cols]
        images = rows = 0
        for r, row in iter_rows(file, read):
            rows += 1
            if row["image"] is None:
                continue
            images += 1
            caption = row.get("caption")
            if not _present(caption):
                raise DataFormatError(f"{location(file, r, 'caption')}: an image row without a caption "
                                      f"(got {caption!r}); image rows train on their caption")
            item = {"image": decode_image(row["image"], file, r, "image"), "question": CAPTION_PROMPT,
                    "answer": _text(caption, file, r, "caption"), "id": row_id(row, file, r, *_ID_COLUMNS)}
            if row.get("name") is not None:
                item["name"] = row["name"]
            items.append(item)
            if limit is not None and len(items) >= limit:
                return items
        if images == 0:
            raise DataFormatError(f"{file}: no image at all (column 'image' is null in all {rows} rows): nothing "
                                  f"to train on; text-only rows are available from load_clear")
    return items


def _letters(n: int, file: Path, r: int, field: str) -> list[str]:
    if n > len(string.ascii_uppercase):
        raise DataFormatError(f"{location(file, r, field)}: {n} options, at most 26 are supported")
    return list(string.ascii_uppercase[:n])


def _name_mc(row: dict, file: Path, r: int) -> dict | None:
    perturbed = row.get("perturbed_names")
    if row.get("image") is None or not perturbed:
        return None
    name = _text(row.get("name"), file, r, "name")
    seen = {name.strip().casefold()}
    options = [name]
    for p in perturbed:
        key = p.strip().casefold()
        if key and key not in seen:
            seen.add(key)
            options.append(p)
    if len(options) < 2:
        raise DataFormatError(f"{location(file, r, 'perturbed_names')}: no name different from the true name "
                              f"{name!r}: {perturbed!r}"[:300])
    random.Random(r).shuffle(options)
    keys = _letters(len(options), file, r, "perturbed_names")
    return {"question": NAME_PROMPT, "options": dict(zip(keys, options)), "answer": keys[options.index(name)],
            "image": row["image"], "id": row["id"]}


def _options_mc(row: dict, file: Path, r: int) -> dict:
    options = row["options"]
    if isinstance(options, list):
        options = dict(zip(_letters(len(options), file, r, "options"), options))
    if not isinstance(options, dict) or len(options) < 2:
        raise DataFormatError(f"{location(file, r, 'options')}: expected a list or {{key: text}} of at least 2 "
                              f"options, got {options!r}"[:300])
    options = {str(k): _text(v, file, r, f"options.{k}") for k, v in options.items()}
    answer = row.get("answer")
    if isinstance(answer, str) and answer.strip() in options:
        key = answer.strip()
    else:
        key = next((k for k, v in options.items() if isinstance(answer, str) and v.strip() == answer.strip()), None)
    if key is None:
        raise DataFormatError(f"{location(file, r, 'answer')}: {answer!r} is neither an option key nor an option "
                              f"text of {options!r}"[:300])
    question = row["question"] if _present(row.get("question")) else NAME_PROMPT
    return {"question": question, "options": options, "answer": key, "image": row.get("image"), "id": row["id"]}


def load_clear_eval(path, limit: int | None = None) -> dict:
    """Evaluation items by kind:

    * ``"captions"``: image rows with a caption, ``{"image", "question": CAPTION_PROMPT, "answer":
      caption, "id"}`` (+ ``"name"``) for ROUGE-L generation;
    * ``"qa"``: rows with a ``question`` and ``answer`` (and no ``options``), ``{"question", "answer",
      "image": PIL or None, "id"}``;
    * ``"mc"``: multiple-choice items ``{"question", "options": {"A": ...}, "answer": key, "image",
      "id"}``: from ``perturbed_names`` (question NAME_PROMPT, options the true name plus the distinct
      perturbed names, shuffled by ``random.Random(row index within its file)``), or from an
      ``options`` column (real faces / real world).

    ``limit``: read at most this many rows.
    """
    limit = check_limit(limit)
    out: dict[str, list] = {"captions": [], "qa": [], "mc": []}

    def check(file, cols):
        has = set(cols)
        usable = ({"image", "caption"} <= has or {"question", "answer"} <= has
                  or {"image", "name", "perturbed_names"} <= has or {"image", "options", "answer"} <= has)
        if not usable:
            present = ", ".join(repr(c) for c in cols) or "none"
            raise DataFormatError(f"{file}: no evaluable columns: CLEAR evaluation needs 'image' + 'caption', "
                                  f"'question' + 'answer', 'image' + 'name' + 'perturbed_names', or 'image' + "
                                  f"'options' + 'answer' (columns present: {present})")
        return _fields(cols) + [c for c in _ID_COLUMNS if c in cols]

    for file, r, row in _rows(path, limit, check):
        image = row.get("image")
        if image is not None and "caption" in row:
            if not _present(row["caption"]):
                raise DataFormatError(f"{location(file, r, 'caption')}: an image row without a caption "
                                      f"(got {row['caption']!r})")
            item = {"image": image, "question": CAPTION_PROMPT, "answer": row["caption"], "id": row["id"]}
            if row.get("name") is not None:
                item["name"] = row["name"]
            out["captions"].append(item)
        if _present(row.get("options")):
            out["mc"].append(_options_mc(row, file, r))
        elif _present(row.get("question")) and _present(row.get("answer")):
            out["qa"].append({"question": row["question"], "answer": row["answer"], "image": image, "id": row["id"]})
        mc = _name_mc(row, file, r)
        if mc is not None:
            out["mc"].append(mc)
    return out
