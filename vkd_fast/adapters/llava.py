"""LLaVA (1.5 and compatible): CLIP-style ViT -> MLP projector -> Llama-style LLM.

transformers 5.x keeps the parts under ``model.model.{vision_tower, multi_modal_projector,
language_model}`` (4.5x before the refactor: ``model.{vision_tower, multi_modal_projector,
language_model}``); the CLIP tower's blocks are ``encoder.layers`` (under ``vision_model`` in 4.x).
The model reads ViT ``hidden_states[vision_feature_layer]`` (-2 by default), i.e. the output of
block ``depth + vision_feature_layer``; later blocks never influence it, so they never run here and
are never trainable.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import VisualAdapter


def _part(model: nn.Module, name: str) -> nn.Module:
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, name):
        return getattr(inner, name)
    if hasattr(model, name):
        return getattr(model, name)
    raise AttributeError(f"{type(model).__name__} has no {name} (looked in .model.{name} and .{name})")


class LlavaAdapter(VisualAdapter):
    model_types = ("llava",)
    # transformers 4.x wrote the CLIP tower as vision_tower.vision_model.* (4.57's model holds it so too);
    # 5.x writes and holds vision_tower.*
    checkpoint_renames = (("vision_tower.vision_model.", "vision_tower."),)
    # LLaVA-1.5 was trained on the benchmark templates' own "USER: ... ASSISTANT:" format
    benchmark_prompt_style = "llava"

    # layout
    @property
    def vision_tower(self) -> nn.Module:
        return _part(self.model, "vision_tower")

    @property
    def _vit(self) -> nn.Module:
        """The module that owns embeddings / pre_layrnorm / encoder (4.x: ``vision_model``)."""
        tower = self.vision_tower
        return getattr(tower, "vision_model", tower)

    @property
    def vision_blocks(self) -> nn.ModuleList:
        return self._vit.encoder.layers

    @property
    def projector_modules(self) -> list[nn.Module]:
        return [_part(self.model, "multi_modal_projector")]

    @property
    def language_model(self) -> nn.Module:
        return _part(self.model, "language_model")

    @property
    def llm_layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def _feature_layer(self) -> int:
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise NotImplementedError(f"vision_feature_layer={layer!r}: only a single feature layer is supported")
        return layer

    @property
    def feature_block(self) -> int:
        depth = len(self.vision_blocks)
        layer = self._feature_layer
        # hidden_states has depth + 1 entries; entry k (k >= 1) is the output of block k - 1
        block = depth + layer if layer < 0 else layer - 1
        if not 0 <= block < depth:
            raise NotImplementedError(f"vision_feature_layer={layer} reads no ViT block")
        return block

    def vision_param_owners(self, last_block: int) -> list[nn.Module]:
        vit = self._vit
        return [vit.embeddings, vit.pre_layrnorm, *list(self.vision_blocks)[: last_block + 1]]

    # visual path
    def _vision_forward(self, pixel_values, **image_kwargs):
        return self.vision_tower(pixel_values)

    def _strategy(self) -> str:
        return getattr(self.config, "vision_feature_select_strategy", "default")

    def _select_patch_tokens(self, block_out, **image_kwargs) -> list[torch.Tensor]:
        return list(block_out[:, 1:] if self._strategy() == "default" else block_out)

    def _project(self, block_out, **image_kwargs) -> list[torch.Tensor]:
        feats = block_out[:, 1:] if self._strategy() == "default" else block_out
        return list(self.projector_modules[0](feats))

    image_processor_classes = ("CLIPImageProcessorPil", "CLIPImageProcessor")

    def image_processor_kwargs(self) -> dict:
        side = self.config.vision_config.image_size
        return {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side}}

    def num_image_tokens(self, pixel_values=None, **image_kwargs) -> list[int]:
        vc = self.config.vision_config
        n = (vc.image_size // vc.patch_size) ** 2 + (0 if self._strategy() == "default" else 1)
        count = 1 if pixel_values is None else pixel_values.shape[0]
        return [n] * count
