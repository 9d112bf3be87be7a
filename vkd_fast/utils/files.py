"""Atomic file writes: readers see the old file or the new one, never a part; the clean-up of
temporary files that a killed writer left behind; a file's SHA-256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            h.update(chunk)
    return h.hexdigest()


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


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder, prefix: str) -> list[Path]:
    """Remove the files and folders in ``folder`` named ``prefix<pid>...`` whose writer process is gone
    (what a killed atomic write left); returns what was removed."""
    import shutil

    removed = []
    for p in Path(folder).glob(prefix + "*"):
        pid = p.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def check_output_file(name: str, path) -> None:
    """Refuse, before any work, an output file path that cannot be written: a folder, or one below a
    file. Missing folders are fine (they are created when the file is written)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{name} {path} is a folder; give a file name (e.g. {p / 'out.json'})")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name} {path}: {parent} is a file, not a folder")
            break


def read_json_file(name: str, path) -> dict:
    """A JSON object from the file ``path`` given as option ``name``, or a one-line error saying what is
    wrong with it (missing, a folder, not JSON, not an object)."""
    import json

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{name} {p}: " + ("is a directory, expected a JSON file" if p.is_dir()
                                                    else "does not exist"))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name} {p}: not a JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name} {p}: expected a JSON object, got {type(data).__name__}")
    return data
