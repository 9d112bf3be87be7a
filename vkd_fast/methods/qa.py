"""What the output-level methods share (docs/method.md §3): question-answer items encoded once,
answer-token log-probabilities through the full model, and the forget term most of them use.

* :class:`QAData` -- encoded forget / retain items, forwards through a ``student`` callable, and
  the per-example answer-token counts (known on the host: no device sync to count tokens);
* :func:`ga_loss` -- gradient ascent on forget answers, L = -CE(forget answers);
* :class:`QAMethod` -- the base of the baselines: options ``trainable`` and ``lora``, and a step that
  adds a forget term and (two-sided methods) a retain term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..adapters import check_trainable
from ..utils.options import check_types, option
from ..utils.text import answer_ce, answer_logprobs, collate_qa, encode_qa, pad_id
from .base import UnlearningMethod
from .inputs import check_qa
from .measure import saved_activation_bytes


def ga_loss(f_logp, f_mask) -> tuple[torch.Tensor, dict]:
    """The forget term shared by ga, grad_diff, kl_min and mmunlearner: -CE(forget answers)."""
    forget_ce = answer_ce(f_logp, f_mask)
    return -forget_ce, {"ce_forget": forget_ce.detach()}


class QAData:
    """Forget / retain items encoded as prompt + answer tokens (``None`` for a side not needed)."""

    def __init__(self, model, adapter, tokenizer, forget=None, retain=None):
        self.model, self.adapter = model, adapter
        self.forget = encode_qa(adapter, tokenizer, forget, "forget") if forget is not None else None
        self.retain = encode_qa(adapter, tokenizer, retain, "retain") if retain is not None else None
        self.pad = pad_id(tokenizer)
        self._counts = {side: [int((ex["labels"][1:] != -100).sum()) for ex in examples]
                        for side, examples in (("forget", self.forget), ("retain", self.retain)) if examples}

    def forward(self, examples: list[dict], student) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) of a right-padded batch through ``student`` (``**inputs -> logits``)."""
        inputs, labels = collate_qa(self.adapter, examples, self.pad)
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        return student(**inputs), labels.to(device)

    def logp(self, examples: list[dict], student) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer-token log-probabilities and mask (:func:`vkd_fast.utils.text.answer_logprobs`)."""
        logits, labels = self.forward(examples, student)
        return answer_logprobs(logits, labels)

    def answer_logits(self, examples: list[dict], student) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the answer positions ``[T, V]`` and the ``[B, L-1]`` answer mask."""
        logits, labels = self.forward(examples, student)
        mask = labels[:, 1:] != -100
        return logits[:, :-1][mask], mask

    def tokens(self, side: str, indices: list[int]) -> int:
        counts = self._counts[side]
        return sum(counts[i] for i in indices)

    @torch.no_grad()
    def sequence_logp(self, student, chunk: int = 8) -> torch.Tensor:
        """Each forget answer's total log-probability ``[n_forget]`` (reference values for NPO)."""
        return torch.cat([self.logp(self.forget[i: i + chunk], student)[0].sum(1)
                          for i in range(0, len(self.forget), chunk)])


def full_model_logits(model):
    """The student forward of the output-level methods: a full forward, its logits."""
    return lambda **inputs: model(**inputs).logits


@dataclass(frozen=True)
class QAOptions:
    trainable: str = option("language_model", "what it updates: 'language_model' (W and its head), 'all', or a "
                                               "visual set ('projector', 'projector+vision_last:<K>', "
                                               "'vision+projector')")
    lora: dict | None = option(None, "LoRA on the trainable set: peft LoraConfig arguments, "
                                     "e.g. {r: 8, lora_alpha: 16}")

    def __post_init__(self) -> None:
        check_types(self)
        check_trainable(self.trainable)
        if self.lora is not None and not isinstance(self.lora, dict):
            raise ValueError(f"lora must be a mapping of peft LoraConfig arguments or None, got {self.lora!r}")


class QAMethod(UnlearningMethod):
    """Base of the output-level baselines: trains on answer tokens through the whole model.

    Subclasses define :meth:`forget_term` and, when ``two_sided``, :meth:`retain_term`; each returns
    ``(loss, terms)``. A micro-batch's loss is the sum of the terms of the sides it holds."""

    Options = QAOptions
    two_sided = False
    #: which sides' items the method encodes (set-up work it needs)
    uses_retain_items = False

    @property
    def needs_tokenizer(self) -> bool:
        return True

    def check_data(self, forget, retain) -> None:
        super().check_data(forget, retain)
        check_qa("forget", forget)
        check_qa("retain", retain)

    def trainable_set(self):
        # output-level methods train through the whole model: their set is not limited by a tap
        return self.options.trainable, "projector", self.options.lora

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.student = full_model_logits(ctx.model)
        self.qa = QAData(ctx.model, ctx.adapter, ctx.tokenizer, ctx.forget,
                         ctx.retain if self.uses_retain_items or self.two_sided else None)

    def activation_bytes(self, batch):
        """Saved activations of the answer log-likelihood forward over ``batch``'s items (the sides
        the method trains on)."""
        fi, ri = batch[0], batch[1]
        examples = [self.qa.forget[i] for i in fi] + ([self.qa.retain[i] for i in ri] if self.two_sided else [])
        return saved_activation_bytes(lambda: self.qa.logp(examples, self.student))

    def forget_term(self, fi: list[int]) -> tuple[torch.Tensor, dict]:
        return ga_loss(*self.qa.logp([self.qa.forget[i] for i in fi], self.student))

    def retain_term(self, ri: list[int]) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def step(self, batch, *, upcoming=None, generator=None):
        fi, ri = batch[0], batch[1]
        parts = []
        if fi:  # interleaved batches leave one side empty on alternate steps
            parts.append(self.forget_term(fi))
        if ri and self.two_sided:
            parts.append(self.retain_term(ri))
        loss, terms = parts[0][0], dict(parts[0][1])
        for value, t in parts[1:]:
            loss = loss + value
            terms.update(t)
        return loss, terms

    def tokens(self, batch) -> int:
        fi, ri = batch[0], batch[1]
        return self.qa.tokens("forget", fi) + (self.qa.tokens("retain", ri) if self.two_sided else 0)
