"""VKD (docs/method.md §2): retain rows keep the teacher's features, forget rows move to a target
that carries no knowledge of the forget person (targets.py); only V and P train.

    L = lambda_r * mean_retain_rows d(S, T) + lambda_f * forget_term(d(S, A))

One step: the student's rows come forget images first, then retain images; the target table is
built in the same order (an anchor policy puts its fixed anchor in front of the gathered retain
rows) and one fused-loss call computes every row's distance and gradient, with per-row weights
1/n_side (a mean per side) and ``reduction="none"``; the weighted row losses are then summed per
side and combined with the lambdas. Row counts come from the teacher cache (host memory), so the
step makes no device-to-host synchronisation.

Extension points (what :mod:`vkd_fast.experimental` builds its research variants on, instead of
branching in every step): :meth:`VKD.setup` (override, call ``super().setup(ctx)`` first: e.g. move
the weights before training, after the teacher's features are cached), :meth:`VKD.extra_terms` (extra
loss terms of a step, begun before the step's own work), the options' :attr:`~VKDOptions.answer_sides`
(what a term needs of the items) and the forget-target registry (targets.py).
"""

from __future__ import annotations

import torch

from ...cache import ActivationCache
from ...functional import feature_distill_loss
from ...utils.text import answer_ce, encode_prompt
from ..base import UnlearningMethod, entry_generator
from ..inputs import check_qa
from ..measure import saved_activation_bytes
from ..npo import npo_loss
from ..qa import QAData, full_model_logits
from ..saliency import qa_saliency_masks
from .augment import augment_forget_pixels
from .options import VKDOptions
from .targets import get_forget_target
from .teacher import CachedTeacher, LiveTeacher, build_teacher_cache, collate_inputs

TEACHER_FILE = "teacher.vkdc"


def _inverse(n: int) -> float:
    """fp32(1 / n), rounded once in float32 as the fused kernel's own ``1.0f / N`` is."""
    return float(torch.ones((), dtype=torch.float32) / torch.tensor(float(n), dtype=torch.float32))


