"""Where work runs: ``"auto"`` (the default of the Python API and every command) is the accelerator
when one is visible, else the CPU; and the precision that goes with it.

``resolve_device("auto")``: ``cuda`` (``cuda:<LOCAL_RANK>`` in a torchrun process) when
``torch.cuda.is_available()``, else ``mps`` when Apple's backend is available, else ``cpu``. An
explicit device is checked against what torch sees, with a one-line error. Nothing here runs at
import time (``import vkd_fast`` never initialises CUDA).

Precision (the commands' ``--dtype default`` and ``UnlearnConfig.trained_dtype`` decide it): on the
CPU everything is float32 (CPU bf16 is slow and its results differ); on an accelerator the frozen
parts are loaded in 16-bit (half the memory of a 7B language model, and what autocast computes in
anyway) and the tensors that train stay float32 (AdamW moments and updates in full precision;
autocast runs their matmuls in bf16).
"""

from __future__ import annotations

import os

import torch

AUTO = "auto"


def accelerator_type() -> str | None:
    """``"cuda"`` or ``"mps"`` when torch sees that accelerator, else None (checked in that order)."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return None


def check_device_spec(name: str, device) -> None:
    """``device`` must be None, ``"auto"`` or a torch device string; a clear error naming ``name`` otherwise."""
    if device is None or device == AUTO or isinstance(device, torch.device):
        return
    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} must be 'auto', a torch device such as 'cpu', 'cuda' or 'cuda:1', or None, got "
                         f"{device!r}") from None


def resolve_device(device, name: str = "device") -> torch.device | None:
    """None -> None (leave the model where it is); ``"auto"`` -> the accelerator when one is visible
    (``cuda:<LOCAL_RANK>`` under torchrun), else the CPU; anything else -> ``torch.device(device)``,
    refused with a one-line error when torch does not see it."""
    if device is None:
        return None
    check_device_spec(name, device)
    if device == AUTO:
        kind = accelerator_type()
        if kind == "cuda":
            local = os.environ.get("LOCAL_RANK")
            return torch.device("cuda", int(local) % torch.cuda.device_count()) if local is not None and \
                local.isdigit() else torch.device("cuda", torch.cuda.current_device())
        return torch.device(kind or "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={str(device)!r}, but torch sees no CUDA device here (use 'auto' or 'cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={str(device)!r}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and accelerator_type() != "mps":
        raise ValueError(f"{name}={str(device)!r}, but torch sees no MPS device here (use 'auto' or 'cpu')")
    return dev


def is_accelerator(device) -> bool:
    return device is not None and torch.device(device).type not in ("cpu", "meta")


def describe_device(device: torch.device, threads: int | None = None) -> str:
    """One line: ``cuda:0 (NVIDIA H200, 139.8 GiB)`` / ``cpu (2 threads)``. ``threads``: the CPU thread
    count to report when the caller will set it itself (default: torch's now)."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    if device.type == "cpu":
        n = torch.get_num_threads() if threads is None else threads
        return f"cpu ({n} thread{'s' * (n != 1)})"
    return str(device)

