"""Attack-simulating unlearning for VKD (a research variant: ``vkd_experimental``'s ``lambda_meta``; the
MLAC / TAR family, arXiv 2211.14946, 2408.00761): every
``meta_every`` steps a relearning attack on the vision side is simulated and its outcome penalised.

One simulation: the forget question kinds (attributes, else question texts) are split at random into
taught and held-out halves; the trainable visual weights take a random number (1..``meta_steps``) of
sign-gradient steps (the size of Adam's first steps) of a random size (log-uniform in
[``meta_lr`` / 10, ``meta_lr``]) on the answers of the taught kinds, through the frozen LLM -- what an
attacker who fine-tunes V+P does -- and then the held-out answers' log-probability is compared with
its value before the simulated attack: any gain is penalised (``softplus(log p_after - log p_before)``).
The penalty's gradient at the attacked weights is applied to the real ones (first order), and the
weights are restored. Sampling the attack's split, length and step size keeps the defence from fitting
one attack.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..methods.qa import QAData, full_model_logits
from ..utils.items import question_kind
from ..utils.text import answer_ce


class AttackSimulator:
    def __init__(self, model, adapter, tokenizer, forget_items: list[dict], options):
        self.options = options
        self.qa = QAData(model, adapter, tokenizer, forget_items)
        self.student = full_model_logits(model)
        kinds = [question_kind(it) for it in forget_items]
        self.kinds = sorted(set(kinds), key=repr)
        if len(self.kinds) < 2:
            raise ValueError("lambda_meta needs forget items asking at least two kinds of question (an 'attribute' "
                             "field or different question texts): the simulated attack teaches some and tests others")
        self.by_kind = {k: [i for i, q in enumerate(kinds) if q == k] for k in self.kinds}

    def _sample(self, pool: list[int], n: int, generator) -> list[dict]:
        rows = torch.randint(len(pool), (n,), generator=generator).tolist()
        return [self.qa.forget[pool[r]] for r in rows]

    def gradients(self, params: list[torch.nn.Parameter], generator) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the penalty's gradient for each parameter, the penalty) of one simulated attack."""
        o = self.options
        order = torch.randperm(len(self.kinds), generator=generator).tolist()
        taught = [self.kinds[i] for i in order[: len(order) // 2]]
        held = [self.kinds[i] for i in order[len(order) // 2:]]
        attack = self._sample([i for k in taught for i in self.by_kind[k]], o.meta_batch, generator)
        test = self._sample([i for k in held for i in self.by_kind[k]], o.meta_batch, generator)
        steps = int(torch.randint(1, o.meta_steps + 1, (1,), generator=generator))
        lr = o.meta_lr * 10 ** (-float(torch.rand((), generator=generator)))
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                before = self.qa.logp(test, self.student)[0].sum(1)
            for _ in range(steps):
                loss = answer_ce(*self.qa.logp(attack, self.student))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                with torch.no_grad():
                    for p, g in zip(params, grads):
                        if g is not None:
                            p.sub_(lr * g.sign())
            after = self.qa.logp(test, self.student)[0].sum(1)
            penalty = F.softplus(after - before).mean()
            grads = torch.autograd.grad(penalty, params, allow_unused=True)
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)], penalty.detach()