class VKD(UnlearningMethod):
    """Visual knowledge distillation; options: :class:`VKDOptions`."""

    Options = VKDOptions
    #: with forget_augment the retain images need more than 300 steps to get back within the retain bar
    #: (Bars.retain_tolerance) of the model before unlearning (measured on five toy worlds: docs/robustness.md)
    default_steps = 600

    @property
    def needs_tokenizer(self) -> bool:
        return self.options.llm_tap or self.options.scores_text

    @property
    def needs_language_model(self) -> bool:
        return self.options.llm_tap or self.options.scores_text

    def check(self, forget, retain, tokenizer=None, world_size: int = 1) -> None:
        """The input checks before any work: a tokenizer where text is scored, question-answer items
        for the output-level terms, and :meth:`check_data`."""
        o = self.options
        if o.llm_tap and tokenizer is None:
            raise ValueError(f"tap {o.tap!r} runs the language model on a prompt per image and needs tokenizer=...")
        sides = o.answer_sides
        if sides:
            if tokenizer is None:
                raise ValueError(f"{self.name or 'vkd'} with {o.answer_terms} trains on answer tokens and needs "
                                 "tokenizer=...")
            for name in sides:
                check_qa(name, forget if name == "forget" else retain)
        if world_size > 1 and o.single_process_terms:
            raise ValueError(f"{self.name or 'vkd'}'s {o.single_process_terms} terms are not supported in "
                             "multi-process runs yet (their forward would bypass DDP's gradient averaging)")
        self.check_data(forget, retain)

    def check_data(self, forget, retain) -> None:
        """What the forget target needs of the items: ``retain_person`` (the default) a person --
        ``identity`` / ``name`` / ``id`` -- on every forget and retain item
        (:meth:`~vkd_fast.methods.vkd.targets.RetainPerson.check`)."""
        super().check_data(forget, retain)
        get_forget_target(self.options.forget_target).check(forget, retain)

    def trainable_set(self):
        return self.options.trainable, self.options.tap, self.options.lora

    # ------------------------------------------------------------------ set-up
    def setup(self, ctx) -> None:
        super().setup(ctx)
        o, adapter = self.options, ctx.adapter
        self.seed, self.tokenizer, self.items = ctx.seed, ctx.tokenizer, (ctx.forget, ctx.retain)
        items = ctx.forget + ctx.retain
        self.inputs = [adapter.preprocess([it["image"]]) for it in items]
        if o.llm_tap:
            # hidden states at image positions depend on the text before them: each image gets its prompt
            # (the item's question, else llm_tap_prompt), the same for teacher and student
            for inp, it in zip(self.inputs, items):
                n = adapter.num_image_tokens(**inp)[0]
                ids = torch.tensor([encode_prompt(adapter, ctx.tokenizer, it.get("question") or o.llm_tap_prompt, n)])
                inp.update(input_ids=ids, attention_mask=torch.ones_like(ids))
        nf, nr = len(ctx.forget), len(ctx.retain)
        self.f_keys, self.r_keys = list(range(nf)), list(range(nf, nf + nr))
        live = LiveTeacher(ctx.model, o.tap, self.inputs) if o.teacher == "live" else None
        path = ctx.run_dir / TEACHER_FILE if ctx.run_dir is not None else None
        if path is not None and path.exists():
            self.cache = ActivationCache.load(path)
        else:
            self.cache = build_teacher_cache(adapter, self.inputs, self.f_keys + self.r_keys, o.tap,
                                             o.teacher_batch_size, o.cache_dtype, progress=ctx.progress)
            if path is not None:
                self.cache.save(path)
        self.rows = [self.cache.rows(k) for k in self.f_keys + self.r_keys]  # visual tokens per image
        self.target = get_forget_target(o.forget_target)(self)
        self.source = live if live is not None else CachedTeacher(self.cache, lambda: self.device)
        self._anchor = None  # the anchor on the training device, placed on first use
        self._positions: dict[int, torch.Tensor] = {}
        self.student = lambda **image_kwargs: adapter.visual_features(tap=o.tap, **image_kwargs)
        self.qa = None
        if o.output_terms:  # optional output-level terms through the frozen LLM
            self.qa = QAData(ctx.model, adapter, ctx.tokenizer, ctx.forget if o.lambda_npo > 0 else None,
                             ctx.retain if o.lambda_ce > 0 else None)
            self.qa_student = full_model_logits(ctx.model)
            if o.lambda_npo > 0:
                self.ref = self.qa.sequence_logp(self.qa_student)

    def saliency_masks(self, named, plan):
        if not self.options.mask:
            return None
        qa = QAData(self.model, self.adapter, self.tokenizer, *self.items)
        return qa_saliency_masks(qa, full_model_logits(self.model), named, plan, self.options)

    # ------------------------------------------------------------------ steps
    @property
    def device(self) -> torch.device:
        return next(self.adapter.vision_tower.parameters()).device

    def _keys(self, batch) -> list[int]:
        """Cache keys of a batch's target rows, in student row order (forget targets, then retain)."""
        fi, ri = batch[0], batch[1]
        return self.target.keys(fi) + [self.r_keys[i] for i in ri]

    def _n_rows(self, keys, indices) -> int:
        return sum(self.rows[keys[i]] for i in indices)

    def tokens(self, batch) -> int:
        return self._n_rows(self.f_keys, batch[0]) + self._n_rows(self.r_keys, batch[1])

    def _table(self, gathered, fi, n_retain, dtype, device):
        """(target table, target_index or None) in student row order."""
        anchor = self.target.anchor
        if anchor is None:
            return gathered.to(dtype), None
        if self._anchor is None or self._anchor.device != device or self._anchor.dtype != dtype:
            self._anchor = anchor.to(device, dtype)
        for k in (self.f_keys[i] for i in fi):
            if k not in self._positions or self._positions[k].device != device:
                self._positions[k] = self.target.anchor_rows(self.rows[k]).to(device)
        parts = [self._positions[self.f_keys[i]] for i in fi]
        t = self._anchor.shape[0]
        parts.append(torch.arange(t, t + n_retain, device=device))
        table = self._anchor if gathered is None else torch.cat([self._anchor, gathered.to(dtype)])
        return table, torch.cat(parts)

    def activation_bytes(self, batch):
        """The student forward's saved activations for ``batch`` (parameters and repeats not counted)."""
        fi, ri = batch[0], batch[1]
        images = [self.inputs[self.f_keys[i]] for i in fi] + [self.inputs[self.r_keys[i]] for i in ri]
        collated = collate_inputs(self.adapter, images)
        return saved_activation_bytes(lambda: self.student(**{k: v.to(self.device) for k, v in collated.items()}))

    def extra_terms(self, batch, generator):
        """Extension point: extra loss terms of one step. Called first in :meth:`step`, before the step's
        own random draws and the student's forward (so it may move the weights and restore them, and its
        draws from ``generator`` come first); returns None (the default: no extra term) or a function
        that, called once the step's own loss is complete, gives ``{name: (term, logged)}`` -- each
        ``term`` is added to the loss in order and ``logged`` (detached) is reported as ``name``."""
        return None

    def step(self, batch, *, upcoming=None, generator=None):
        fi, ri = batch[0], batch[1]
        o = self.options
        extra = self.extra_terms(batch, generator)
        images = [self.inputs[self.f_keys[i]] for i in fi] + [self.inputs[self.r_keys[i]] for i in ri]
        collated = collate_inputs(self.adapter, images)
        if o.forget_augment > 0 and fi:  # the target does not depend on the view: any view may be used
            # each image's view is keyed on its place in the run: the same however the batch is split
            slots = batch[2] if len(batch) > 2 else ()  # a plain (forget, retain) pair has none
            views = [entry_generator(generator, s) for s in slots] if slots and generator is not None else generator
            collated = augment_forget_pixels(collated, len(fi), o.forget_augment, views, self.adapter)
        device = self.device
        student, _ = self.student(**{k: v.to(device, non_blocking=True) for k, v in collated.items()})
        n_f = self._n_rows(self.f_keys, fi)
        n_r = student.shape[0] - n_f
        keys = self._keys(batch)
        gathered = self.source.take(keys, self._keys(upcoming) if upcoming is not None else None) if keys else None
        table, index = self._table(gathered, fi, n_r, student.dtype, student.device)
        rows = student
        if n_f and self.target.perturbs:
            rows = torch.cat([self.target.perturb(student[:n_f], generator), student[n_f:]])
        w_f = _inverse(n_f) if n_f and self.target.mean_rows else 1.0
        weight = torch.cat([torch.full((n_f,), w_f, dtype=torch.float32, device=student.device),
                            torch.full((n_r,), _inverse(n_r) if n_r else 0.0, dtype=torch.float32,
                                       device=student.device)])
        # indices built here are in range by construction: no range check (a device sync on CUDA)
        losses = feature_distill_loss(rows, table, target_index=index, weight=weight, metric=o.metric,
                                      reduction="none", check_indices=False)
        zero = student.new_zeros((), dtype=torch.float32)  # a side absent from the batch (interleaved mode)
        forget = self.target.term(losses[:n_f]) if n_f else zero
        retain = losses[n_f:].sum() if n_r else zero
        loss = o.lambda_retain * retain + o.lambda_forget * forget
        terms = {"loss_retain": retain.detach(), "loss_forget": forget.detach()}
        if self.qa is not None:  # optional output-level terms: a full forward through the frozen LLM
            if o.lambda_npo > 0 and fi:
                f_logp, f_mask = self.qa.logp([self.qa.forget[i] for i in fi], self.qa_student)
                npo, _ = npo_loss(f_logp, f_mask, self.ref[fi], o.npo_beta)
                loss = loss + o.lambda_npo * npo
                terms["loss_npo"] = npo.detach()
            if o.lambda_ce > 0 and ri:
                retain_ce = answer_ce(*self.qa.logp([self.qa.retain[i] for i in ri], self.qa_student))
                loss = loss + o.lambda_ce * retain_ce
                terms["loss_ce"] = retain_ce.detach()
        if extra is not None:
            for name, (term, logged) in extra().items():
                loss = loss + term
                terms[name] = logged
        return loss, terms

    def close(self) -> dict:
        self.cache.close()
        return self.cache.stats()
