"""``UnlearnResult``: what :func:`vkd_fast.unlearn` returns besides the (in-place) unlearned model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .checkpoint import save_delta


@dataclass
class UnlearnResult:
    model: torch.nn.Module
    method: str
    config: dict  # the trainer's options
    options: dict  # the method's options
    trainable: dict
    history: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    teacher_cache: dict = field(default_factory=dict)  # the method's close() statistics (VKD: its teacher cache)
    start_step: int = 0

    def save_delta(self, path) -> None:
        """Write only the trained tensors (safetensors); ``vkd_fast.engine.load_delta`` applies them."""
        save_delta(self.model, self.trainable["names"], path,
                   metadata={"method": self.method, "config": self.config, "options": self.options})

    def save_pretrained(self, directory) -> None:
        """Write the whole unlearned model with transformers' ``save_pretrained`` (loads back with
        ``from_pretrained``). A LoRA run has adapter layers inside the model: export its delta instead."""
        if self.trainable.get("lora"):
            raise NotImplementedError("save_pretrained of a LoRA run is not supported yet: use save_delta")
        self.model.save_pretrained(directory)
