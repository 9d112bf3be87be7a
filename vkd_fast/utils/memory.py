"""Wall time and peak memory of a block of code (host RSS via /proc's high-water mark, or CUDA's
peak allocation): used by the evaluation, the demo and the benchmarks."""

from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager

import torch


def _proc_kib(path: str, key: str) -> int | None:
    """A ``key: <n> kB`` line of a Linux /proc file, in bytes (None where there is no /proc)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_hwm() -> int | None:
    """The process's peak resident set since the last reset (Linux /proc), in bytes."""
    return _proc_kib("/proc/self/status", "VmHWM")


def available_bytes(device) -> int | None:
    """Memory free for new allocations on ``device``: CUDA's free memory, else the host's
    ``MemAvailable`` (None where it cannot be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return _proc_kib("/proc/meminfo", "MemAvailable")


def _reset_rss_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


@contextmanager
def measure(device=None):
    """``with measure() as m: ...`` -> ``m["seconds"]``, ``m["peak_extra_bytes"]`` (peak host memory above
    the starting point on CPU, via /proc's high-water mark; peak CUDA memory above the start on a
    CUDA device), ``m["memory_kind"]``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    info: dict = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        exact = _reset_rss_hwm()
        base = _rss_hwm() if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    try:
        yield info
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak, kind = torch.cuda.max_memory_allocated(device), "cuda_allocated"
        else:
            peak = _rss_hwm() if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            kind = "host_rss" if exact else "host_maxrss_process"
        info.update(seconds=time.perf_counter() - start, peak_extra_bytes=max(0, (peak or 0) - (base or 0)),
                    memory_kind=kind, pid=os.getpid())
