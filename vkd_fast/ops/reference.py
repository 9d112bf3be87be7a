"""Pure-torch feature-distillation loss: the specification and the test oracle.

Computes in fp32 (fp64 inputs stay fp64) and differentiates through plain autograd, so every fast
path is checked against this function and this function against a naive per-row formula and
``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils.validate import check_choice
from . import COSINE_EPS, METRICS, REDUCTIONS


def row_losses(s: torch.Tensor, t: torch.Tensor, metric: str, eps: float = COSINE_EPS) -> torch.Tensor:
    """Unweighted per-row loss between equally shaped [N, D] matrices (already gathered)."""
    if metric == "mse":
        return (s - t).pow(2).mean(dim=1)
    if metric == "smooth_l1":
        return F.smooth_l1_loss(s, t, reduction="none", beta=1.0).mean(dim=1)
    if metric == "cosine":
        ns = torch.linalg.vector_norm(s, dim=1).clamp_min(eps)
        nt = torch.linalg.vector_norm(t, dim=1).clamp_min(eps)
        return 1.0 - (s * t).sum(dim=1) / (ns * nt)
    check_choice("metric", metric, METRICS)
    raise AssertionError(f"metric {metric!r} is listed in METRICS but has no formula here")


def feature_distill_reference(
    student: torch.Tensor,
    target: torch.Tensor,
    target_index: torch.Tensor | None = None,
    student_index: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    metric: str = "mse",
    reduction: str = "mean",
) -> torch.Tensor:
    """Reference semantics of :func:`vkd_fast.feature_distill_loss` (inputs assumed valid).

    Row i compares ``student[student_index[i]]`` (or ``student[i]``) with ``target[target_index[i]]``
    (or ``target[i]``); the result is fp32 (fp64 for fp64 inputs).
    """
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    s = student if student_index is None else student.index_select(0, student_index)
    t = target if target_index is None else target.index_select(0, target_index)
    rows = row_losses(s.to(compute), t.detach().to(compute), metric)
    if weight is not None:
        rows = rows * weight.detach().to(compute)
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "mean":
        return total / rows.shape[0]
    if reduction == "sum":
        return total
    check_choice("reduction", reduction, REDUCTIONS)
    raise AssertionError(f"reduction {reduction!r} is listed in REDUCTIONS but has no rule here")
