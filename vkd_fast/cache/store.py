"""The pure-torch store of the activation cache (used when the C++ ``CacheStore`` is unavailable) and
what both stores share: the dtypes, the 64-byte alignment, zero-copy byte views."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import torch

_ALIGN = 64
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


def _round_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _memview(t: torch.Tensor) -> memoryview:
    """Zero-copy bytes of a contiguous CPU tensor (no numpy needed)."""
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_ubyte * n).from_address(t.data_ptr())).cast("B")


def _capacity_error(need: int, capacity: int, used: int) -> RuntimeError:
    return RuntimeError(
        f"ActivationCache: storing {need} more bytes needs more than capacity_bytes={capacity} "
        f"({used} bytes of memory slabs in use, {capacity - used} free); pass spill_dir=... to spill "
        "to disk, or a larger capacity_bytes"
    )


class _TorchStore:
    """Pure-torch store with the behaviour of the C++ ``CacheStore`` (used when it is unavailable)."""

    def __init__(self, dtype, capacity_bytes: int, spill_dir: str, pinned: bool, slab_bytes: int):
        self._dtype, self._elt = dtype, torch.empty((), dtype=dtype).element_size()
        self._capacity, self._spill_dir, self._pinned, self._slab_bytes = capacity_bytes, spill_dir, pinned, slab_bytes
        self._dim = -1
        self._slabs: list[list] = []  # [uint8 tensor, used bytes, kind] kind: 0 memory, 1 spill, 2 adopted
        self._cur = {0: -1, 1: -1}
        self._mem_bytes = self._spill_bytes = self._mapped_bytes = self._entry_bytes = 0
        self._spill_files = 0
        self._entries: dict[int, tuple[int, int, int]] = {}  # key -> (slab, byte offset, rows)
        self._lock = threading.RLock()
        self._gathers = self._gathered_bytes = self._gather_ns = 0

    def _new_slab(self, need: int) -> int:
        room = self._capacity - self._mem_bytes if self._capacity >= 0 else 1 << 62
        if room >= need:
            size = min(room, max(need, self._slab_bytes))
            data, kind = torch.empty(size, dtype=torch.uint8, pin_memory=self._pinned), 0
            self._mem_bytes += size
        else:
            if not self._spill_dir:
                raise _capacity_error(need, self._capacity, self._mem_bytes)
            size = max(need, self._slab_bytes)
            path = os.path.join(self._spill_dir, f"vkd_fast-cache-{os.getpid()}-{id(self)}-{self._spill_files}.slab")
            self._spill_files += 1
            data, kind = torch.from_file(path, shared=True, size=size, dtype=torch.uint8), 1
            os.unlink(path)  # the mapping keeps the data; no file is left behind
            self._spill_bytes += size
        self._slabs.append([data, 0, kind])
        return len(self._slabs) - 1

    def _reserve(self, nbytes: int, rows: int) -> tuple[int, int, int]:
        need = _round_up(max(nbytes, 1), _ALIGN)
        for kind in (0, 1):
            cur = self._cur[kind]
            if cur >= 0 and self._slabs[cur][0].numel() - self._slabs[cur][1] >= need:
                off = self._slabs[cur][1]
                self._slabs[cur][1] += need
                return cur, off, rows
        idx = self._new_slab(need)
        self._cur[self._slabs[idx][2]] = idx
        self._slabs[idx][1] = need
        return idx, 0, rows

    def put_batch(self, keys, tensors) -> None:
        with self._lock:
            dim = self._dim if self._dim >= 0 else (tensors[0].shape[1] if tensors else -1)
            saved = ([s[1] for s in self._slabs], len(self._slabs), dict(self._cur), self._mem_bytes, self._spill_bytes)
            planned = []
            try:
                for key, t in zip(keys, tensors):
                    rows = t.shape[0]
                    old = self._entries.get(key)
                    if old is not None:
                        if old[2] != rows:
                            raise RuntimeError(
                                f"ActivationCache: key {key} holds {old[2]} rows; it can be overwritten only with "
                                f"the same number, got {rows}"
                            )
                        planned.append(old)
                    else:
                        planned.append(self._reserve(rows * dim * self._elt, rows))
            except BaseException:
                used, n, cur, self._mem_bytes, self._spill_bytes = saved
                del self._slabs[n:]
                for s, u in zip(self._slabs, used):
                    s[1] = u
                self._cur = cur
                raise
            for key, t, e in zip(keys, tensors, planned):
                nbytes = e[2] * dim * self._elt
                self._slabs[e[0]][0][e[1] : e[1] + nbytes].copy_(t.view(-1).view(torch.uint8))
                if key not in self._entries:
                    self._entry_bytes += nbytes
                self._entries[key] = e
            self._dim = dim

    def _view(self, e) -> torch.Tensor:
        slab, off, rows = e
        nbytes = rows * self._dim * self._elt
        return self._slabs[slab][0][off : off + nbytes].view(self._dtype).view(rows, self._dim)

    def _entry(self, key):
        try:
            return self._entries[key]
        except KeyError:
            raise KeyError(f"ActivationCache has no key {key}") from None

    def gather(self, keys, out=None):
        t0 = time.perf_counter_ns()
        with self._lock:
            dim = max(self._dim, 0)
            views = [self._view(self._entry(k)) for k in keys]
            offsets = torch.zeros(len(keys) + 1, dtype=torch.int64)
            if views:
                offsets[1:] = torch.tensor([v.shape[0] for v in views]).cumsum(0)
            total = int(offsets[-1])
            if out is not None:
                packed = out.view(-1)[: total * dim].view(total, dim)
            else:
                packed = torch.empty(total, dim, dtype=self._dtype)
            if views:
                torch.cat(views, out=packed)
            self._gathers += 1
            self._gathered_bytes += total * dim * self._elt
            self._gather_ns += time.perf_counter_ns() - t0
            return packed, offsets

    def adopt(self, slab, keys, byte_offsets, rows, dim) -> None:
        with self._lock:
            self._slabs.append([slab, slab.numel(), 2])
            self._mapped_bytes += slab.numel()
            idx = len(self._slabs) - 1
            for k, o, r in zip(keys, byte_offsets, rows):
                self._entries[k] = (idx, o, r)
                self._entry_bytes += r * dim * self._elt
            self._dim = dim

    def view(self, key):
        with self._lock:
            return self._view(self._entry(key))

    def contains(self, key) -> bool:
        return key in self._entries

    def rows(self, key) -> int:
        return self._entry(key)[2]

    def keys(self) -> list[int]:
        with self._lock:
            return list(self._entries)

    def dim(self) -> int:
        return self._dim

    def stats(self) -> list[int]:
        with self._lock:
            return [len(self._entries), self._entry_bytes, self._mem_bytes, self._spill_bytes, self._mapped_bytes,
                    self._gathers, self._gathered_bytes, self._gather_ns]


