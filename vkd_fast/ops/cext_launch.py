"""Launcher of the fused C++ CPU kernel (csrc/feature_distill_cpu.cpp)."""

from __future__ import annotations

import torch

from .. import _ext
from . import COSINE_EPS, METRIC_CODE, REDUCTION_CODE


def feature_distill_fwd_cext(
    student: torch.Tensor,
    target: torch.Tensor,
    target_index: torch.Tensor | None,
    student_index: torch.Tensor | None,
    weight: torch.Tensor | None,
    metric: str,
    reduction: str,
    grad_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, grad): loss fp32 ([] or [N] for "none"), grad [N, D] = w c dl/ds in student's dtype."""
    ext = _ext.load()
    if ext is None:
        raise RuntimeError(f"the vkd_fast C++ extension is unavailable: {_ext.CEXT_ERROR}")
    return ext.feature_distill_fwd(
        student, target, target_index, student_index, weight,
        METRIC_CODE[metric], REDUCTION_CODE[reduction], COSINE_EPS, grad_out,
    )
