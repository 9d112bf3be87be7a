"""The research forget targets (registered by :mod:`vkd_fast.experimental`; they read options of
:class:`~vkd_fast.experimental.VKDExperimentalOptions`, so only ``vkd_experimental`` runs them):

* ``misdirect`` -- A_t = c u, u a fixed random unit vector (an anchor);
* ``repel`` -- a bounded hinge away from the image's own teacher features.
"""

from __future__ import annotations

import torch

from ..cache import ActivationCache
from ..methods.vkd.targets import AnchorTarget, ForgetTarget, entry_rows
from .options import VKDExperimentalOptions

_OFFERED_BY = "vkd_fast.experimental (method vkd_experimental)"


class Misdirect(AnchorTarget):
    options_class = VKDExperimentalOptions
    offered_by = _OFFERED_BY

    def make_anchor(self, vkd):
        return misdirect_anchor(vkd.cache, vkd.r_keys, max(vkd.cache.rows(k) for k in vkd.f_keys),
                                vkd.options.misdirect_scale, vkd.seed)


class Repel(ForgetTarget):
    """``max(0, margin - d(S(x), T(x)))`` per forget row, averaged. At the start the student equals
    the teacher, where a squared distance has exactly zero gradient, so the forget rows are compared
    after adding seeded Gaussian noise of std ``repel_noise`` (relative to the rows' RMS)."""

    options_class = VKDExperimentalOptions
    offered_by = _OFFERED_BY
    uses_own_features = True
    mean_rows = False
    perturbs = True

    def __init__(self, vkd):
        super().__init__(vkd)
        self.f_keys, self.margin, self.noise = vkd.f_keys, vkd.options.repel_margin, vkd.options.repel_noise

    def keys(self, forget_indices):
        return [self.f_keys[i] for i in forget_indices]

    def perturb(self, forget_rows, generator):
        noise = torch.randn(forget_rows.shape, generator=generator, dtype=torch.float32).to(forget_rows)
        scale = self.noise * forget_rows.detach().pow(2).mean().sqrt()
        return forget_rows + scale * noise

    def term(self, row_losses):
        return torch.relu(self.margin - row_losses).mean()


def misdirect_anchor(cache: ActivationCache, retain_keys: list[int], max_tokens: int, scale: float,
                     seed: int) -> torch.Tensor:
    """A_t = c u: u a fixed random unit vector (seeded), c = scale x mean teacher token norm (retain)."""
    norm = torch.cat([torch.linalg.vector_norm(rows.float(), dim=1) for rows in entry_rows(cache, retain_keys)]).mean()
    u = torch.randn(cache.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = (u / torch.linalg.vector_norm(u)).float()
    return (scale * norm * u).expand(max_tokens, -1).contiguous()
