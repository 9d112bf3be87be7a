"""Shared helpers of the benchmark loaders: finding and reading parquet files, decoding image cells.

* A ``path`` is either one parquet file or a directory whose ``*.parquet`` files (not recursive) are
  read in file-name order.
* Cells are read with pyarrow (imported lazily: ``import vkd_fast`` never imports it); nested
  struct / list columns arrive as Python dicts / lists.
* An image cell is a Hugging Face image struct ``{"bytes": binary | null, "path": str | null}``
  (bytes preferred; a path is resolved relative to the parquet file's directory), or raw bytes, or a
  path string. It is decoded with PIL and converted to RGB.
* Every data error is a :class:`DataFormatError` naming the file, the row (0-based index within that
  file) and the field.
"""

from __future__ import annotations

import ast
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

_INSTALL_HINT = "pip install 'vkd-fast[hf]'"


class DataFormatError(ValueError):
    """A benchmark file does not have the expected layout: the message names the file, the row
    (0-based, within that file) and the field."""


def _parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading benchmark parquet files needs pyarrow: {_INSTALL_HINT}") from e
    return pq


def _pil_image():
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(f"decoding benchmark images needs pillow: {_INSTALL_HINT}") from e
    return Image


def location(file: Path, row: int, field: str) -> str:
    """``"<file> row <row>, field '<field>'"``: the prefix of every cell error."""
    return f"{file} row {row}, field '{field}'"


def check_limit(limit) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be None or an integer >= 0, got {limit!r}")
    return limit


def parquet_files(path, what: str = "parquet files") -> list[Path]:
    """The parquet files of ``path``: the file itself, or a directory's ``*.parquet`` in name order.

    ``what`` describes the expected content for the FileNotFoundError messages.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist (expected {what}: a .parquet file or a directory of them)")
    if p.is_file():
        return [p]
    files = sorted((f for f in p.glob("*.parquet") if f.is_file()), key=lambda f: f.name)
    if not files:
        raise FileNotFoundError(f"{p} is a directory without *.parquet files (expected {what})")
    return files


def file_columns(file: Path) -> list[str]:
    """Top-level column names of a parquet file (only its schema is read)."""
    pq = _parquet()
    try:
        return list(pq.read_schema(file).names)
    except Exception as e:  # ArrowInvalid (not parquet), OSError
        raise DataFormatError(f"{file}: not a readable parquet file ({type(e).__name__}: {e})") from e


def missing_column(file: Path, column: str, present: Sequence[str], hint: str = "") -> DataFormatError:
    cols = ", ".join(repr(c) for c in present) or "none"
    return DataFormatError(f"{file}: missing column {column!r}{hint} (columns present: {cols})")


def require_columns(file: Path, present: Sequence[str], required: Sequence[str], hint: str = "") -> None:
    for col in required:
        if col not in present:
            raise missing_column(file, col, present, hint)


def iter_rows(file: Path, columns: Sequence[str], batch_size: int = 64) -> Iterator[tuple[int, dict]]:
    """``(row index within the file, {column: value})`` for the given columns, read batch by batch
    (so a ``limit`` stops reading early)."""
    pq = _parquet()
    try:
        reader = pq.ParquetFile(file)
        batches = reader.iter_batches(batch_size=batch_size, columns=list(columns))
        row = 0
        for batch in batches:
            for values in batch.to_pylist():
                yield row, values
                row += 1
    except DataFormatError:
        raise
    except Exception as e:
        if type(e).__module__.startswith("pyarrow") or isinstance(e, OSError):
            raise DataFormatError(f"{file}: could not read the parquet data ({type(e).__name__}: {e})") from e
        raise


def parse_json(value, file: Path, row: int, field: str):
    """A nested cell: returned as is when it is already a dict / list (a parquet struct or list),
    parsed when it is a JSON string (a Python-literal string is accepted as a fallback)."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        try:  # some releases wrote Python reprs ('single quotes') instead of JSON
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            parsed = None
        if isinstance(parsed, (dict, list)):
            return parsed
        raise DataFormatError(f"{location(file, row, field)}: not valid JSON ({e})") from None


def decode_image(cell, file: Path, row: int, field: str):
    """A PIL RGB image from an image cell: ``{"bytes", "path"}`` struct, raw bytes, or a path string."""
    where = location(file, row, field)
    data = path = None
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
        if not data and not path:
            raise DataFormatError(f"{where}: image struct has neither 'bytes' nor 'path'")
    elif isinstance(cell, (bytes, bytearray, memoryview)):
        data = cell
    elif isinstance(cell, str):
        path = cell
    elif cell is None:
        raise DataFormatError(f"{where}: the image is null")
    else:
        raise DataFormatError(f"{where}: expected an image struct {{bytes, path}} or raw bytes, "
                              f"got {type(cell).__name__}")
    if not data:
        resolved = Path(path).expanduser()
        if not resolved.is_absolute():
            resolved = file.parent / resolved
        try:
            data = resolved.read_bytes()
        except OSError as e:
            raise DataFormatError(f"{where}: image path {path!r} could not be read ({resolved}: "
                                  f"{e.strerror or e})") from e
    Image = _pil_image()
    try:
        img = Image.open(io.BytesIO(bytes(data)))
        img.load()
        return img.convert("RGB")
    except Exception as e:  # UnidentifiedImageError, truncated data, decompression bomb, ...
        raise DataFormatError(f"{where}: the image could not be decoded ({type(e).__name__}: {e})") from e


def key_of(d: dict, *names: str):
    """The value of the first of ``names`` present in ``d``, keys matched case-insensitively and
    ignoring underscores / spaces; None when absent."""
    norm = {str(k).lower().replace("_", "").replace(" ", ""): k for k in d}
    for name in names:
        k = norm.get(name.lower().replace("_", "").replace(" ", ""))
        if k is not None:
            return d[k]
    return None


def row_id(row: dict, file: Path, index: int, *columns: str):
    """The row's id column value, else ``"<file name>:<row>"``."""
    for col in columns:
        value = row.get(col)
        if value is not None:
            return value
    return f"{file.name}:{index}"
