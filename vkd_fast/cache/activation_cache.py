"""``ActivationCache``: the facade over the stores, with all validation (done here, once)."""

from __future__ import annotations

import operator
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .. import _ext
from ..utils.validate import check_choice, check_positive_int
from .fileformat import load_cache, save_cache
from .staging import PrefetchHandle, _Staging
from .store import _DTYPE_NAMES, _TorchStore

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
BACKENDS = ("auto", "cext", "torch")


def _keys_list(keys, name: str = "keys") -> list[int]:
    if isinstance(keys, torch.Tensor):
        if keys.dtype.is_floating_point or keys.dtype.is_complex or keys.dtype == torch.bool or keys.dim() > 1:
            raise TypeError(f"{name} must be integers (an int, a sequence of ints or a 1-D integer tensor), "
                            f"got a {keys.dtype} tensor of shape {tuple(keys.shape)}")
        return keys.reshape(-1).tolist()
    if isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__"):
        raise TypeError(f"{name} must be a sequence of ints or a 1-D integer tensor, got {type(keys).__name__}")
    return [_key(k, f"{name}[{i}]") for i, k in enumerate(keys)]


def _key(key, name: str = "key") -> int:
    if isinstance(key, bool) or (isinstance(key, torch.Tensor) and (key.dim() != 0 or key.dtype.is_floating_point)):
        raise TypeError(f"{name} must be an int, got {key!r}")
    try:
        k = operator.index(key)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(key).__name__} {key!r}") from None
    if not _INT64_MIN <= k <= _INT64_MAX:
        raise ValueError(f"{name} must fit in int64, got {k}")
    return k


