"""ActivationCache: both stores (C++ and pure torch) against plain tensors, and against each other."""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

import vkd_fast as vf
from vkd_fast.cache import ActivationCache, CacheFormatError
from vkd_fast.cache.staging import _Staging

BACKENDS = ["cext", "torch"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
_BITS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def bits(t):
    return t.contiguous().view(_BITS[t.dtype])


def entry(key, rows, dim, dtype):
    """Deterministic content per key, with special values so bit-exactness is really tested."""
    g = torch.Generator().manual_seed(key)
    t = (torch.randn(rows, dim, generator=g) * 100).to(dtype)
    flat = t.view(-1)
    flat[0] = float("nan")
    flat[-1] = -0.0
    if flat.numel() > 2:
        flat[1] = float("inf")
    return t


def fill(cache, n=30, dim=40, dtype=torch.bfloat16):
    data = {k: entry(k, 1 + (k * 7) % 13, dim, dtype) for k in range(n)}
    cache.put_batch(list(data), list(data.values()))
    return data


def check_get(cache, data, keys):
    packed, offsets = cache.get(keys)
    assert offsets.tolist()[0] == 0 and len(offsets) == len(keys) + 1
    want = torch.cat([data[k] for k in keys]) if keys else packed[:0]
    assert torch.equal(bits(packed), bits(want))
    for i, k in enumerate(keys):
        assert torch.equal(bits(packed[offsets[i] : offsets[i + 1]]), bits(data[k]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_is_bit_exact_with_variable_lengths(backend, dtype):
    cache = ActivationCache(dtype, backend=backend, slab_bytes=4096)  # many slabs, entries larger than one
    data = fill(cache, dtype=dtype)
    big = entry(99, 50, 40, dtype)  # 50*40*4 = 8000 bytes > slab_bytes: a slab of its own
    cache.put(99, big)
    data[99] = big
    assert cache.backend == backend and cache.dtype == dtype and cache.dim == 40 and len(cache) == 31
    assert cache.keys() == sorted(data) and all(cache.rows(k) == v.shape[0] for k, v in data.items())
    check_get(cache, data, list(data))
    assert cache.pinned is False  # no CUDA here


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_gather_orders_with_repeats(backend):
    cache = ActivationCache(torch.float32, backend=backend)
    data = fill(cache, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    for n in (1, 5, 64):
        keys = torch.randint(0, 30, (n,), generator=g).tolist()
        check_get(cache, data, keys)
    check_get(cache, data, [])
    packed, offsets = cache.get(torch.tensor([4, 4, 2]))  # keys as a tensor
    assert torch.equal(bits(packed), bits(torch.cat([data[4], data[4], data[2]])))
    packed, _ = cache.get([3], device="cpu")
    assert torch.equal(bits(packed), bits(data[3]))
    stats = cache.stats()
    assert stats["gathers"] == 6 and stats["gathered_bytes"] > 0 and stats["gather_GBps"] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_prefetch_returns_what_get_returns_and_raises_at_wait(backend):
    cache = ActivationCache(torch.float16, backend=backend)
    data = fill(cache, dtype=torch.float16)
    handles = [cache.prefetch([k, (k + 3) % 30]) for k in range(10)]
    for k, h in enumerate(handles):
        packed, offsets = h.wait(timeout=60)
        assert torch.equal(bits(packed), bits(torch.cat([data[k], data[(k + 3) % 30]])))
        assert h.done()
    bad = cache.prefetch([1, 12345])
    with pytest.raises(KeyError, match="12345"):
        bad.wait(timeout=60)
    cache.close()
    assert torch.equal(bits(cache.prefetch([2]).wait()[0]), bits(data[2]))  # usable after close
    cache.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_overwrite_same_rows_in_place(backend):
    cache = ActivationCache(torch.float32, backend=backend)
    data = fill(cache, dtype=torch.float32)
    before = cache.stats()
    new = torch.full_like(data[5], 7.0)
    cache.put(5, new)
    data[5] = new
    check_get(cache, data, [5, 4, 6])
    after = cache.stats()
    assert after["entries"] == before["entries"] and after["bytes"] == before["bytes"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_is_rejected_and_the_cache_stays_consistent(backend):
    cache = ActivationCache(torch.bfloat16, backend=backend)
    data = fill(cache)
    snapshot = (cache.stats(), cache.keys())
    cases = [
        (lambda: cache.get([1, 777]), KeyError, "777"),
        (lambda: cache.rows(555), KeyError, "555"),
        (lambda: cache.put(100, torch.zeros(3, 41, dtype=torch.bfloat16)), ValueError, "must have D=40 features like the cache, got D=41"),
        (lambda: cache.put(100, torch.zeros(3, 40)), TypeError, r"must have the cache's dtype torch.bfloat16, got torch.float32 \(convert with"),
        (lambda: cache.put(1.5, torch.zeros(3, 40, dtype=torch.bfloat16)), TypeError, r"keys\[0\] must be an int, got float 1.5"),
        (lambda: cache.put(True, torch.zeros(3, 40, dtype=torch.bfloat16)), TypeError, r"must be an int, got True"),
        (lambda: cache.get(["a"]), TypeError, r"keys\[0\] must be an int, got str 'a'"),
        (lambda: cache.get(torch.tensor([1.0])), TypeError, "keys must be integers"),
        (lambda: cache.get(3), TypeError, "keys must be a sequence of ints"),
        (lambda: cache.put(2**63, torch.zeros(1, 40, dtype=torch.bfloat16)), ValueError, "must fit in int64"),
        (lambda: cache.put(100, torch.zeros(0, 40, dtype=torch.bfloat16)), ValueError, r"is empty \(shape \(0, 40\)\)"),
        (lambda: cache.put(100, torch.zeros(40, dtype=torch.bfloat16)), ValueError, "must be 2-D"),
        (lambda: cache.put(100, [[1.0]]), TypeError, "must be a torch.Tensor, got list"),
        (lambda: cache.put(3, torch.zeros(data[3].shape[0] + 1, 40, dtype=torch.bfloat16)), ValueError, "can be overwritten only with the same number"),
        (lambda: cache.put_batch([200, 201], [torch.zeros(2, 40, dtype=torch.bfloat16)]), ValueError, "2 keys but 1 tensors"),
        (lambda: cache.put_batch([200, 200], [torch.zeros(2, 40, dtype=torch.bfloat16)] * 2), ValueError, "key 200 repeats"),
        # one bad tensor in a batch: nothing of the batch is stored
        (lambda: cache.put_batch([300, 301], [torch.zeros(2, 40, dtype=torch.bfloat16), torch.zeros(2, 39, dtype=torch.bfloat16)]), ValueError, "key 301"),
        (lambda: cache.get([1], device="meta"), ValueError, "device must be None, a CPU or a CUDA device"),
    ]
    for fn, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fn()
        assert (cache.stats(), cache.keys()) == snapshot
    assert 300 not in cache and 1 in cache and "x" not in cache
    check_get(cache, data, list(data))


@pytest.mark.parametrize("backend", BACKENDS)
def test_constructor_errors(backend):
    with pytest.raises(ValueError, match="capacity_bytes must be >= 0 or None, got -1"):
        ActivationCache(capacity_bytes=-1, backend=backend)
    with pytest.raises(TypeError, match="capacity_bytes must be an int"):
        ActivationCache(capacity_bytes=1.5, backend=backend)
    with pytest.raises(TypeError, match="dtype must be"):
        ActivationCache(torch.int32, backend=backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        ActivationCache(backend="gpu")
    with pytest.raises(ValueError, match="pin_memory=True needs a CUDA device"):
        ActivationCache(backend=backend, pin_memory=True)


def test_cext_backend_without_extension_raises_with_the_build_error(monkeypatch):
    from vkd_fast import _ext

    monkeypatch.setitem(_ext._state, "loaded", True)
    monkeypatch.setitem(_ext._state, "module", None)
    monkeypatch.setitem(_ext._state, "error", "compiler exploded")
    with pytest.raises(RuntimeError, match="backend 'cext' needs the vkd_fast C\\+\\+ extension.*compiler exploded"):
        ActivationCache(backend="cext")
    assert ActivationCache(backend="auto").backend == "torch"


@pytest.mark.parametrize("backend", BACKENDS)
def test_capacity_without_spill_dir_is_a_clear_error(backend):
    cache = ActivationCache(torch.float32, capacity_bytes=10_000, backend=backend, slab_bytes=4096)
    cache.put(1, torch.ones(10, 100))  # 4000 bytes
    snapshot = cache.stats()
    with pytest.raises(RuntimeError, match=r"storing 8000 more bytes needs more than capacity_bytes=10000 .*spill_dir"):
        cache.put_batch([2, 3], [torch.ones(5, 100), torch.ones(20, 100)])  # the second does not fit
    assert cache.stats() == snapshot and cache.keys() == [1]
    cache.put(2, torch.full((5, 100), 2.0))  # what fits still goes in after the failure
    assert cache.get([2, 1])[0].sum().item() == 2 * 500 + 1000


@pytest.mark.parametrize("backend", BACKENDS)
def test_spill_beyond_capacity(backend, tmp_path):
    spill = tmp_path / "spill"
    cache = ActivationCache(torch.bfloat16, capacity_bytes=8192, spill_dir=spill, backend=backend, slab_bytes=4096)
    data = fill(cache, n=60, dim=64)
    st = cache.stats()
    assert st["memory_slab_bytes"] <= 8192 and st["spill_slab_bytes"] > 0
    assert list(spill.iterdir()) == []  # mapped files are unlinked at once
    check_get(cache, data, list(range(60)) + [0, 59])
    path = tmp_path / "c.vkdc"
    cache.save(path)
    check_get(ActivationCache.load(path, backend=backend), data, list(range(60)))


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_save_load(backend, mmap, tmp_path):
    cache = ActivationCache(torch.float16, backend=backend)
    data = fill(cache, dtype=torch.float16)
    path = tmp_path / "cache.vkdc"
    cache.save(path)
    loaded = ActivationCache.load(path, mmap=mmap, backend=backend)
    assert loaded.keys() == cache.keys() and loaded.dtype == torch.float16 and loaded.dim == 40
    check_get(loaded, data, list(data) + [3, 3])
    st = loaded.stats()
    assert (st["mapped_bytes"] > 0) == mmap and (st["memory_slab_bytes"] > 0) == (not mmap)
    # a loaded cache takes new entries and overwrites (a private mapping: the file is untouched)
    loaded.put(0, torch.zeros_like(data[0]))
    loaded.put(1000, entry(1000, 3, 40, torch.float16))
    check_get(ActivationCache.load(path, backend=backend), data, list(data))
    # an empty cache round-trips too
    ActivationCache(backend=backend).save(tmp_path / "empty")
    empty = ActivationCache.load(tmp_path / "empty", mmap=mmap, backend=backend)
    assert len(empty) == 0 and empty.dim is None


def test_cpp_and_torch_stores_agree_bit_for_bit(tmp_path):
    caches = [ActivationCache(torch.bfloat16, capacity_bytes=20_000, spill_dir=tmp_path / b, backend=b,
                              slab_bytes=3000) for b in BACKENDS]
    for c in caches:
        data = fill(c, n=50, dim=33)
        c.put(7, torch.zeros_like(data[7]))
    keys = torch.randint(0, 50, (80,), generator=torch.Generator().manual_seed(3)).tolist()
    (p0, o0), (p1, o1) = (c.get(keys) for c in caches)
    assert torch.equal(bits(p0), bits(p1)) and torch.equal(o0, o1)
    s0, s1 = (c.stats() for c in caches)
    for k in ("entries", "bytes", "memory_slab_bytes", "spill_slab_bytes", "gathered_bytes"):
        assert s0[k] == s1[k], k
    for b, c in zip(BACKENDS, caches):
        c.save(tmp_path / f"{b}.vkdc")
    assert (tmp_path / "cext.vkdc").read_bytes() == (tmp_path / "torch.vkdc").read_bytes()


def _saved(tmp_path, backend="torch"):
    cache = ActivationCache(torch.float32, backend=backend)
    data = fill(cache, n=8, dim=16, dtype=torch.float32)
    path = tmp_path / "c.vkdc"
    cache.save(path)
    return path, data


@pytest.mark.parametrize("backend", BACKENDS)
def test_corruption_and_truncation_are_detected(backend, tmp_path):
    path, _ = _saved(tmp_path, backend)
    good = path.read_bytes()
    size = len(good)

    def load_bytes(raw):
        p = tmp_path / "bad.vkdc"
        p.write_bytes(raw)
        return ActivationCache.load(p, backend=backend)

    flipped = bytearray(good)
    flipped[size - 100] ^= 0x01  # in the data
    with pytest.raises(CacheFormatError, match="checksum mismatch in entry"):
        load_bytes(bytes(flipped))
    flipped = bytearray(good)
    flipped[40] ^= 0x20  # in the JSON header
    with pytest.raises(CacheFormatError, match="corrupted header"):
        load_bytes(bytes(flipped))
    for cut in (0, 10, 31, 40, size // 2, size - 1):
        with pytest.raises(CacheFormatError, match="truncated"):
            load_bytes(good[:cut])
    with pytest.raises(CacheFormatError, match="unexpected bytes"):
        load_bytes(good + b"\0")
    with pytest.raises(CacheFormatError, match="not a vkd_fast activation cache"):
        load_bytes(b"NOTACACHE" + good[9:])
    bumped = bytearray(good)
    bumped[8] = 99  # version
    with pytest.raises(CacheFormatError, match="format version 99"):
        load_bytes(bytes(bumped))
    assert issubclass(CacheFormatError, ValueError)


def test_every_flipped_prefix_or_header_byte_is_a_cache_format_error(tmp_path):
    """Fuzz: each byte of the prefix and the header flipped (two ways), and random data bytes: the load
    raises CacheFormatError -- never MemoryError, OverflowError or wrong data. Bytes that carry nothing
    (the reserved word, zero padding) may be ignored, and then the contents must be intact."""
    import struct
    import zlib

    path, data = _saved(tmp_path)
    good = path.read_bytes()
    header_len = struct.unpack_from("<Q", good, 16)[0]
    data_start = -(-(32 + header_len) // 64) * 64
    p = tmp_path / "fuzz.vkdc"
    ignored = set(range(12, 16)) | set(range(28, 32)) | set(range(32 + header_len, data_start))
    for pos in range(data_start):
        for mask in (0x01, 0xFF):
            raw = bytearray(good)
            raw[pos] ^= mask
            p.write_bytes(bytes(raw))
            try:
                cache = ActivationCache.load(p)
            except CacheFormatError:
                continue
            assert pos in ignored, f"byte {pos} ^ {mask:#x} went unnoticed"
            check_get(cache, data, list(data))
    g = torch.Generator().manual_seed(0)
    header = json.loads(good[32:32 + header_len])
    ends = [o + r * header["dim"] * 4 for o, r in zip(header["offsets"], header["rows"])]
    inside = [data_start + i for o, e in zip(header["offsets"], ends) for i in range(o, e)]
    for i in torch.randint(len(inside), (64,), generator=g).tolist():
        raw = bytearray(good)
        raw[inside[i]] ^= 0x10
        p.write_bytes(bytes(raw))
        with pytest.raises(CacheFormatError, match="checksum mismatch in entry"):
            ActivationCache.load(p)
    # a header length of 2**63 (a flipped top bit) is refused before anything is allocated
    raw = bytearray(good)
    raw[23] ^= 0x80
    p.write_bytes(bytes(raw))
    with pytest.raises(CacheFormatError, match="header length .* runs past the file"):
        ActivationCache.load(p)
    assert zlib.crc32(good) == zlib.crc32(path.read_bytes())


@pytest.mark.slow
def test_process_killed_during_save_leaves_the_previous_file_intact(tmp_path):
    path, data = _saved(tmp_path)
    before = path.read_bytes()
    code = f"""
import os, sys, time, torch
import vkd_fast.cache.fileformat as F
from vkd_fast import ActivationCache
c = ActivationCache(torch.float32, backend="torch")
for k in range(200):
    c.put(k, torch.full((64, 256), float(k)))
def stall(fd):  # the new file is written but not yet renamed: report, then wait to be killed
    print("writing", flush=True)
    time.sleep(120)
F.os.fsync = stall
c.save({str(path)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    temps = [p for p in tmp_path.iterdir() if p.name.startswith(".c.vkdc.tmp-")]
    assert len(temps) == 1 and temps[0].stat().st_size > len(before)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert path.read_bytes() == before
    check_get(ActivationCache.load(path), data, list(data))
    ActivationCache.load(path).save(path)  # the next save of the same path removes what the killed one left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c.vkdc.tmp-")]
    check_get(ActivationCache.load(path), data, list(data))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_put_get_prefetch_stress(backend):
    cache = ActivationCache(torch.float32, backend=backend, slab_bytes=1 << 14)
    dim = 24

    def content(k):
        return torch.arange(dim, dtype=torch.float32).repeat(1 + k % 7, 1) + k * 1000

    cache.put_batch(list(range(20)), [content(k) for k in range(20)])
    errors, stop = [], threading.Event()
    written = list(range(20))
    lock = threading.Lock()

    def writer(start):
        k = start
        while not stop.is_set():
            cache.put(k, content(k))
            with lock:
                written.append(k)
            k += 2

    def reader(use_prefetch):
        g = torch.Generator().manual_seed(int(use_prefetch))
        while not stop.is_set():
            with lock:
                pool = list(written)
            keys = [pool[i] for i in torch.randint(0, len(pool), (8,), generator=g).tolist()]
            packed, offsets = cache.prefetch(keys).wait(60) if use_prefetch else cache.get(keys)
            for i, k in enumerate(keys):
                if not torch.equal(packed[offsets[i] : offsets[i + 1]], content(k)):
                    errors.append(k)

    def guard(fn, *args):
        try:
            fn(*args)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=a) for a in
               [(writer, 1000), (writer, 1001), (reader, False), (reader, True)]]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(cache) == len(set(written)) > 20
    cache.close()


def test_staging_buffers_alternate_and_grow():
    st = _Staging(torch.float32, pin=False)  # the CUDA path's double buffer, pinning off
    a = st.take(10)
    b = st.take(10)
    assert a is not b and st.take(5) is a and st.take(100) is b and b[0].numel() == 100
    assert a[0].numel() == 10


@pytest.mark.slow
def test_lean_import_still_holds_with_the_cache():
    assert vf.ActivationCache is ActivationCache
