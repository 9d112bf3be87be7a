"""Saliency mask (docs/method.md §2; mmunlearner's, and available to VKD): per weight, the ratio of
forget-set to retain-set squared-gradient (Fisher) estimates; only weights with ratio >=
``threshold`` (or, with ``ratio``, the top fraction) are updated. The trainer applies a mask as
gradient hooks (:func:`apply_mask`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..utils.options import check_types, option
from ..utils.text import answer_ce
from ..utils.validate import check_positive_int


@dataclass(frozen=True)
class MaskOptions:
    mask_threshold: float = option(1.0, "saliency mask: update weights whose forget/retain Fisher ratio is >= this")
    mask_ratio: float | None = option(None, "saliency mask: instead update the top fraction of weights by that ratio")
    mask_batches: int = option(4, "saliency mask: batches per side for the Fisher estimates")

    def __post_init__(self) -> None:
        check_types(self)
        check_positive_int("mask_batches", self.mask_batches)
        if self.mask_ratio is not None and not 0 < self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1] or None, got {self.mask_ratio!r}")


def fisher(named, loss_fns) -> dict[str, torch.Tensor]:
    """Mean squared gradient of each parameter over ``loss_fns`` (callables returning a loss)."""
    acc = {n: torch.zeros_like(p) for n, p in named}
    for fn in loss_fns:
        for _, p in named:
            p.grad = None
        fn().backward()
        for n, p in named:
            if p.grad is not None:
                acc[n] += p.grad.detach().float().pow(2)
    for _, p in named:
        p.grad = None
    return {n: a / max(1, len(loss_fns)) for n, a in acc.items()}


def saliency_mask(forget_fisher, retain_fisher, threshold: float = 1.0, ratio: float | None = None,
                  eps: float = 1e-12) -> dict[str, torch.Tensor]:
    scores = {n: forget_fisher[n] / (retain_fisher[n] + eps) for n in forget_fisher}
    if ratio is not None:
        flat = torch.cat([s.flatten() for s in scores.values()])
        k = max(1, int(round(ratio * flat.numel())))
        cut = torch.topk(flat, k).values.min()
        return {n: s >= cut for n, s in scores.items()}
    return {n: s >= threshold for n, s in scores.items()}


def qa_saliency_masks(qa, student, named, plan, options: MaskOptions) -> dict[str, torch.Tensor]:
    """Masks from answer likelihoods: Fisher estimates of CE(forget answers) and CE(retain answers)
    over the first ``mask_batches`` planned batches (``qa``: a :class:`vkd_fast.methods.qa.QAData`)."""
    k = min(options.mask_batches, len(plan))
    f_fns = [lambda fi=plan[s][0]: answer_ce(*qa.logp([qa.forget[i] for i in fi], student)) for s in range(k)]
    r_fns = [lambda ri=plan[s][1]: answer_ce(*qa.logp([qa.retain[i] for i in ri], student)) for s in range(k)]
    return saliency_mask(fisher(named, f_fns), fisher(named, r_fns), options.mask_threshold, options.mask_ratio)


def apply_mask(named, masks) -> list:
    """Zero the gradient of unmasked weights; returns the hook handles (``.remove()`` to undo)."""
    handles = []
    for n, p in named:
        m = masks[n].to(p.dtype)
        handles.append(p.register_hook(lambda g, m=m: g * m))
    return handles
