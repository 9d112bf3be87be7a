"""Output-level baselines (METHOD.md section 3), on answer tokens only.

Given per-token answer log-probabilities (``logp`` with its ``mask``):

* ``ga``        -- gradient ascent on forget answers: L = -CE_forget = mean logp_forget
* ``grad_diff`` -- L = -CE_forget + CE_retain
* ``kl_min``    -- L = -CE_forget + KL(teacher || student) on retain answer tokens
* ``npo``       -- negative preference optimisation on forget answers, beta (0.4):
                   L = -(2 / beta) * mean_i log sigmoid(-beta (log pi(y_i|x_i) - log pi_ref(y_i|x_i)))
                   with the reference log-probabilities computed once before training
* ``mmunlearner`` -- ga restricted by a saliency mask (see saliency.py) over V, P and W
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ce(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over answer tokens."""
    return -(logp.sum() / mask.sum().clamp_min(1))


def ga_loss(f_logp, f_mask) -> tuple[torch.Tensor, dict]:
    """The forget term shared by ga, grad_diff, kl_min and mmunlearner: -CE(forget answers)."""
    forget_ce = ce(f_logp, f_mask)
    return -forget_ce, {"ce_forget": forget_ce.detach()}


def retain_ce_term(r_logp, r_mask) -> tuple[torch.Tensor, dict]:
    """grad_diff's retain term: CE(retain answers)."""
    retain_ce = ce(r_logp, r_mask)
    return retain_ce, {"ce_retain": retain_ce.detach()}


def retain_kl_term(r_logits_answer, r_teacher_logprobs) -> tuple[torch.Tensor, dict]:
    """kl_min's retain term: KL(teacher || student) over the retain answer positions ([T, V] each)."""
    student = torch.log_softmax(r_logits_answer.float(), dim=-1)
    kl = F.kl_div(student, r_teacher_logprobs.float(), log_target=True, reduction="batchmean")
    return kl, {"kl_retain": kl.detach()}


def _combine(*parts) -> tuple[torch.Tensor, dict]:
    loss, terms = 0, {}
    for value, t in parts:
        loss = loss + value
        terms.update(t)
    return loss, terms


def grad_diff_loss(f_logp, f_mask, r_logp, r_mask) -> tuple[torch.Tensor, dict]:
    return _combine(ga_loss(f_logp, f_mask), retain_ce_term(r_logp, r_mask))


def kl_min_loss(f_logp, f_mask, r_logits_answer, r_teacher_logprobs) -> tuple[torch.Tensor, dict]:
    """``r_logits_answer``: student logits at the retain answer positions [T, V];
    ``r_teacher_logprobs``: the teacher's log-probabilities there [T, V]."""
    return _combine(ga_loss(f_logp, f_mask), retain_kl_term(r_logits_answer, r_teacher_logprobs))


def npo_loss(f_logp, f_mask, ref_seq_logp: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    seq = f_logp.sum(dim=1)
    ratio = seq - ref_seq_logp.to(seq)
    loss = -(2.0 / beta) * F.logsigmoid(-beta * ratio).mean()
    return loss, {"npo_logratio": ratio.mean().detach(), "ce_forget": ce(f_logp, f_mask).detach()}
