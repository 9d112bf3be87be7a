"""``feature_distill_loss``: the public loss, with all input validation (done here, once)."""

from __future__ import annotations

import os

import torch

from . import _backend
from .ops import METRIC_CODE, METRICS, REDUCTION_CODE, REDUCTIONS
from .ops.reference import feature_distill_reference
from .utils.validate import check_choice

_INDEX_DTYPES = (torch.int64, torch.int32)
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _check_matrix(name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [rows, D], got shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, bfloat16, float16 or float64, got {x.dtype}")


def _check_vector(name: str, x, n: int, device: torch.device, dtypes, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name} must be {what}, got {x.dtype}")
    if x.dim() != 1 or (n >= 0 and x.shape[0] != n):
        raise ValueError(f"{name} must have shape [{n if n >= 0 else 'N'}], got {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} must be on {device} like student, got {x.device}")


def _index_checks_enabled(device: torch.device) -> bool:
    if torch.compiler.is_compiling():
        return False  # values are not known while tracing; shapes are still checked
    if device.type == "cpu":
        return True  # no host sync involved
    return os.environ.get("VKD_FAST_CHECK_INDICES", "1") != "0"


def _check_index_ranges(checks: list[tuple[str, torch.Tensor, int]]) -> None:
    """One host round trip for all index tensors (a device sync on CUDA)."""
    checks = [c for c in checks if c[1].numel() > 0]
    if not checks:
        return
    stats = torch.stack([torch.stack([idx.min(), idx.max()]).to(torch.int64) for _, idx, _ in checks])
    for (name, idx, limit), (lo, hi) in zip(checks, stats.tolist()):
        if lo < 0 or hi >= limit:
            bad = lo if lo < 0 else hi
            pos = int((idx == bad).nonzero()[0, 0])
            raise ValueError(f"{name} must hold row numbers in [0, {limit}), got {name}[{pos}] = {bad}")


def feature_distill_loss(
    student: torch.Tensor,
    target: torch.Tensor,
    target_index: torch.Tensor | None = None,
    student_index: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    metric: str = "mse",
    reduction: str = "mean",
    backend: str = "auto",
    check_indices: bool | None = None,
) -> torch.Tensor:
    """Feature-distillation loss between student rows and target rows, with a fused gradient.

    Args:
        student: ``[N, D]`` student features (or ``[R, D]`` with ``student_index``), float32, bfloat16
            or float16 (float64 on the reference backend), usually requiring grad.
        target: ``[M, D]`` table of targets (teacher features or anchors), same dtype, device and D.
            It is a constant: a target that requires grad is rejected.
        target_index: ``[N]`` int64/int32; row i is compared with ``target[target_index[i]]``.
            ``None`` means ``M == N`` and row i uses ``target[i]``.
        student_index: ``[N]`` int64/int32; row i is ``student[student_index[i]]`` (e.g. the visual-token
            rows of LLM hidden states). Gradient rows outside the index are zero; repeated indices
            accumulate.
        weight: ``[N]`` per-row weight (float); ``None`` means 1.
        metric: ``"mse"`` (mean over D of squared differences), ``"cosine"`` (1 - cos, norms floored at
            1e-8) or ``"smooth_l1"`` (Huber with beta 1, mean over D).
        reduction: ``"mean"`` (sum of weighted row losses / N), ``"sum"`` or ``"none"`` (``[N]``).
        backend: ``"auto"``, ``"triton"``, ``"cext"`` (the C++ extension, CPU tensors;
            ``"cpu"`` is its former name, still accepted with a warning) or ``"reference"`` (docs/kernels-and-cache.md).
        check_indices: check that index values are in range. ``None`` (default): always on CPU, on
            CUDA unless ``VKD_FAST_CHECK_INDICES=0``; ``False``: skip (indices built by trusted code,
            e.g. the VKD step, which must not synchronise the device).

    Returns:
        The loss in float32 (float64 for float64 inputs): a scalar, or ``[N]`` for ``"none"``.
        With N = 0, ``"mean"`` gives NaN (as ``torch.mean`` does) and ``"sum"`` gives 0.

    Index range checks cost one device-to-host synchronisation per call on CUDA; set
    ``VKD_FAST_CHECK_INDICES=0`` to skip them (the Triton kernel never reads out of bounds: rows with
    a bad index get a NaN loss and gradient instead). CPU checks are always on; under
    ``torch.compile`` only shapes are checked.
    """
    _check_matrix("student", student)
    _check_matrix("target", target)
    if target.dtype != student.dtype:
        raise TypeError(f"target must have student's dtype {student.dtype}, got {target.dtype}")
    if target.device != student.device:
        raise ValueError(f"target must be on student's device {student.device}, got {target.device}")
    if target.shape[1] != student.shape[1]:
        raise ValueError(
            f"target must have student's feature size D={student.shape[1]}, got D={target.shape[1]}"
        )
    if target.requires_grad:
        raise ValueError(
            "target requires grad, but the loss treats targets (teacher features, anchors) as constants; "
            "pass target.detach()"
        )
    check_choice("metric", metric, METRICS)
    check_choice("reduction", reduction, REDUCTIONS)
    device = student.device
    ranges: list[tuple[str, torch.Tensor, int]] = []
    if student_index is not None:
        _check_vector("student_index", student_index, -1, device, _INDEX_DTYPES, "int64 or int32")
        n = student_index.shape[0]
        ranges.append(("student_index", student_index, student.shape[0]))
    else:
        n = student.shape[0]
    if target_index is not None:
        _check_vector("target_index", target_index, n, device, _INDEX_DTYPES, "int64 or int32")
        ranges.append(("target_index", target_index, target.shape[0]))
    elif target.shape[0] != n:
        raise ValueError(
            f"target has {target.shape[0]} rows but there are N={n} student rows; "
            "pass target_index to map rows onto a table of targets"
        )
    if weight is not None:
        _check_vector("weight", weight, n, device, _FLOAT_DTYPES, "a floating-point tensor")
        if weight.requires_grad:
            raise ValueError("weight requires grad, but per-row weights are constants; pass weight.detach()")
    if ranges and (check_indices if check_indices is not None else _index_checks_enabled(device)) \
            and not torch.compiler.is_compiling():
        _check_index_ranges(ranges)

    chosen = _backend.resolve(backend, device, student.dtype)
    if chosen == "reference":
        return feature_distill_reference(
            student, target, target_index, student_index, weight, metric=metric, reduction=reduction
        )
    from .autograd import feature_distill_fwd

    loss, _grad = feature_distill_fwd(
        student,
        target,
        None if target_index is None else target_index.contiguous(),
        None if student_index is None else student_index.to(torch.int64).contiguous(),
        None if weight is None else weight.to(torch.float32).contiguous(),
        METRIC_CODE[metric],
        REDUCTION_CODE[reduction],
        chosen,
    )
    return loss
