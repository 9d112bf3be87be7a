"""Saliency mask (METHOD.md section 2, used by mmunlearner and available to any method): per weight,
the ratio of forget-set to retain-set squared-gradient (Fisher) estimates; only weights with ratio >=
``threshold`` (or, with ``ratio``, the top fraction) are updated. Applied as gradient hooks."""

from __future__ import annotations

import torch


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


def apply_mask(named, masks) -> list:
    """Zero the gradient of unmasked weights; returns the hook handles (``.remove()`` to undo)."""
    handles = []
    for n, p in named:
        m = masks[n].to(p.dtype)
        handles.append(p.register_hook(lambda g, m=m: g * m))
    return handles
