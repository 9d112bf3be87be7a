"""Backend selection for the fused ops.

``auto``: CUDA tensors -> ``triton``; CPU tensors -> ``cext`` (the C++ extension: the same name as
the activation cache's C++ backend) when it loads, else ``reference``. ``cpu``, the C++ backend's
former name, is still accepted (a ``FutureWarning``). An automatically chosen backend that is
unavailable falls back (logged at debug level); a backend asked for by name -- as an argument or
through ``VKD_FAST_BACKEND`` -- raises with the reason instead.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import warnings

import torch

from .utils.validate import check_choice

log = logging.getLogger("vkd_fast")

BACKENDS = ("auto", "triton", "cext", "reference")
#: former backend names -> their names now
RENAMED = {"cpu": "cext"}
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def interpreter_on() -> bool:
    """Whether the Triton interpreter is enabled (kernels run on CPU tensors; tests only)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache  # resolve() runs on every call; the answer cannot change within a process
def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def unavailable_reason(backend: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why ``backend`` cannot run on tensors of this device and dtype (``None`` if it can)."""
    if backend == "reference":
        return None
    if dtype not in FUSED_DTYPES:
        return f"the {backend} backend supports float32, bfloat16 and float16, got {dtype}"
    if backend == "cext":
        if device.type != "cpu":
            return f"the cext backend (the C++ extension) needs CPU tensors, got device {device}"
        from . import _ext

        if _ext.load() is None:
            return f"the C++ extension is unavailable: {_ext.CEXT_ERROR}"
        return None
    if backend == "triton":
        if not triton_importable():
            return "triton is not installed (pip install triton)"
        if device.type == "cuda":
            return None
        if device.type == "cpu" and interpreter_on():
            return None
        return (
            f"the triton backend needs CUDA tensors, got device {device} "
            "(CPU tensors only run it under TRITON_INTERPRET=1, which is for tests)"
        )
    check_choice("backend", backend, BACKENDS)
    raise ValueError("unavailable_reason() needs a concrete backend, not 'auto' (see resolve())")


def resolve(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The concrete backend to use for ``backend`` on tensors of this device and dtype.

    A host-side decision (environment, installed packages, the extension): ``torch.compile`` runs it
    once while tracing and keeps the answer as a constant.
    """
    backend = _renamed(backend, "argument backend")
    check_choice("backend", backend, BACKENDS)
    source = "argument backend"
    if backend == "auto":
        env = _renamed(os.environ.get("VKD_FAST_BACKEND", "auto").strip().lower() or "auto", "VKD_FAST_BACKEND")
        check_choice("environment variable VKD_FAST_BACKEND", env, BACKENDS)
        backend, source = env, "VKD_FAST_BACKEND"
    if backend != "auto":
        reason = unavailable_reason(backend, device, dtype)
        if reason is not None:
            raise RuntimeError(f"backend {backend!r} (from {source}) cannot run: {reason}")
        return backend
    choice = "triton" if device.type == "cuda" else "cext"
    reason = unavailable_reason(choice, device, dtype)
    if reason is None:
        return choice
    log.debug("vkd_fast: backend %r unavailable (%s); falling back to 'reference'", choice, reason)
    return "reference"


def _renamed(backend, source: str):
    if backend in RENAMED:
        warnings.warn(f"{source}: backend {backend!r} is now named {RENAMED[backend]!r} (one name for the C++ "
                      f"extension, as the activation cache calls it); {backend!r} will stop working in a later "
                      "release", FutureWarning, stacklevel=4)
        return RENAMED[backend]
    return backend


# What @torch.compiler.assume_constant_result does, without its cost: the public decorator imports
# torch._dynamo (and with it triton) at `import vkd_fast`. Dynamo reads this marker when it traces a
# call to `resolve`; tests/test_autograd.py::test_compile_fullgraph_through_fused_op fails if that ever stops working.
resolve._dynamo_marked_constant = True  # type: ignore[attr-defined]
