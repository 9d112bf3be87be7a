"""Activation measurement: how much memory a training step's forward keeps for backward (a method's
:meth:`~vkd_fast.methods.UnlearningMethod.activation_bytes`, used by the trainer's batch-fit check)."""

from __future__ import annotations

import torch


def saved_activation_bytes(forward) -> int:
    """Bytes of the tensors autograd keeps for backward while ``forward()`` runs (parameters and
    repeated tensors not counted): the activation memory of a training step's forward."""
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        if not isinstance(t, torch.nn.Parameter) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return total
