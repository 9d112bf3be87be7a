"""Atomic file writes: readers see the old file or the new one, never a part."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path, data: bytes | str) -> None:
    """Write a file under a temporary name in the same folder, then rename it into place (the folder
    is created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
