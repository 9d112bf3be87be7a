"""A new unlearning method in one file (docs/extending.md): "shrink_projector" pulls the forget images'
projector tokens to zero and keeps the retain images' as they were. Registering it makes it a method
like the built-in ones:

    import vkd_fast as vf, new_method              # Python: vf.unlearn(..., method="shrink_projector")
    vkd-fast unlearn MODEL_DIR --plugin examples/extending/new_method.py --method shrink_projector \\
        shrink_projector.scale=2 --forget ... --retain ... --output-dir run
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import vkd_fast as vf
from vkd_fast.utils.options import option


@dataclass(frozen=True)
class ShrinkOptions:
    """The method's options: documented fields (shown by --help), checked once, here."""

    scale: float = option(1.0, "weight of the forget term")

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale!r}")


class ShrinkProjector(vf.methods.UnlearningMethod):
    """Pull forget images' projector tokens to zero; keep retain images' as they were."""

    Options = ShrinkOptions

    @property
    def needs_language_model(self) -> bool:  # only the vision tower and projector are loaded and run
        return False

    def trainable_set(self):
        return "projector", "projector", None  # (what trains, the feature tap, LoRA settings)

    def setup(self, ctx):
        super().setup(ctx)
        self.forget = [ctx.adapter.preprocess([it["image"]]) for it in ctx.forget]
        self.retain = [ctx.adapter.preprocess([it["image"]]) for it in ctx.retain]
        # the forward through which gradients flow (multi-process runs wrap it in DDP)
        self.student = lambda **kw: ctx.adapter.visual_features(tap="projector", **kw)[0]
        with torch.no_grad():
            self.kept = [self.student(**x) for x in self.retain]

    def step(self, batch, *, upcoming=None, generator=None):
        """One micro-batch (indices into forget / retain) -> (loss, {term: detached value})."""
        forget = torch.stack([self.student(**self.forget[i]).pow(2).mean() for i in batch.forget]).mean()
        retain = torch.stack([(self.student(**self.retain[i]) - self.kept[i]).pow(2).mean()
                              for i in batch.retain]).mean()
        return self.options.scale * forget + retain, {"forget": forget.detach(), "retain": retain.detach()}


vf.register_method("shrink_projector", ShrinkProjector)
