"""``kl_min``: gradient ascent on forget answers plus KL(teacher || student) on retain answer tokens,
the teacher's log-probabilities computed once before training (docs/method.md §3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cache import ActivationCache
from .qa import QAMethod


def retain_kl_term(r_logits_answer, r_teacher_logprobs) -> tuple[torch.Tensor, dict]:
    """KL(teacher || student) over the retain answer positions (``[T, V]`` each), batch-mean."""
    student = torch.log_softmax(r_logits_answer.float(), dim=-1)
    kl = F.kl_div(student, r_teacher_logprobs.float(), log_target=True, reduction="batchmean")
    return kl, {"kl_retain": kl.detach()}


class KLMin(QAMethod):
    two_sided = True

    def setup(self, ctx) -> None:
        super().setup(ctx)
        # the unmodified model's log-probabilities at every retain answer position, kept in host memory
        self.teacher = ActivationCache(torch.float32)
        with torch.no_grad():
            for i, ex in enumerate(self.qa.retain):
                logits, _ = self.qa.answer_logits([ex], self.student)
                self.teacher.put(i, torch.log_softmax(logits.float(), dim=-1))

    def retain_term(self, ri):
        student, _ = self.qa.answer_logits([self.qa.retain[i] for i in ri], self.student)
        return retain_kl_term(student, self.teacher.get(ri, device=student.device)[0])

    def close(self) -> dict:
        self.teacher.close()
        return self.teacher.stats()
