"""``ActivationCache``: teacher features in host memory, served per step.

VKD computes the frozen teacher's visual features once and serves them from host memory, so no
teacher model sits on the accelerator. The cache holds, per integer key (an image), a
``[rows, D]`` matrix (rows may differ per key: dynamic-resolution models give different numbers of
visual tokens), in one dtype.

Storage is a slab arena: large 64-byte aligned slabs (pinned on CUDA machines, through torch's host
allocator), entries bump-allocated inside them. Beyond ``capacity_bytes`` new slabs are
memory-mapped files in ``spill_dir``. ``get`` gathers the rows of any keys (any order, repeats
allowed) into one contiguous buffer and, for a CUDA device, copies it over from a pinned,
double-buffered staging buffer on a side stream, ordered before the caller's stream. ``prefetch``
does the same in a background thread. ``save``/``load`` use a versioned, checksummed file format
(see :func:`ActivationCache.save`).

Two stores implement the arena: the C++ ``vkd_fast._C.CacheStore`` (copies without the GIL, over
ATen's thread pool) and a pure-torch fallback with the same behaviour. Validation happens here, once.
"""

from __future__ import annotations

import ctypes
import json
import operator
import os
import struct
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from . import _ext
from .ops import check_choice, check_positive_int

__all__ = ["ActivationCache", "CacheFormatError", "PrefetchHandle"]

FORMAT_VERSION = 1
_MAGIC = b"VKDCACHE"
_PREFIX = struct.Struct("<8sIIQI")  # magic, version, reserved, header length, header crc32
_PREFIX_BYTES = 32
_ALIGN = 64
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
BACKENDS = ("auto", "cext", "torch")


class CacheFormatError(ValueError):
    """A cache file is truncated, corrupted or of an unknown format/version."""


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


class PrefetchHandle:
    """Returned by :meth:`ActivationCache.prefetch`; :meth:`wait` returns what ``get`` would."""

    def __init__(self, future: Future, cache: ActivationCache):
        self._future, self._cache = future, cache

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        packed, offsets, event = self._future.result(timeout)
        return self._cache._hand_over(packed, offsets, event)


class _Staging:
    """Two pinned host buffers per CUDA device, used in turn; a buffer is refilled only after the
    copy that last read it has finished (its event)."""

    def __init__(self, dtype, pin: bool = True):
        self.dtype, self.pin = dtype, pin
        self.slots = [[None, None], [None, None]]  # [buffer, event]
        self.turn = 0
        self.lock = threading.Lock()

    def take(self, numel: int):
        slot = self.slots[self.turn]
        self.turn ^= 1
        if slot[1] is not None:
            slot[1].synchronize()
        if slot[0] is None or slot[0].numel() < numel:
            slot[0] = torch.empty(max(numel, 1), dtype=self.dtype, pin_memory=self.pin)
        return slot


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

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike) -> None:
        """Write the cache to ``path`` atomically (a temporary file in the same folder, fsynced, then
        renamed): an interrupted save leaves any previous file intact.

        Format (version 1), little-endian: ``b"VKDCACHE"``, u32 version, u32 reserved, u64 header
        length, u32 CRC-32 of the header, zero padding to 32 bytes; the header, UTF-8 JSON with
        ``format``, ``version``, ``dtype``, ``dim``, and per entry (sorted by key) ``keys``, ``rows``,
        ``offsets`` (bytes from the data start), ``crc32``, plus ``data_bytes``; zero padding to a
        multiple of 64; then the raw row-major entries, each starting at a multiple of 64 bytes.
        """
        path = Path(path)
        keys = self.keys()
        views = [self._store.view(k) for k in keys]
        offsets, pos = [], 0
        for v in views:
            offsets.append(pos)
            pos = _round_up(pos + v.numel() * v.element_size(), _ALIGN)
        header = {
            "format": "vkd_fast.ActivationCache", "version": FORMAT_VERSION, "dtype": _DTYPE_NAMES[self._dtype],
            "dim": self.dim or 0, "keys": keys, "rows": [v.shape[0] for v in views], "offsets": offsets,
            "crc32": [zlib.crc32(_memview(v)) for v in views], "data_bytes": pos,
        }
        blob = json.dumps(header, separators=(",", ":")).encode()
        prefix = _PREFIX.pack(_MAGIC, FORMAT_VERSION, 0, len(blob), zlib.crc32(blob)).ljust(_PREFIX_BYTES, b"\0")
        data_start = _round_up(_PREFIX_BYTES + len(blob), _ALIGN)
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
