"""``vkd-fast doctor``: versions, devices, the C++ extension and the usable backends (also recorded by the
benchmarks and in reports)."""

from __future__ import annotations

import importlib.metadata
import os
import platform


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def doctor_report() -> dict:
    """Everything ``vkd-fast doctor`` prints, as a dict (also used by the benchmarks)."""
    import torch

    from .. import __version__, _backend, _ext

    report: dict = {
        "vkd_fast": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "transformers": _version("transformers"),
        "cpu_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [],
        "triton_interpreter": _backend.interpreter_on(),
    }
    if report["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            report["cuda_devices"].append(
                {"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                 "capability": f"{p.major}.{p.minor}"}
            )
    module = _ext.load()
    report["cext"] = {
        "status": _ext.CEXT_SOURCE if module is not None else "unavailable",
        "path": getattr(module, "__file__", None),
        "reason": _ext.CEXT_ERROR,
        "threads": module.openmp_threads() if module is not None else None,
    }
    loss = {}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if report["cuda_available"] else [])
    for dev in devices:
        for name in ("cext", "triton", "reference"):
            reason = _backend.unavailable_reason(name, dev, torch.float32)
            loss[f"{name}@{dev.type}"] = "ok" if reason is None else reason
        try:
            loss[f"auto@{dev.type}"] = _backend.resolve("auto", dev, torch.float32)
        except (RuntimeError, ValueError) as exc:
            loss[f"auto@{dev.type}"] = f"error: {exc}"
    report["loss_backends"] = loss
    report["cache_backends"] = {
        "cext": "ok" if module is not None else f"unavailable: {_ext.CEXT_ERROR}",
        "torch": "ok",
        "pinned_memory": "on (CUDA available)" if report["cuda_available"] else "off (no CUDA device)",
    }
    report["env"] = {
        k: os.environ[k]
        for k in ("VKD_FAST_BACKEND", "VKD_FAST_SKIP_CEXT", "VKD_FAST_NO_JIT", "VKD_FAST_EXT_DIR",
                  "VKD_FAST_CHECK_INDICES", "TRITON_INTERPRET")
        if k in os.environ
    }
    return report


def _print_report(report: dict) -> None:
    def line(key: str, value) -> None:
        print(f"  {key:<22} {value}")

    print("vkd-fast doctor")
    for key in ("vkd_fast", "python", "platform", "torch", "triton", "transformers", "cpu_threads"):
        line(key, report[key] if report[key] is not None else "not installed")
    line("cuda", f"{len(report['cuda_devices'])} device(s)" if report["cuda_available"] else "not available")
    for dev in report["cuda_devices"]:
        line(f"  cuda:{dev['index']}", f"{dev['name']}, {dev['memory_gib']} GiB, sm {dev['capability']}")
    line("triton interpreter", "on (TRITON_INTERPRET=1)" if report["triton_interpreter"] else "off")
    cext = report["cext"]
    detail = cext["path"] if cext["status"] != "unavailable" else cext["reason"]
    line("C++ extension", f"{cext['status']} ({detail})")
    print("  loss backends:")
    for key, value in report["loss_backends"].items():
        line(f"  {key}", value)
    print("  cache backends:")
    for key, value in report["cache_backends"].items():
        line(f"  {key}", value)
    if report["env"]:
        print("  environment:")
        for key, value in report["env"].items():
            line(f"  {key}", value)
