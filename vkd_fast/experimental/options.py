"""The options of ``vkd_experimental``: VKD's (:class:`~vkd_fast.methods.VKDOptions`) and the research
variants' (the package docstring), validated at construction."""

from __future__ import annotations

from dataclasses import dataclass

from ..methods.vkd import VKDOptions
from ..utils.options import option
from ..utils.validate import check_positive_int


@dataclass(frozen=True)
class VKDExperimentalOptions(VKDOptions):
    """VKD's options and the research variants' (after them)."""

    forget_target: str = option("retain_person",
                                "forget target: VKD's ('retain_person', 'retain_mean', 'nearest_retain', "
                                "'random_retain'), or 'misdirect' (a fixed random direction, misdirect_scale mean "
                                "token norms long) or 'repel' (a bounded hinge away from the image's own teacher "
                                "features; see docs/robustness.md for what each measured)")
    misdirect_scale: float = option(1.0, "misdirect anchor length, in mean teacher token norms")
    repel_margin: float = option(1.0, "repel: hinge margin of the distance to the own teacher features")
    repel_noise: float = option(0.01, "repel: relative std of the noise that breaks the student=teacher symmetry")
    shrink_perturb: float = option(0.0, "shrink-perturb before distilling (UNDO): every trainable weight matrix "
                                        "becomes (1 - a) w + a * perturb_scale * std(w) * noise (seeded), so the "
                                        "student starts away from the teacher and is re-distilled from its cached "
                                        "features; 0 = off")
    perturb_scale: float = option(1.0, "shrink_perturb: the noise's size, in each matrix's standard deviation")
    lambda_meta: float = option(0.0, "weight of the attack-simulation term (meta.py): a simulated vision-side "
                                     "relearning attack on some forget question kinds must not raise the others' "
                                     "answer likelihood; needs QA forget items and a tokenizer; 0 = off")
    meta_steps: int = option(3, "simulated attack: at most this many sign-gradient steps (drawn 1..meta_steps)")
    meta_lr: float = option(1e-3, "simulated attack: the largest step size (drawn log-uniformly down to a tenth)")
    meta_every: int = option(1, "simulate an attack every this many steps")
    meta_batch: int = option(8, "simulated attack: forget questions taught and tested per simulation")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("meta_steps", "meta_every", "meta_batch"):
            check_positive_int(name, getattr(self, name))
        if self.lambda_meta < 0 or not self.meta_lr > 0:
            raise ValueError(f"lambda_meta must be >= 0 and meta_lr > 0, got {self.lambda_meta!r}, {self.meta_lr!r}")
        for name in ("misdirect_scale", "repel_margin"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.repel_noise < 0:
            raise ValueError(f"repel_noise must be >= 0, got {self.repel_noise!r}")
        if not 0 <= self.shrink_perturb < 1:
            raise ValueError(f"shrink_perturb must be in [0, 1), got {self.shrink_perturb!r}")
        if self.perturb_scale < 0:
            raise ValueError(f"perturb_scale must be >= 0, got {self.perturb_scale!r}")
        if self.shrink_perturb > 0 and self.lora is not None:
            raise ValueError("shrink_perturb changes the trained weights themselves; it does not combine with lora")

    @property
    def answer_sides(self) -> tuple[str, ...]:
        sides = super().answer_sides  # the attack simulation scores forget answers
        return sides if self.lambda_meta <= 0 or "forget" in sides else ("forget",) + sides

    @property
    def answer_terms(self) -> str:
        return super().answer_terms + " / lambda_meta"

    @property
    def single_process_terms(self) -> str:
        return "lambda_npo / lambda_ce / lambda_meta" if self.output_terms or self.lambda_meta > 0 else ""
