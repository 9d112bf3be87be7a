"""VKD objective (METHOD.md section 2): retain rows keep the teacher's features, forget rows move
to a target that carries no knowledge of the forget person — the teacher features of the nearest
retain image (``nearest_retain``), an identity-free anchor (``retain_mean``, ``misdirect``) — or,
``repel``, away from their own features by a bounded hinge.

    L = lambda_r * mean_retain_rows d(S, T) + lambda_f * mean_forget_rows d(S, A)
"""

from __future__ import annotations

import torch

from ..functional import feature_distill_loss


def vkd_loss(student: torch.Tensor, n_forget_rows: int, retain_targets: torch.Tensor, forget_targets: torch.Tensor,
             config, forget_target_index: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Loss of one step. ``student`` packs the forget images' rows first, then the retain images'.

    ``forget_targets`` is the anchor table (with ``forget_target_index`` mapping each forget row to
    its token position), row-aligned target rows (``nearest_retain``: the nearest retain image's
    teacher rows) or, for ``repel``, the forget images' own teacher rows. ``repel`` compares
    the forget rows after adding seeded Gaussian noise of std ``config.repel_noise`` (relative to the
    rows' RMS): at the start the student equals the teacher, where a squared distance has exactly zero
    gradient, so without that symmetry breaker nothing would move (METHOD.md section 2).
    """
    s_forget, s_retain = student[:n_forget_rows], student[n_forget_rows:]
    zero = student.new_zeros((), dtype=torch.float32)  # a side absent from the batch (interleaved mode)
    retain = (feature_distill_loss(s_retain, retain_targets.to(student.dtype), metric=config.metric)
              if s_retain.shape[0] else zero)
    if s_forget.shape[0] == 0:
        forget = zero
    elif config.forget_target == "repel":
        noise = torch.randn(s_forget.shape, generator=generator, dtype=torch.float32).to(s_forget)
        scale = config.repel_noise * s_forget.detach().pow(2).mean().sqrt()
        d = feature_distill_loss(s_forget + scale * noise, forget_targets.to(student.dtype), metric=config.metric,
                                 reduction="none")
        forget = torch.relu(config.repel_margin - d).mean()
    else:
        forget = feature_distill_loss(s_forget, forget_targets.to(student.dtype), target_index=forget_target_index,
                                      metric=config.metric)
    loss = config.lambda_retain * retain + config.lambda_forget * forget
    return loss, {"loss_retain": retain.detach(), "loss_forget": forget.detach()}
