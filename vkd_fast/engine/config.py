"""``UnlearnConfig``: every option of an unlearning run, validated at construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..ops import METRICS, check_choice

FORGET_TARGETS = ("retain_mean", "misdirect", "repel")


@dataclass
class UnlearnConfig:
    """Options of :func:`vkd_fast.unlearn` (METHOD.md section 2 for the VKD ones).

    VKD: ``tap`` (``projector`` | ``vision:i``; ``llm:j`` arrives with the engine's prompt batching),
    ``trainable`` (``projector`` | ``projector+vision_last:K`` | ``vision+projector``), ``lora``
    (peft LoraConfig kwargs or None), ``forget_target`` (``retain_mean`` | ``misdirect`` | ``repel``),
    ``misdirect_scale``, ``repel_margin``, ``repel_noise`` (symmetry breaker of ``repel``),
    ``metric`` (``mse`` | ``cosine`` | ``smooth_l1``),
    ``lambda_retain``, ``lambda_forget``.
    Loop: ``steps``, ``batch_size`` (images per side per step: forget and retain each), ``lr``,
    ``weight_decay``, ``warmup_steps`` (then cosine decay to ``min_lr_ratio`` x lr), ``grad_clip``
    (max global norm, 0 = off), ``seed``, ``teacher_batch_size`` (cache build), ``cache_dtype``
    (``float32`` | ``bfloat16`` | ``float16``), ``log_path`` (JSON lines, or None), ``log_every``.
    Checkpoints: ``output_dir`` (the run's folder: its config, the teacher cache, ``checkpoint-<step>``
    folders) and ``save_every`` (steps between checkpoints; 0 = only the last step).
    """

    #: options that may differ when a run is resumed (they do not change the trajectory)
    RESUMABLE_CHANGES = ("log_path", "log_every", "save_every", "output_dir")

    method: str = "vkd"
    tap: str = "projector"
    trainable: str = "vision+projector"
    lora: dict | None = None
    forget_target: str = "retain_mean"
    misdirect_scale: float = 1.0
    repel_margin: float = 1.0
    repel_noise: float = 0.01
    metric: str = "mse"
    lambda_retain: float = 1.0
    lambda_forget: float = 1.0
    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    teacher_batch_size: int = 32
    cache_dtype: str = "float32"
    log_path: str | None = None
    log_every: int = 10
    output_dir: str | None = None
    save_every: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("forget_target", self.forget_target, FORGET_TARGETS)
        check_choice("metric", self.metric, METRICS)
        check_choice("cache_dtype", self.cache_dtype, ("float32", "bfloat16", "float16"))
        if not isinstance(self.tap, str) or not (self.tap == "projector" or self.tap.startswith("vision:")):
            raise ValueError(f"tap must be 'projector' or 'vision:<block>' for this engine, got {self.tap!r} "
                             "(llm:j taps need prompt batches, not supported by the loop yet)")
        for name in ("steps", "batch_size", "teacher_batch_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("lr", "misdirect_scale", "repel_margin"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("lambda_retain", "lambda_forget", "weight_decay", "grad_clip", "warmup_steps", "repel_noise",
                     "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def trajectory_dict(self) -> dict:
        """The options that determine the run's trajectory (what a resumed run must share)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE_CHANGES}
