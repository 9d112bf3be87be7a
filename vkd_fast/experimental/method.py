"""``vkd_experimental``: VKD (:class:`~vkd_fast.methods.VKD`) with the research variants, built on its
extension points: :meth:`setup` (shrink-perturb after the teacher cache) and :meth:`extra_terms` (the
attack-simulation term)."""

from __future__ import annotations

import torch

from ..methods.vkd import VKD
from .meta import AttackSimulator
from .options import VKDExperimentalOptions


class VKDExperimental(VKD):
    """VKD with its research variants (vkd_fast.experimental: lambda_meta, shrink_perturb, misdirect, repel)."""

    Options = VKDExperimentalOptions

    def setup(self, ctx) -> None:
        super().setup(ctx)
        o = self.options
        self.meta = AttackSimulator(ctx.model, ctx.adapter, ctx.tokenizer, ctx.forget, o) if o.lambda_meta > 0 else None
        self._step = 0
        if o.shrink_perturb > 0:  # after the teacher's features are cached: they stay the original model's
            self._shrink_perturb(ctx.adapter.trainable_names(o.trainable, o.tap), ctx.seed)

    @torch.no_grad()
    def _shrink_perturb(self, names: list[str], seed: int) -> None:
        """w <- (1 - a) w + a * b * std(w) * noise on every trainable matrix (biases and norms kept)."""
        a, b = self.options.shrink_perturb, self.options.perturb_scale
        g = torch.Generator().manual_seed(seed)
        params = dict(self.model.named_parameters())
        for name in names:
            w = params[name]
            if w.dim() < 2:
                continue
            scale = a * b * float(w.float().std())  # the matrix's spread before it shrinks
            noise = torch.randn(w.shape, generator=g, dtype=torch.float32).to(w)
            w.mul_(1 - a).add_(noise * scale)

    def extra_terms(self, batch, generator):
        """The attack-simulation term every ``meta_every`` steps that have forget images: simulated
        first (it moves and restores the weights in place), added as a zero-valued term whose gradient
        is the simulated attack's penalty gradient."""
        if self.meta is None or not batch[0]:
            return None
        o = self.options
        simulate = self._step % o.meta_every == 0
        self._step += 1
        if not simulate:
            return None
        params = self.parameters()
        grads, penalty = self.meta.gradients(params, generator)

        def terms():
            term = o.lambda_meta * sum((p * g).sum() - (p.detach() * g).sum() for p, g in zip(params, grads))
            return {"loss_meta": (term, penalty)}

        return terms
