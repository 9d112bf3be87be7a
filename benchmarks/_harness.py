"""Small shared benchmark harness: timing, memory, environment, CSV.

* ``time_fn``: warm-up, then repeated timed calls -> median, p10/p90 spread (ms).
* ``peak_extra_rss``: peak resident memory a call adds on top of what is resident before it (CPU;
  Linux HWM reset via /proc/self/clear_refs). CUDA: ``torch.cuda.max_memory_allocated`` delta.
* ``environment``: the machine and versions, attached to every CSV row.
* ``append_rows``: appends to ``benchmarks/results/<name>.csv`` (header written once), writing a
  temporary file and renaming it, so an interrupted run never leaves a half-written CSV.
"""

from __future__ import annotations

import csv
import datetime as _dt
import gc
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def summarize(times_ms: list[float]) -> dict:
    """Median and spread (p10, p90) of a list of times in milliseconds."""
    q = statistics.quantiles(times_ms, n=10) if len(times_ms) >= 2 else [times_ms[0]] * 9
    return {"median_ms": statistics.median(times_ms), "p10_ms": q[0], "p90_ms": q[-1], "reps": len(times_ms)}


def time_fn(fn, *, device="cpu", warmup: int = 3, reps: int = 15, min_seconds: float = 0.0) -> dict:
    """Median and spread (p10, p90) of ``fn()`` wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start) < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return summarize(times)


def peak_extra_rss(fn) -> int | None:
    """Bytes by which one call of ``fn`` raises the process's resident-set high-water mark (the
    package's own ``vkd_fast.utils.measure``); None where /proc cannot reset the mark."""
    from vkd_fast.utils import measure

    gc.collect()
    with measure() as m:
        fn()
    return m["peak_extra_bytes"] if m["memory_kind"] == "host_rss" else None


def peak_extra_cuda(fn, device) -> int:
    """Peak CUDA memory one call of ``fn`` allocates above what was allocated before it."""
    from vkd_fast.utils import measure

    with measure(device) as m:
        fn()
    return m["peak_extra_bytes"]


def environment() -> dict:
    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = ""
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = ""
    return env


def append_rows(name: str, rows: list[dict]) -> Path:
    """Append ``rows`` to results/<name>.csv atomically (temp file + rename)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    old: list[dict] = []
    fields: list[str] = []
    if path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            old = list(reader)
    for row in rows:
        for key in row:
            if key not in fields:
                fields.append(key)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(old + rows)
    os.replace(tmp, path)
    return path


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
