"""The activation cache's file format (version 1): a checksummed, 64-byte aligned, little-endian file
written atomically and verified completely before any entry is served (see :func:`save_cache`)."""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from pathlib import Path

import torch

from ..utils.files import remove_stale
from .store import _ALIGN, _DTYPE_NAMES, _DTYPES, _memview, _round_up

FORMAT_VERSION = 1
_MAGIC = b"VKDCACHE"
_PREFIX = struct.Struct("<8sIIQI")  # magic, version, reserved, header length, header crc32
_PREFIX_BYTES = 32


class CacheFormatError(ValueError):
    """A cache file is truncated, corrupted or of an unknown format/version."""


def save_cache(cache, path: str | os.PathLike) -> None:
    """Write the cache to ``path`` atomically (a temporary file in the same folder, fsynced, then
    renamed): an interrupted save leaves any previous file intact.

    Format (version 1), little-endian: ``b"VKDCACHE"``, u32 version, u32 reserved, u64 header
    length, u32 CRC-32 of the header, zero padding to 32 bytes; the header, UTF-8 JSON with
    ``format``, ``version``, ``dtype``, ``dim``, and per entry (sorted by key) ``keys``, ``rows``,
    ``offsets`` (bytes from the data start), ``crc32``, plus ``data_bytes``; zero padding to a
    multiple of 64; then the raw row-major entries, each starting at a multiple of 64 bytes.
    """
    path = Path(path)
    keys = cache.keys()
    views = [cache._store.view(k) for k in keys]
    offsets, pos = [], 0
    for v in views:
        offsets.append(pos)
        pos = _round_up(pos + v.numel() * v.element_size(), _ALIGN)
    header = {
        "format": "vkd_fast.ActivationCache", "version": FORMAT_VERSION, "dtype": _DTYPE_NAMES[cache.dtype],
        "dim": cache.dim or 0, "keys": keys, "rows": [v.shape[0] for v in views], "offsets": offsets,
        "crc32": [zlib.crc32(_memview(v)) for v in views], "data_bytes": pos,
    }
    blob = json.dumps(header, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(_MAGIC, FORMAT_VERSION, 0, len(blob), zlib.crc32(blob)).ljust(_PREFIX_BYTES, b"\0")
    data_start = _round_up(_PREFIX_BYTES + len(blob), _ALIGN)
    remove_stale(path.parent, f".{path.name}.tmp-")  # what a killed save of this path left
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(prefix)
            f.write(blob)
            f.write(b"\0" * (data_start - _PREFIX_BYTES - len(blob)))
            for v, off, nxt in zip(views, offsets, offsets[1:] + [pos]):
                mv = _memview(v)
                f.write(mv)
                f.write(b"\0" * (nxt - off - len(mv)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass

def load_cache(cls, path: str | os.PathLike, mmap: bool = False, backend: str = "auto", *,
               capacity_bytes: int | None = None, spill_dir: str | os.PathLike | None = None,
               pin_memory: bool | None = None):
    """Read a file written by :meth:`save`. Every entry's checksum is verified before the cache is
    returned: a truncated or corrupted file raises :class:`CacheFormatError`, never wrong data.

    ``mmap=True`` serves entries straight from a read-only (private) mapping of the file instead
    of copying them into slabs: little extra memory and the OS page cache shared between
    processes; verification still reads the file once. Mapped entries are not pinned.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(_PREFIX_BYTES)
        if len(raw) < _PREFIX_BYTES:
            raise CacheFormatError(f"{path}: truncated ({size} bytes; not even the {_PREFIX_BYTES}-byte prefix)")
        magic, version, _reserved, header_len, header_crc = _PREFIX.unpack(raw[: _PREFIX.size])
        if magic != _MAGIC:
            raise CacheFormatError(f"{path}: not a vkd_fast activation cache file (magic {magic!r})")
        if version != FORMAT_VERSION:
            raise CacheFormatError(
                f"{path}: format version {version}, this vkd_fast reads version {FORMAT_VERSION}")
        if _PREFIX_BYTES + header_len > size:  # checked before anything of that length is allocated
            raise CacheFormatError(f"{path}: truncated or corrupted (the header length {header_len} runs past the "
                                   f"file's {size} bytes)")
        blob = f.read(header_len)
    if len(blob) < header_len:
        raise CacheFormatError(f"{path}: truncated inside the header ({size} bytes)")
    if zlib.crc32(blob) != header_crc:
        raise CacheFormatError(f"{path}: corrupted header (checksum mismatch)")
    try:
        h = json.loads(blob)
        dtype, dim = _DTYPES[h["dtype"]], int(h["dim"])
        keys, rows, offsets, crcs = h["keys"], h["rows"], h["offsets"], h["crc32"]
        data_bytes = int(h["data_bytes"])
        ok = len(keys) == len(rows) == len(offsets) == len(crcs) and all(
            type(x) is int for x in (*keys, *rows, *offsets, *crcs))
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheFormatError(f"{path}: malformed header ({exc})") from None
    if not ok:
        raise CacheFormatError(f"{path}: malformed header (per-entry lists differ in length or hold non-integers)")
    if dim < 0 or data_bytes < 0:
        raise CacheFormatError(f"{path}: malformed header (negative dim or data length)")
    elt = torch.empty((), dtype=dtype).element_size()
    data_start = _round_up(_PREFIX_BYTES + header_len, _ALIGN)
    expected = data_start + data_bytes
    if size < expected:
        raise CacheFormatError(f"{path}: truncated (expected {expected} bytes, the file has {size})")
    if size > expected:
        raise CacheFormatError(f"{path}: corrupted ({size - expected} unexpected bytes after the data)")
    for k, r, o in zip(keys, rows, offsets):
        if r <= 0 or o < 0 or o % _ALIGN or o + r * dim * elt > data_bytes:
            raise CacheFormatError(f"{path}: malformed header (entry {k} lies outside the data)")
    cache = cls(dtype, capacity_bytes, spill_dir, backend, pin_memory=pin_memory)
    if not keys:
        return cache
    mapping = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
    data = mapping[data_start:]
    views = []
    for k, r, o, c in zip(keys, rows, offsets, crcs):
        v = data[o : o + r * dim * elt]
        if zlib.crc32(_memview(v)) != c:
            raise CacheFormatError(f"{path}: corrupted data (checksum mismatch in entry {k})")
        views.append(v.view(dtype).view(r, dim))
    if mmap:
        cache._store.adopt(data, keys, offsets, rows, dim)
    else:
        cache.put_batch(keys, views)
    return cache
