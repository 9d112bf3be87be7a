"""VKD's options (docs/method.md §2), validated at construction."""

from __future__ import annotations

from dataclasses import dataclass

from ...adapters import check_trainable, parse_tap
from ...ops import METRICS
from ...utils.options import check_types, option
from ...utils.validate import check_choice, check_positive_int
from ..saliency import MaskOptions
from .targets import MOVED_TARGETS, forget_targets, get_forget_target

#: the forget-image augmentation strength ``forget_augment=None`` stands for
DEFAULT_FORGET_AUGMENT = 0.6


@dataclass(frozen=True)
class _VKDFields:
    tap: str = option("vision:feature", "feature tap: 'vision:feature' (the vision block the projector reads), "
                                        "'vision:<block>', 'projector' or 'llm:<layer>' (llm taps need a tokenizer "
                                        "and run the frozen LLM's first layers)")
    llm_tap_prompt: str = option("What is in the image?", "llm taps: the prompt of items without a question")
    trainable: str = option("vision+projector",
                            "trainable set: 'projector', 'projector+vision_last:<K>' or 'vision+projector'")
    lora: dict | None = option(None, "LoRA on the trainable set: peft LoraConfig arguments, "
                                     "e.g. {r: 8, lora_alpha: 16}")
    forget_target: str = option("retain_person",
                                "forget target: 'retain_person' (each forget person is pulled to the teacher "
                                "features of a retain person's images; needs a person -- identity, name or id -- on "
                                "every item, see vkd_fast.data.person_per_image), 'retain_mean' (the mean retain "
                                "features: answers collapse), "
                                "'nearest_retain' (the retain image nearest in pixel space), 'random_retain' (a "
                                "retain image drawn per forget image); see docs/robustness.md for what each "
                                "measured")
    target_people: int = option(1, "retain_person: how many retain people stand in for each forget person (its "
                                    "images take turns among them)")
    match_agreement: bool = option(True, "retain_person: among seeded draws of stand-ins keep the one whose answers "
                                         "agree with the forget people's as often as a random retain person's do on "
                                         "average (needs items that share questions); False = the first draw")
    forget_augment: float | None = option(None, "strength in [0, 1] of a random shift + pixel noise applied to forget "
                                                "images every step (their target does not depend on the view), so "
                                                "the forgetting carries over to unseen images of the person. None = "
                                                "0.6 (the stand-in's answers on unseen portraits too; measured: "
                                                "docs/robustness.md), or 0 for a target that is the image's own "
                                                "features; 0 = off")
    metric: str = option("mse", "distance: 'mse', 'cosine' or 'smooth_l1'")
    lambda_retain: float = option(1.0, "weight of the retain term")
    lambda_forget: float = option(1.0, "weight of the forget term")
    lambda_npo: float = option(0.0, "weight of an optional NPO term on forget answers (needs QA items, a tokenizer)")
    lambda_ce: float = option(0.0, "weight of an optional CE term on retain answers (needs QA items, a tokenizer)")
    npo_beta: float = option(0.4, "the NPO term's inverse temperature beta")
    mask: bool = option(False, "saliency mask (the mask_* options): needs QA items and a tokenizer, since the Fisher "
                               "estimates come from answer likelihoods. The mask gates gradients; a nonzero "
                               "weight_decay still shrinks masked-out weights")
    teacher: str = option("cache", "'cache' (teacher features computed once, served from host memory) or 'live' (a "
                                   "frozen copy of the model computes them every step: the naive VKD, for tests and "
                                   "benchmarks)")
    teacher_batch_size: int = option(32, "images per batch when the teacher cache is built")
    cache_dtype: str = option("float32", "teacher cache dtype: 'float32', 'bfloat16' or 'float16'")


@dataclass(frozen=True)
class VKDOptions(MaskOptions, _VKDFields):
    """VKD's options (the saliency mask's come last, from :class:`~vkd_fast.methods.saliency.MaskOptions`)."""

    def __post_init__(self) -> None:
        check_types(self)
        super().__post_init__()
        parse_tap(self.tap)
        check_trainable(self.trainable)
        if self.lora is not None and not isinstance(self.lora, dict):
            raise ValueError(f"lora must be a mapping of peft LoraConfig arguments or None, got {self.lora!r}")
        if self.forget_target in MOVED_TARGETS and self.forget_target not in forget_targets():
            raise ValueError(f"forget_target {self.forget_target!r} is a research variant: it lives in "
                             f"{MOVED_TARGETS[self.forget_target]}; import vkd_fast.experimental (CLI: --plugin "
                             "vkd_fast.experimental) and run that method")
        target = get_forget_target(self.forget_target)
        target.check_options(self)
        check_choice("metric", self.metric, METRICS)
        check_choice("teacher", self.teacher, ("cache", "live"))
        check_choice("cache_dtype", self.cache_dtype, ("float32", "bfloat16", "float16"))
        for name in ("teacher_batch_size", "target_people"):
            check_positive_int(name, getattr(self, name))
        if not self.npo_beta > 0:
            raise ValueError(f"npo_beta must be > 0, got {self.npo_beta!r}")
        for name in ("lambda_retain", "lambda_forget", "lambda_npo", "lambda_ce"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.forget_augment is None:
            object.__setattr__(self, "forget_augment", 0.0 if target.uses_own_features else DEFAULT_FORGET_AUGMENT)
        if not 0 <= self.forget_augment <= 1:
            raise ValueError(f"forget_augment must be in [0, 1], got {self.forget_augment!r}")
        if self.forget_augment > 0 and target.uses_own_features:
            others = [n for n in forget_targets() if not get_forget_target(n).uses_own_features]
            raise ValueError(f"forget_augment needs a target that is not the image's own ({', '.join(others)}): with "
                             f"{self.forget_target!r} the forget target is the image's own teacher features, which "
                             "augmentation would change")

    @property
    def llm_tap(self) -> bool:
        """Whether the tap runs the language model (``llm:j``)."""
        return parse_tap(self.tap).uses_llm

    @property
    def output_terms(self) -> bool:
        """Whether VKD adds its optional output-level terms (NPO / CE)."""
        return self.lambda_npo > 0 or self.lambda_ce > 0

    @property
    def answer_sides(self) -> tuple[str, ...]:
        """The sides ("forget", "retain") whose items must carry a question and an answer: the terms
        and the mask that score answers through the frozen LLM (an options subclass that adds such a
        term extends it, with :attr:`answer_terms` and :attr:`single_process_terms`)."""
        return ("forget",) * (self.mask or self.lambda_npo > 0) + ("retain",) * (self.mask or self.lambda_ce > 0)

    @property
    def answer_terms(self) -> str:
        """The options that score answers, for errors."""
        return "lambda_npo / lambda_ce / mask"

    @property
    def single_process_terms(self) -> str:
        """The terms not supported in multi-process runs when on (their forward would bypass DDP's
        gradient averaging), for the error; "" when none is on."""
        return "lambda_npo / lambda_ce" if self.output_terms else ""

    @property
    def scores_text(self) -> bool:
        """Whether anything VKD computes runs the frozen LLM on answers (output terms, the mask) --
        such runs need QA items and a tokenizer."""
        return bool(self.answer_sides)
