"""``grad_diff``: gradient ascent on forget answers plus descent on retain answers,
L = -CE(forget) + CE(retain) (docs/method.md §3)."""

from __future__ import annotations

import torch

from ..utils.text import answer_ce
from .qa import QAMethod


def retain_ce_term(r_logp, r_mask) -> tuple[torch.Tensor, dict]:
    """The retain term: CE(retain answers)."""
    retain_ce = answer_ce(r_logp, r_mask)
    return retain_ce, {"ce_retain": retain_ce.detach()}


class GradDiff(QAMethod):
    two_sided = True

    def retain_term(self, ri):
        return retain_ce_term(*self.qa.logp([self.qa.retain[i] for i in ri], self.student))
