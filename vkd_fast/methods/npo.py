"""``npo``: negative preference optimisation on forget answers (docs/method.md §3),

    L = -(2 / beta) * mean_i log sigmoid(-beta (log pi(y_i|x_i) - log pi_ref(y_i|x_i)))

with the reference log-probabilities log pi_ref computed once, before training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..utils.options import option
from ..utils.text import answer_ce
from .qa import QAMethod, QAOptions


def npo_loss(f_logp, f_mask, ref_seq_logp: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    """NPO over a batch of forget answers: ``f_logp`` / ``f_mask`` per answer token, ``ref_seq_logp``
    the reference's total log-probability of each answer."""
    seq = f_logp.sum(dim=1)
    ratio = seq - ref_seq_logp.to(seq)
    loss = -(2.0 / beta) * F.logsigmoid(-beta * ratio).mean()
    return loss, {"npo_logratio": ratio.mean().detach(), "ce_forget": answer_ce(f_logp, f_mask).detach()}


@dataclass(frozen=True)
class NPOOptions(QAOptions):
    beta: float = option(0.4, "inverse temperature beta")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")


class NPO(QAMethod):
    Options = NPOOptions

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.ref = self.qa.sequence_logp(self.student)  # the unmodified model, once

    def forget_term(self, fi):
        f_logp, f_mask = self.qa.logp([self.qa.forget[i] for i in fi], self.student)
        return npo_loss(f_logp, f_mask, self.ref[fi], self.options.beta)
