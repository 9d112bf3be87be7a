"""The plain training loop of the toy world's build (vkd_fast.data.toy_model) and of the relearning
attack (vkd_fast.eval.relearn): the loss of a fresh batch, back-propagation and one optimiser step,
``steps`` times. The unlearning trainer (vkd_fast.engine) has its own loop: it accumulates
micro-batches, clips, masks, logs and checkpoints."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .validate import check_positive_int


def train_steps(loss_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, steps: int, *,
                scheduler=None, after_step: Callable[[], None] | None = None) -> torch.Tensor:
    """``steps`` optimiser steps, each: ``loss = loss_fn()`` (which draws its own batch), clear the
    gradients, ``loss.backward()``, ``optimizer.step()``, then ``scheduler.step()`` and
    ``after_step()`` when given. The model's train / eval mode is the caller's. Returns the last
    step's loss, detached and still on its device (nothing is read back to the host)."""
    check_positive_int("steps", steps)
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
    return loss.detach()
