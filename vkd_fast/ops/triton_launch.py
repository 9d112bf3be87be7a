"""Launcher of the fused Triton kernel (kernels/feature_distill.py).

triton and the kernel module are imported on first launch, never at package import, so that
``TRITON_INTERPRET`` can still be set by the caller before that.
"""

from __future__ import annotations

import os

import torch

from . import COSINE_EPS, METRIC_CODE

_MAX_BLOCK_D = 1024     # D is walked in tiles of at most this many features
_TILE_ELEMS = 4096      # BLOCK_N * BLOCK_D per program on a GPU
_INTERP_TILE_ELEMS = 1 << 16  # the interpreter runs one numpy op per tile: bigger tiles, fewer programs


def _next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def block_sizes(n: int, d: int, interpret: bool) -> tuple[int, int]:
    block_d = min(_MAX_BLOCK_D, _next_pow2(max(d, 16)))
    budget = _INTERP_TILE_ELEMS if interpret else _TILE_ELEMS
    block_n = max(1, min(budget // block_d, _next_pow2(max(n, 1)), 128))
    return block_n, block_d


def feature_distill_fwd_triton(
    student: torch.Tensor,
    target: torch.Tensor,
    target_index: torch.Tensor | None,
    student_index: torch.Tensor | None,
    weight: torch.Tensor | None,
    metric: str,
    reduction: str,
    grad_out: torch.Tensor | None = None,
    loss_rows_out: torch.Tensor | None = None,
    block_n: int | None = None,
    block_d: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, grad) with the semantics of :func:`vkd_fast.ops.cext_launch.feature_distill_fwd_cext`.

    ``grad_out`` / ``loss_rows_out`` let tests hand in poisoned buffers that must be fully written.
    """
    from vkd_fast.kernels.feature_distill import feature_distill_fwd_kernel

    n = student_index.shape[0] if student_index is not None else student.shape[0]
    d = student.shape[1]
    grad = grad_out if grad_out is not None else torch.empty((n, d), dtype=student.dtype, device=student.device)
    loss_rows = (
        loss_rows_out if loss_rows_out is not None
        else torch.empty((n,), dtype=torch.float32, device=student.device)
    )
    if n > 0:
        interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
        bn, bd = block_sizes(n, d, interpret)
        bn, bd = block_n or bn, block_d or bd
        dummy = loss_rows  # any tensor: the pointer of an absent operand is never read
        grid = (-(-n // bn),)
        feature_distill_fwd_kernel[grid](
            student, target,
            target_index if target_index is not None else dummy,
            student_index if student_index is not None else dummy,
            weight if weight is not None else dummy,
            loss_rows, grad,
            n, d, target.shape[0], student.shape[0],
            student.stride(0), student.stride(1), target.stride(0), target.stride(1), grad.stride(0),
            (1.0 / n) if reduction == "mean" else 1.0, COSINE_EPS,
            METRIC=METRIC_CODE[metric],
            HAS_TI=target_index is not None, HAS_SI=student_index is not None, HAS_W=weight is not None,
            BLOCK_N=bn, BLOCK_D=bd, SOFT_BF16_RTNE=interpret and grad.dtype == torch.bfloat16,
            num_warps=4 if bd * bn <= 2048 else 8,
        )
    if reduction == "none":
        return loss_rows, grad
    total = loss_rows.sum()
    return (total / n if reduction == "mean" else total), grad


_SCALE_BLOCK = 4096            # elements per program of the backward's scale on a GPU
_INTERP_SCALE_BLOCK = 1 << 16  # fewer, bigger programs under the interpreter


def feature_distill_bwd_scale_triton(grad: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``grad *= scale`` in place, ``scale`` 0-dim or one per row (any stride): ``(grad.float() * scale)``
    rounded once to ``grad``'s type.

    ``grad`` is the forward's own buffer (contiguous); a scalar scale of 1 leaves it untouched on the
    device, so ``loss.backward()`` costs no pass over the gradient.
    """
    from vkd_fast.kernels.feature_distill import feature_distill_bwd_scale_kernel

    numel = grad.numel()
    if numel == 0:
        return grad
    if not grad.is_contiguous() or scale.dim() > 1:
        return grad.mul_(scale.unsqueeze(1) if scale.dim() == 1 else scale)
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    block = _INTERP_SCALE_BLOCK if interpret else _SCALE_BLOCK
    per_row = scale.dim() == 1
    feature_distill_bwd_scale_kernel[(-(-numel // block),)](
        grad, scale, numel, grad.shape[1], scale.stride(0) if per_row else 0,
        PER_ROW=per_row, BLOCK=block, SOFT_BF16_RTNE=interpret and grad.dtype == torch.bfloat16,
        num_warps=8,
    )
    return grad
