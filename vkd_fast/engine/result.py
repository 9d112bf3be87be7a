"""``UnlearnResult``: what :func:`vkd_fast.unlearn` returns besides the (in-place) unlearned model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .run_folder import save_delta


@dataclass
class UnlearnResult:
    model: torch.nn.Module
    method: str
    config: dict  # the trainer's options
    options: dict  # the method's options
    trainable: dict
    history: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    method_stats: dict = field(default_factory=dict)  # what the method reported when it closed (its own statistics)
    start_step: int = 0

    def save_delta(self, path) -> None:
        """Write only the trained tensors (safetensors); ``vkd_fast.engine.load_delta`` applies them."""
        save_delta(self.model, self.trainable["names"], path,
                   metadata={"method": self.method, "config": self.config, "options": self.options})

    def save_pretrained(self, directory, base=None, *, link: bool = False, overwrite: bool = False):
        """Write the whole unlearned model (loads back with ``from_pretrained``). With ``base`` (the
        checkpoint folder the model came from) only the shards holding changed tensors are rewritten
        and the rest copied (or hard-linked): no language model in memory
        (:func:`vkd_fast.export_unlearned`); that is the only way for a model from
        :func:`vkd_fast.load_visual_model`. Without it, transformers' ``save_pretrained``. A LoRA run
        has adapter layers inside the model: export its delta instead. A model with an image-gated lock
        (``vkd_robust``) is written without it -- a checkpoint of its family -- and the lock beside it,
        in ``directory/gated_lock/`` (:func:`vkd_fast.adapters.load_gated_lock`)."""
        from ..adapters.gated_lock import find_gated_lock

        lock = find_gated_lock(self.model)
        if lock is None:
            return self._save_pretrained(directory, base, link=link, overwrite=overwrite)
        with lock.lifted():
            out = self._save_pretrained(directory, base, link=link, overwrite=overwrite)
        lock.save(Path(directory) / "gated_lock")
        return out

    def _save_pretrained(self, directory, base, *, link: bool, overwrite: bool):
        if self.trainable.get("lora"):
            raise NotImplementedError("save_pretrained of a LoRA run is not supported yet: use save_delta")
        if base is not None:
            from ..checkpoints import export_unlearned

            return export_unlearned(base, self.model, directory, link=link, overwrite=overwrite)
        if any(p.is_meta for p in self.model.parameters()):
            raise ValueError("this model was loaded without its language model (vkd_fast.load_visual_model): pass "
                             "base=<the checkpoint folder it came from> to write the complete model")
        self.model.save_pretrained(directory)
        return None