class ActivationCache:
    """Teacher features per integer key, in host memory; see the module docstring.

    Args:
        dtype: storage dtype (float32, bfloat16 or float16); ``put`` expects tensors of this dtype.
        capacity_bytes: bytes of memory slabs the cache may hold (``None``: no limit). Beyond it, new
            slabs spill to ``spill_dir``, or ``put`` fails with a message saying how much was asked.
        spill_dir: folder for memory-mapped spill files (created if missing; files are unlinked as
            soon as they are mapped, so nothing is left behind).
        backend: ``"auto"`` (the C++ store when the extension loads, else pure torch), ``"cext"``
            (raise if the extension is unavailable) or ``"torch"``.
        pin_memory: pin the slabs; ``None`` pins exactly when CUDA is available.
        slab_bytes: size of a slab (an entry larger than that gets a slab of its own).
    """

    def __init__(self, dtype: torch.dtype = torch.bfloat16, capacity_bytes: int | None = None,
                 spill_dir: str | os.PathLike | None = None, backend: str = "auto", *,
                 pin_memory: bool | None = None, slab_bytes: int = 64 << 20):
        if dtype not in _DTYPE_NAMES:
            raise TypeError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
        if capacity_bytes is not None:
            if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int):
                raise TypeError(f"capacity_bytes must be an int or None, got {type(capacity_bytes).__name__}")
            if capacity_bytes < 0:
                raise ValueError(f"capacity_bytes must be >= 0 or None, got {capacity_bytes}")
        check_positive_int("slab_bytes", slab_bytes)
        check_choice("backend", backend, BACKENDS)
        cuda = torch.cuda.is_available()
        if pin_memory and not cuda:
            raise ValueError("pin_memory=True needs a CUDA device (pinned host memory is a CUDA facility)")
        self._pinned = cuda if pin_memory is None else bool(pin_memory)
        if spill_dir is not None:
            spill_dir = Path(spill_dir)
            spill_dir.mkdir(parents=True, exist_ok=True)
        self._spill_dir = spill_dir
        self._capacity = capacity_bytes
        self._dtype = dtype
        if backend in ("auto", "cext"):
            ext = _ext.load()
            if ext is None and backend == "cext":
                raise RuntimeError(f"backend 'cext' needs the vkd_fast C++ extension, which is unavailable: "
                                   f"{_ext.CEXT_ERROR}")
            backend = "cext" if ext is not None else "torch"
        store_cls = _ext.load().CacheStore if backend == "cext" else _TorchStore
        self._store = store_cls(dtype, -1 if capacity_bytes is None else capacity_bytes,
                                "" if spill_dir is None else str(spill_dir), self._pinned, slab_bytes)
        self._backend = backend
        self._staging: dict[torch.device, _Staging] = {}
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # ------------------------------------------------------------------ properties and lookups
    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def dim(self) -> int | None:
        """Feature size D (``None`` until the first put)."""
        d = self._store.dim()
        return None if d < 0 else d

    @property
    def pinned(self) -> bool:
        """Whether the slabs (and the CUDA staging buffers) are pinned host memory."""
        return self._pinned

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def capacity_bytes(self) -> int | None:
        return self._capacity

    @property
    def spill_dir(self) -> Path | None:
        return self._spill_dir

    def __len__(self) -> int:
        return self._store.stats()[0]

    def __contains__(self, key) -> bool:
        try:
            return self._store.contains(_key(key))
        except (TypeError, ValueError):
            return False

    def keys(self) -> list[int]:
        """All keys, sorted."""
        return sorted(self._store.keys())

    def rows(self, key) -> int:
        """Number of rows stored under ``key`` (``KeyError`` if absent)."""
        return self._store.rows(_key(key))

    def __repr__(self) -> str:
        return (f"ActivationCache(entries={len(self)}, dtype={self._dtype}, dim={self.dim}, backend={self._backend!r}, "
                f"pinned={self._pinned}, capacity_bytes={self._capacity}, spill_dir={self._spill_dir})")

    # ------------------------------------------------------------------ put
    def put(self, key, tensor: torch.Tensor) -> None:
        """Store ``tensor`` ([rows, D], the cache's dtype, any device) under the int ``key``.

        A key already present is overwritten when the row count is the same; otherwise ``put`` fails.
        """
        self.put_batch([key], [tensor])

    def put_batch(self, keys, tensors) -> None:
        """Store several entries at once, all or nothing (one copy pass, in parallel)."""
        keys = _keys_list(keys)
        tensors = list(tensors)
        if len(keys) != len(tensors):
            raise ValueError(f"put_batch got {len(keys)} keys but {len(tensors)} tensors")
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"keys must be unique within one put_batch, key {dup} repeats")
        dim = self.dim
        prepared = []
        for key, t in zip(keys, tensors):
            where = f"tensor for key {key}"
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{where} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 2:
                raise ValueError(f"{where} must be 2-D [rows, D], got shape {tuple(t.shape)}")
            if t.shape[0] == 0 or t.shape[1] == 0:
                raise ValueError(f"{where} is empty (shape {tuple(t.shape)}); every entry needs rows and features")
            if t.dtype != self._dtype:
                raise TypeError(f"{where} must have the cache's dtype {self._dtype}, got {t.dtype} "
                                f"(convert with .to({self._dtype}))")
            if dim is None:
                dim = t.shape[1]
            elif t.shape[1] != dim:
                raise ValueError(f"{where} must have D={dim} features like the cache, got D={t.shape[1]}")
            if self._store.contains(key) and self._store.rows(key) != t.shape[0]:
                raise ValueError(f"key {key} holds {self._store.rows(key)} rows; it can be overwritten only with "
                                 f"the same number, got {t.shape[0]}")
            prepared.append(t.detach().to("cpu").contiguous())
        if keys:
            self._store.put_batch(keys, prepared)

    # ------------------------------------------------------------------ get / prefetch
    def _device(self, device) -> torch.device | None:
        if device is None:
            return None
        device = torch.device(device)
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be None, a CPU or a CUDA device, got {device}")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def _gather(self, keys: list[int], device: torch.device | None):
        """Runs in the caller's thread (get) or the prefetch thread: (packed, offsets, event)."""
        if device is None or device.type == "cpu":
            packed, offsets = self._store.gather(keys)
            return packed, offsets, None
        staging = self._staging.setdefault(device, _Staging(self._dtype))
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams.setdefault(device, torch.cuda.Stream(device))
        with staging.lock:
            rows = sum(self._store.rows(k) for k in keys)
            slot = staging.take(rows * max(self._store.dim(), 0))
            host, offsets = self._store.gather(keys, slot[0])
            with torch.cuda.stream(stream):
                packed = host.to(device, non_blocking=True)
                offsets = offsets.to(device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(stream)
            slot[1] = event
        return packed, offsets, event

    def _hand_over(self, packed, offsets, event):
        """Orders the side-stream copy before the consumer's (current) stream."""
        if event is not None:
            consumer = torch.cuda.current_stream(packed.device)
            consumer.wait_event(event)
            packed.record_stream(consumer)
            offsets.record_stream(consumer)
        return packed, offsets

    def get(self, keys, device=None, non_blocking: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of ``keys`` (any order, repeats allowed) packed: ``([sum rows, D], offsets[k + 1])``.

        Entry i is ``packed[offsets[i]:offsets[i + 1]]``. ``device=None`` or CPU returns a new host
        buffer. A CUDA device gets a non-blocking copy on a side stream that the current stream waits
        for (``non_blocking=False`` also waits on the host). Unknown keys raise ``KeyError``.
        """
        keys, device = _keys_list(keys), self._device(device)
        packed, offsets, event = self._gather(keys, device)
        packed, offsets = self._hand_over(packed, offsets, event)
        if event is not None and not non_blocking:
            event.synchronize()
        return packed, offsets

    def prefetch(self, keys, device=None) -> PrefetchHandle:
        """Start ``get(keys, device)`` in the background and return at once; ``handle.wait()`` returns
        its result (or raises its error)."""
        keys, device = _keys_list(keys), self._device(device)
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vkd_fast-cache")
            future = self._executor.submit(self._gather, keys, device)
        return PrefetchHandle(future, self)

    def close(self) -> None:
        """Stops the prefetch thread (the cache stays usable; a later prefetch starts a new one)."""
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict:
        """Entries, bytes held, slab bytes by kind, and gather counts with their achieved GB/s."""
        entries, nbytes, mem, spill, mapped, gathers, gathered, ns = self._store.stats()
        return {
            "entries": entries, "bytes": nbytes, "memory_slab_bytes": mem, "spill_slab_bytes": spill,
            "mapped_bytes": mapped, "gathers": gathers, "gathered_bytes": gathered,
            "gather_seconds": ns / 1e9, "gather_GBps": gathered / ns if ns else 0.0,
        }

    # ------------------------------------------------------------------ save / load (fileformat.py)
    def save(self, path: str | os.PathLike) -> None:
        """Write the cache to ``path`` atomically (a temporary file in the same folder, fsynced, then
        renamed): an interrupted save leaves any previous file intact. The format is described in
        :func:`vkd_fast.cache.fileformat.save_cache`."""
        save_cache(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False, backend: str = "auto", *,
             capacity_bytes: int | None = None, spill_dir: str | os.PathLike | None = None,
             pin_memory: bool | None = None) -> ActivationCache:
        """Read a file written by :meth:`save`. Every entry's checksum is verified before the cache is
        returned: a truncated or corrupted file raises :class:`CacheFormatError`, never wrong data.

        ``mmap=True`` serves entries straight from a read-only (private) mapping of the file instead
        of copying them into slabs: little extra memory and the OS page cache shared between
        processes; verification still reads the file once. Mapped entries are not pinned.
        """
        return load_cache(cls, path, mmap, backend, capacity_bytes=capacity_bytes, spill_dir=spill_dir,
                          pin_memory=pin_memory)
