"""The fused loss as a ``torch.library`` custom op with autograd, so that eager mode and
``torch.compile(fullgraph=True)`` both run the fused kernels.

Forward runs one kernel that produces the loss and ``grad = w c dl/ds`` (see kernels/ and csrc/).
Backward scales that buffer by grad_output *in place* on the device -- no host sync and no second
gradient-sized allocation; with Triton one fp32 pass, skipped on the device when grad_output is
exactly 1 -- and, with ``student_index``, scatters its rows (``index_add_``, so repeated indices
accumulate) into a zero gradient of the full student matrix. Because the buffer is
consumed, a graph through this op supports one backward pass (``retain_graph=True`` and a second
``backward`` raise a clear error); the ``reference`` backend has no such limit.
"""

from __future__ import annotations

import torch

from .ops import METRICS, REDUCTION_CODE, REDUCTIONS

_NONE = REDUCTION_CODE["none"]


@torch.library.custom_op("vkd_fast::feature_distill_fwd", mutates_args=())
def feature_distill_fwd(
    student: torch.Tensor,
    target: torch.Tensor,
    target_index: torch.Tensor | None,
    student_index: torch.Tensor | None,
    weight: torch.Tensor | None,
    metric: int,
    reduction: int,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused forward: (loss fp32 [] or [N], grad [N, D] in student's dtype)."""
    m, r = METRICS[metric], REDUCTIONS[reduction]
    if backend == "cext":
        from .ops.cext_launch import feature_distill_fwd_cext

        return feature_distill_fwd_cext(student, target, target_index, student_index, weight, m, r)
    if backend == "triton":
        from .ops.triton_launch import feature_distill_fwd_triton

        return feature_distill_fwd_triton(student, target, target_index, student_index, weight, m, r)
    raise ValueError(f"vkd_fast::feature_distill_fwd: unknown fused backend {backend!r}")


@feature_distill_fwd.register_fake
def _feature_distill_fwd_fake(student, target, target_index, student_index, weight, metric, reduction, backend):
    n = student_index.shape[0] if student_index is not None else student.shape[0]
    loss_shape = (n,) if reduction == _NONE else ()
    loss = student.new_empty(loss_shape, dtype=torch.float32)
    grad = student.new_empty((n, student.shape[1]))
    return loss, grad


@torch.library.custom_op("vkd_fast::feature_distill_bwd_scale", mutates_args=("grad",))
def feature_distill_bwd_scale(grad: torch.Tensor, scale: torch.Tensor) -> None:
    """Backward of the Triton backend: ``grad *= scale`` in place (scale 0-dim or [N]) in fp32, rounded once;
    a custom op so that torch.compile keeps the kernel launch out of its trace."""
    from .ops.triton_launch import feature_distill_bwd_scale_triton

    feature_distill_bwd_scale_triton(grad, scale)


@feature_distill_bwd_scale.register_fake
def _feature_distill_bwd_scale_fake(grad, scale):
    return None


def _setup_context(ctx, inputs, output):
    student, _target, _ti, student_index, _w, _metric, reduction, backend = inputs
    _loss, grad = output
    ctx.save_for_backward(grad, student_index)
    # The gradient buffer is an output only so that it can be saved; nothing differentiates it.
    # Without this, autograd would materialise a zero [N, D] "gradient" for it in every backward.
    ctx.mark_non_differentiable(grad)
    ctx.set_materialize_grads(False)
    ctx.student_rows = student.shape[0]
    ctx.reduction = reduction
    ctx.backend = backend
    ctx.consumed = False


def _backward(ctx, grad_loss, _grad_of_grad):
    if ctx.consumed:
        raise RuntimeError(
            "feature_distill_loss: this graph was already backpropagated through the fused op, "
            "whose gradient buffer is scaled in place to save memory; recompute the loss for a second "
            "backward pass, or use backend='reference'"
        )
    ctx.consumed = True
    grad, student_index = ctx.saved_tensors
    if ctx.backend == "triton":  # one fp32 pass; none when grad_loss is 1 (mul_ for a non-contiguous buffer)
        feature_distill_bwd_scale(grad, grad_loss)
    else:
        grad = grad.mul_(grad_loss.unsqueeze(1) if ctx.reduction == _NONE else grad_loss)
    if student_index is not None:
        full = grad.new_zeros((ctx.student_rows, grad.shape[1]))
        grad = full.index_add_(0, student_index, grad)
    return grad, None, None, None, None, None, None, None


feature_distill_fwd.register_autograd(_backward, setup_context=_setup_context)
