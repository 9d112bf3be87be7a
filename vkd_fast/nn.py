"""``FeatureDistillLoss``: the module form of :func:`vkd_fast.feature_distill_loss`."""

from __future__ import annotations

import torch
from torch import nn

from ._backend import BACKENDS
from .functional import feature_distill_loss
from .ops import METRICS, REDUCTIONS
from .utils.validate import check_choice


class FeatureDistillLoss(nn.Module):
    """``loss = FeatureDistillLoss(metric="mse")(student, target, target_index=..., ...)``.

    Metric, reduction and backend are fixed at construction (and validated there); indices and
    weights are per call, as in :func:`vkd_fast.feature_distill_loss`.
    """

    def __init__(self, metric: str = "mse", reduction: str = "mean", backend: str = "auto") -> None:
        super().__init__()
        check_choice("metric", metric, METRICS)
        check_choice("reduction", reduction, REDUCTIONS)
        check_choice("backend", backend, BACKENDS)
        self.metric, self.reduction, self.backend = metric, reduction, backend

    def forward(
        self,
        student: torch.Tensor,
        target: torch.Tensor,
        target_index: torch.Tensor | None = None,
        student_index: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return feature_distill_loss(
            student, target, target_index=target_index, student_index=student_index, weight=weight,
            metric=self.metric, reduction=self.reduction, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"metric={self.metric!r}, reduction={self.reduction!r}, backend={self.backend!r}"
