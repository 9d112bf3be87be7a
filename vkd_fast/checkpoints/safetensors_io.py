"""Safetensors checkpoints read and written without holding a model (or a shard) in memory.

* :func:`checkpoint_files` -- a model folder's weight files and which tensor lives in which (the
  ``model.safetensors.index.json`` of a sharded checkpoint, or one ``model.safetensors``); pickle
  checkpoints (``.bin``, ``.pt``) are refused, never unpickled;
* :func:`read_header` -- a file's tensor table, checked against the file's size (a truncated or
  damaged file is an error, not a short read);
* :func:`read_tensors` -- only the named tensors of one file (memory-mapped reads);
* :func:`write_safetensors` -- a file written tensor by tensor, each either new bytes or a byte range
  copied from another file: memory is one copy buffer, never the file.

The format: an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}`` padded with spaces to a multiple of 8, then
the tensors' bytes (offsets relative to the end of the header).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_MAX_HEADER = 100 << 20
_COPY_CHUNK = 64 << 20


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be used: missing, pickle-only, truncated, inconsistent."""


def checkpoint_files(model_dir) -> tuple[list[str], dict[str, str]]:
    """``(weight files in order, {tensor name: file})`` of a local model folder."""
    d = Path(model_dir)
    if not d.is_dir():
        raise CheckpointError(f"{d} is not a folder (a model saved with save_pretrained)")
    index = d / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc})") from None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: its weight_map is empty")
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (d / f).is_file()]
        if missing:
            raise CheckpointError(f"{index} names shard(s) that are not in the folder: {missing[:3]}")
        return files, dict(weight_map)
    if (d / SINGLE_FILE).is_file():
        header, _ = read_header(d / SINGLE_FILE)
        return [SINGLE_FILE], {name: SINGLE_FILE for name in header}
    pickles = sorted(p.name for p in d.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{d} holds only pickle weights ({', '.join(pickles[:3])}); vkd_fast never unpickles "
                              "files: convert them to safetensors first (e.g. load and save_pretrained in a trusted "
                              "environment)")
    raise CheckpointError(f"{d} holds no safetensors weights ({SINGLE_FILE} or {INDEX_FILE})")


def read_header(path) -> tuple[dict, int]:
    """``({tensor name: {"dtype", "shape", "data_offsets"}}, data start)``; checks every entry against
    the file's size. The ``__metadata__`` entry is returned under that key when present."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated ({size} bytes; not even the header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"{path}: damaged or truncated (a header of {n} bytes in a file of {size})")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise CheckpointError(f"{path}: damaged header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged header (not a mapping)")
    data = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = [int(s) for s in entry["shape"]]
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: damaged header entry {name!r}") from None
        numel = 1
        for s in shape:
            numel *= s
        if not 0 <= begin <= end <= data or end - begin != numel * torch.empty((), dtype=dtype).element_size():
            raise CheckpointError(f"{path}: truncated or damaged (tensor {name!r} lies outside the file's "
                                  f"{data} data bytes)")
    return header, 8 + n


def read_tensors(path, names) -> dict[str, torch.Tensor]:
    """The named tensors of one safetensors file (only those are read)."""
    from safetensors import safe_open

    read_header(path)  # a truncated file is reported as such
    with safe_open(str(path), framework="pt") as f:
        return {n: f.get_tensor(n) for n in names}


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous()
    return memoryview(t.view(torch.uint8).reshape(-1).numpy()) if t.numel() else memoryview(b"")


def write_safetensors(path, entries, metadata: dict | None = None) -> int:
    """Write ``entries`` -- ``(name, tensor)`` or ``(name, (source file, data start, header entry))`` for
    bytes copied from another safetensors file -- to ``path``, flushed to disk. Returns bytes written."""
    header, offset = {}, 0
    for name, src in entries:
        if isinstance(src, torch.Tensor):
            dtype, shape = NAMES[src.dtype], list(src.shape)
            nbytes = src.numel() * src.element_size()
        else:
            entry = src[2]
            dtype, shape = entry["dtype"], list(entry["shape"])
            nbytes = entry["data_offsets"][1] - entry["data_offsets"][0]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for _name, src in entries:
            if isinstance(src, torch.Tensor):
                out.write(_tensor_bytes(src))
                continue
            source, start, entry = src
            begin, end = entry["data_offsets"]
            with open(source, "rb") as f:
                f.seek(start + begin)
                left = end - begin
                while left:
                    chunk = f.read(min(left, _COPY_CHUNK))
                    if not chunk:
                        raise CheckpointError(f"{source}: ended early while copying")
                    out.write(chunk)
                    left -= len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return 8 + len(blob) + offset
