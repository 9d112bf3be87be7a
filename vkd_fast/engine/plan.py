"""The batch plan and the learning-rate schedule of a run (public: a method driven from another
training loop reproduces :func:`vkd_fast.unlearn` with them)."""

from __future__ import annotations

import math

import torch

from ..methods import Batch


def batch_plan(n_forget: int, n_retain: int, steps: int, batch_size: int, generator: torch.Generator, *,
               world_size: int = 1, rank: int = 0, grad_accum: int = 1, interleave: bool = False) -> list[Batch]:
    """This process's micro-batches, ``steps * grad_accum`` of them, drawn from ``generator``.

    Every rank draws the same global plan (per step ``batch_size`` forget and ``batch_size`` retain
    indices, uniformly with replacement) and takes its contiguous share, split into ``grad_accum``
    micro-batches: optimiser step t uses entries ``t * grad_accum ... (t + 1) * grad_accum - 1``.
    ``interleave``: alternate micro-batches of forget only and retain only."""
    plan = [(torch.randint(0, n_forget, (batch_size,), generator=generator).tolist(),
             torch.randint(0, n_retain, (batch_size,), generator=generator).tolist()) for _ in range(steps)]
    micro = batch_size // (world_size * grad_accum)
    plan = [Batch(fi[o:o + micro], ri[o:o + micro]) for fi, ri in plan
            for o in range(rank * micro * grad_accum, (rank + 1) * micro * grad_accum, micro)]
    if interleave:
        plan = [Batch(fi, []) if m % 2 == 0 else Batch([], ri) for m, (fi, ri) in enumerate(plan)]
    return plan


def lr_factor(steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1):
    """The schedule as a function of the step: linear warm-up, then cosine decay to ``min_lr_ratio``."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def cosine_schedule(optimizer, steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1):
    """The trainer's ``LambdaLR`` over :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(steps, warmup_steps, min_lr_ratio))
