"""``UnlearnConfig``: every option of an unlearning run, validated at construction."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from ..ops import METRICS, check_choice, check_positive_int

FORGET_TARGETS = ("retain_mean", "nearest_retain", "misdirect", "repel")


def _opt(default, text: str):
    """A config field with its one-line documentation (the CLI's --help reads it)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class UnlearnConfig:
    """Options of :func:`vkd_fast.unlearn` (METHOD.md section 2 for the VKD ones); every field carries
    its documentation in ``dataclasses.fields(UnlearnConfig)[i].metadata["help"]``."""

    #: options that may differ when a run is resumed (they do not change the trajectory)
    RESUMABLE_CHANGES = ("log_path", "log_every", "save_every", "output_dir")

    tap: str = _opt("vision:feature", "feature tap: 'vision:feature' (the vision block the projector reads), "
                                      "'vision:<block>', 'projector' or 'llm:<layer>' (llm taps need a tokenizer and "
                                      "run the frozen LLM's first layers)")
    llm_tap_prompt: str = _opt("What is in the image?", "llm taps: the prompt of items without a question")
    trainable: str = _opt("vision+projector",
                          "trainable set: 'projector', 'projector+vision_last:<K>' or 'vision+projector'")
    lora: dict | None = _opt(None, "LoRA on the trainable set: peft LoraConfig arguments, e.g. {r: 8, lora_alpha: 16}")
    forget_target: str = _opt("retain_mean", "forget target: 'retain_mean', 'nearest_retain' (the teacher features of "
                                             "the retain image nearest in pixel space: who a model that never saw the "
                                             "forget person would take them for; less answer collapse), 'misdirect' "
                                             "or 'repel'")
    misdirect_scale: float = _opt(1.0, "misdirect anchor length, in mean teacher token norms")
    repel_margin: float = _opt(1.0, "repel: hinge margin of the distance to the own teacher features")
    repel_noise: float = _opt(0.01, "repel: relative std of the noise that breaks the student=teacher symmetry")
    forget_augment: float = _opt(0.0, "vkd: strength in [0, 1] of a random shift + pixel noise applied to forget "
                                      "images every step (their target does not depend on the view), meant to carry "
                                      "the forgetting over to unseen images; no clear gain measured on the toy world. "
                                      "0 = off")
    metric: str = _opt("mse", "distance: 'mse', 'cosine' or 'smooth_l1'")
    lambda_retain: float = _opt(1.0, "weight of the retain term")
    lambda_forget: float = _opt(1.0, "weight of the forget term")
    lambda_npo: float = _opt(0.0, "vkd: weight of an optional NPO term on forget answers (needs QA items, a tokenizer)")
    lambda_ce: float = _opt(0.0, "vkd: weight of an optional CE term on retain answers (needs QA items, a tokenizer)")
    baseline_trainable: str = _opt("language_model", "what ga / grad_diff / kl_min / npo update: 'language_model' "
                                   "(W and its head), 'all', or a visual set (mmunlearner always uses 'all')")
    npo_beta: float = _opt(0.4, "npo: inverse temperature beta")
    mask: bool = _opt(False, "saliency mask for vkd too (mmunlearner always uses it): needs QA items and a "
                             "tokenizer, since the Fisher estimates come from answer likelihoods. The mask gates "
                             "gradients; a nonzero weight_decay still shrinks masked-out weights")
    mask_threshold: float = _opt(1.0, "saliency mask (mmunlearner): update weights whose forget/retain Fisher "
                                      "ratio is >= this")
    mask_ratio: float | None = _opt(None, "saliency mask: instead update the top fraction of weights by that ratio")
    mask_batches: int = _opt(4, "saliency mask: batches per side for the Fisher estimates")
    steps: int = _opt(300, "optimisation steps")
    batch_size: int = _opt(8, "images per optimiser step on each side (forget and retain), over all processes")
    batch_mode: str = _opt("mixed", "'mixed' (forget and retain in every micro-batch) or 'interleaved' (alternating; "
                                    "vkd, grad_diff, kl_min)")
    grad_accum: int = _opt(1, "micro-batches the step's batch is split into (less memory; loss averaged)")
    lr: float = _opt(1e-3, "AdamW learning rate")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    warmup_steps: int = _opt(0, "linear warm-up steps, then cosine decay")
    min_lr_ratio: float = _opt(0.1, "final learning rate as a fraction of lr")
    grad_clip: float = _opt(1.0, "max global gradient norm (0 = off)")
    seed: int = _opt(0, "seed of the batch plan and of every random draw")
    device: str | None = _opt(None, "where to train: e.g. 'cuda:0'. VKD with projector / vision taps moves only the "
                                   "vision tower and projector there (the LLM stays put); otherwise the whole model. "
                                   "None = leave the model where it is")
    shard_llm: bool = _opt(False, "multi-process runs: shard the frozen language model over the processes with "
                                  "FSDP2 (fully_shard) to save memory (useful with llm taps and output terms)")
    amp: str = _opt("bf16", "autocast on CUDA: 'bf16' or 'off' (CPU runs are always fp32)")
    teacher_batch_size: int = _opt(32, "images per batch when the teacher cache is built")
    cache_dtype: str = _opt("float32", "teacher cache dtype: 'float32', 'bfloat16' or 'float16'")
    log_path: str | None = _opt(None, "JSON-lines step log (None = no file)")
    log_every: int = _opt(10, "steps between log lines")
    output_dir: str | None = _opt(None, "run folder: run.json, teacher cache, checkpoint-<step>/ (None = none)")
    save_every: int = _opt(0, "steps between checkpoints (0 = only the last step)")

    def __post_init__(self) -> None:
        check_choice("forget_target", self.forget_target, FORGET_TARGETS)
        check_choice("metric", self.metric, METRICS)
        check_choice("cache_dtype", self.cache_dtype, ("float32", "bfloat16", "float16"))
        check_choice("amp", self.amp, ("bf16", "off"))
        check_choice("batch_mode", self.batch_mode, ("mixed", "interleaved"))
        if not isinstance(self.tap, str) or not re.match(r"^(projector|vision:(-?\d+|feature)|llm:-?\d+)$", self.tap):
            raise ValueError(f"tap must be 'vision:feature', 'vision:<block>', 'projector' or 'llm:<layer>', "
                             f"got {self.tap!r}")
        for name in ("steps", "batch_size", "teacher_batch_size", "log_every", "mask_batches", "grad_accum"):
            check_positive_int(name, getattr(self, name))
        for name in ("lr", "misdirect_scale", "repel_margin", "npo_beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("lambda_retain", "lambda_forget", "lambda_npo", "lambda_ce", "weight_decay", "grad_clip",
                     "warmup_steps", "repel_noise", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.mask_ratio is not None and not 0 < self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1] or None, got {self.mask_ratio!r}")
        if not 0 <= self.forget_augment <= 1:
            raise ValueError(f"forget_augment must be in [0, 1], got {self.forget_augment!r}")
        if self.forget_augment > 0 and self.forget_target == "repel":
            raise ValueError("forget_augment needs a target that is not the image's own (nearest_retain, retain_mean "
                             "or misdirect): with 'repel' the "
                             "forget target is the image's own teacher features, which augmentation would change")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")

    @property
    def llm_tap(self) -> bool:
        """Whether the tap runs the language model (``llm:j``)."""
        return self.tap.startswith("llm:")

    @property
    def output_terms(self) -> bool:
        """Whether VKD adds its optional output-level terms (NPO / CE)."""
        return self.lambda_npo > 0 or self.lambda_ce > 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def trajectory_dict(self) -> dict:
        """The options that determine the run's trajectory (what a resumed run must share)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE_CHANGES}
