"""``UnlearnConfig``: the trainer's options (the method's own are its ``Options``), validated at
construction; every field carries its documentation in ``dataclasses.fields(UnlearnConfig)[i].metadata["help"]``."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..utils.devices import check_device_spec
from ..utils.options import check_types, option, to_dict
from ..utils.validate import check_choice, check_positive_int


@dataclass(frozen=True)
class UnlearnConfig:
    """Options of the trainer behind :func:`vkd_fast.unlearn`, whatever the method."""

    #: options that may differ when a run is resumed (they do not change the trajectory)
    RESUMABLE_CHANGES = ("log_path", "log_every", "save_every", "output_dir")

    steps: int | None = option(None, "optimisation steps (None = the method's own default_steps: 600 for vkd and "
                                      "vkd_robust, 300 for the others)")
    batch_size: int = option(8, "images per optimiser step on each side (forget and retain), over all processes")
    batch_mode: str = option("mixed", "'mixed' (forget and retain in every micro-batch) or 'interleaved' "
                                      "(alternating, for methods that use both sides: vkd, grad_diff, kl_min)")
    grad_accum: int = option(1, "micro-batches the step's batch is split into (less memory; loss averaged)")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_steps: int = option(0, "linear warm-up steps, then cosine decay")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of lr")
    grad_clip: float = option(1.0, "max global gradient norm (0 = off)")
    seed: int = option(0, "seed of the batch plan and of every random draw")
    device: str | None = option("auto", "where to train: 'auto' (the accelerator when torch sees one -- "
                                        "cuda:<LOCAL_RANK> under torchrun -- else the CPU), or e.g. 'cuda:0', "
                                        "'cpu'. A method that never runs the language model (VKD with projector / "
                                        "vision taps) moves only the vision tower and projector there; otherwise the "
                                        "whole model. None = leave the model where it is")
    trained_dtype: str | None = option("float32", "dtype of the tensors that train (a model loaded in bf16 for the "
                                                  "frozen parts keeps full-precision weights and AdamW updates where "
                                                  "it learns; export casts them back to the checkpoint's dtype). "
                                                  "None = as loaded")
    shard_llm: bool = option(False, "multi-process runs: shard the frozen language model over the processes with "
                                    "FSDP2 (fully_shard) to save memory (useful with VKD's llm taps; its output "
                                    "terms are single-process)")
    amp: str = option("bf16", "autocast on CUDA: 'bf16' or 'off' (CPU runs are always fp32)")
    log_path: str | None = option(None, "JSON-lines step log (None = no file)")
    log_every: int = option(10, "steps between log lines (and between the host reads of the step losses)")
    output_dir: str | None = option(None, "run folder: run.json, the method's cached set-up (VKD: teacher cache), "
                                          "checkpoint-<step>/ (None = none)")
    save_every: int = option(0, "steps between checkpoints (0 = only the last step)")

    def __post_init__(self) -> None:
        check_types(self)
        check_choice("amp", self.amp, ("bf16", "off"))
        check_choice("batch_mode", self.batch_mode, ("mixed", "interleaved"))
        for name in ("batch_size", "log_every", "grad_accum"):
            check_positive_int(name, getattr(self, name))
        if self.steps is not None:
            check_positive_int("steps", self.steps)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("weight_decay", "grad_clip", "warmup_steps", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        check_device_spec("device", self.device)
        if self.trained_dtype is not None:
            check_choice("trained_dtype", self.trained_dtype, ("float32", "bfloat16", "float16"))
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")

    def for_method(self, method) -> UnlearnConfig:
        """This config with ``steps`` filled in from ``method.default_steps`` when it is None (what
        :func:`vkd_fast.unlearn` trains with and records)."""
        return self if self.steps is not None else replace(self, steps=method.default_steps)

    def to_dict(self) -> dict:
        return to_dict(self)

    def trajectory_dict(self) -> dict:
        """The options that determine the run's trajectory (what a resumed run must share)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE_CHANGES}
