"""Qwen2-VL: a native-resolution ViT (``model.model.visual``; images of any size become a packed
sequence of 14x14 patches, ``image_grid_thw`` rows [t, h, w] in patches) -> ``visual.merger`` (the
projector: 2x2 patches -> one LLM token) -> Qwen2 LLM with 3-D rotary positions (M-RoPE).

Every image gives ``t*h*w / merge**2`` visual tokens, so images of different sizes mix in one batch
and the features come back packed with offsets. ViT block outputs are packed over all images in
``pixel_values`` row order (2x2 merge groups contiguous). The ``llm:j`` tap computes the M-RoPE
position ids with the model's own ``get_rope_index`` (``mm_token_type_ids`` marks image tokens).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .base import VisualAdapter


class Qwen2VLAdapter(VisualAdapter):
    model_types = ("qwen2_vl",)
    pixel_layout = "patch_rows"  # pixel_values: every image's patches flattened, t*h*w rows each
    # checkpoint names: only the common wrappers differ (visual.* / model.layers.* stored for the
    # model's model.visual.* / model.language_model.layers.*), so no checkpoint_renames
    image_processor_classes = ("Qwen2VLImageProcessorPil", "Qwen2VLImageProcessor")
    image_prompt_template = "<|im_start|>user\n{image}{question}<|im_end|>\n<|im_start|>assistant\n"
    text_prompt_template = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"

    # layout
    @property
    def _inner(self) -> nn.Module:
        return getattr(self.model, "model", self.model)

    @property
    def vision_tower(self) -> nn.Module:
        return self._inner.visual

    @property
    def vision_blocks(self) -> nn.ModuleList:
        return self.vision_tower.blocks

    @property
    def projector_modules(self) -> list[nn.Module]:
        return [self.vision_tower.merger]

    @property
    def language_model(self) -> nn.Module:
        return self._inner.language_model

    @property
    def llm_layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def _merge(self) -> int:
        return int(self.config.vision_config.spatial_merge_size)

    def vision_param_owners(self, last_block: int) -> list[nn.Module]:
        return [self.vision_tower.patch_embed, *list(self.vision_blocks)[: last_block + 1]]

    # visual path
    @staticmethod
    def _grid(image_grid_thw):
        if image_grid_thw is None:
            raise ValueError("Qwen2-VL needs image_grid_thw (one [t, h, w] row per image, in patches)")
        return image_grid_thw

    def _vision_forward(self, pixel_values, image_grid_thw=None, **image_kwargs):
        return self.vision_tower(pixel_values, grid_thw=self._grid(image_grid_thw))

    def _to_image_order(self, packed, image_grid_thw):
        """Rows of a block output in ``pixel_values`` order (identity here; Qwen2.5-VL permutes)."""
        return packed

    def _select_patch_tokens(self, block_out, image_grid_thw=None, **image_kwargs) -> list[torch.Tensor]:
        grid = self._grid(image_grid_thw)
        rows = self._to_image_order(block_out, grid)
        return list(torch.split(rows, grid.prod(-1).tolist()))

    def _project(self, block_out, image_grid_thw=None, **image_kwargs) -> list[torch.Tensor]:
        grid = self._grid(image_grid_thw)
        merged = self.vision_tower.merger(self._to_image_order(block_out, grid))
        return list(torch.split(merged, self.num_image_tokens(image_grid_thw=grid)))

    def pixel_rows(self, image_grid_thw=None, **image_kwargs) -> list[int]:
        return [int(n) for n in self._grid(image_grid_thw).prod(-1).tolist()]

    def num_image_tokens(self, image_grid_thw=None, **image_kwargs) -> list[int]:
        return (self._grid(image_grid_thw).prod(-1) // self._merge**2).tolist()

    def _llm_kwargs(self, input_ids, attention_mask, inputs_embeds, image_grid_thw=None, **image_kwargs) -> dict:
        get_rope_index = self._inner.get_rope_index
        kwargs = {"image_grid_thw": self._grid(image_grid_thw), "attention_mask": attention_mask}
        if "mm_token_type_ids" in inspect.signature(get_rope_index).parameters:  # transformers >= 5
            kwargs["mm_token_type_ids"] = (input_ids == self.image_token_id).int()
        position_ids, _deltas = get_rope_index(input_ids, **kwargs)
        return {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask, "position_ids": position_ids}

    def model_inputs(self, input_ids, attention_mask=None, **image_kwargs) -> dict:
        kwargs = super().model_inputs(input_ids, attention_mask, **image_kwargs)
        if image_kwargs:  # M-RoPE places image tokens by type (Qwen2.5-VL silently misplaces them without)
            kwargs["mm_token_type_ids"] = (input_ids == self.image_token_id).int()
        return kwargs

    def text_logits(self, input_ids, attention_mask=None) -> torch.Tensor:
        # the model caches M-RoPE offsets of the last multimodal call for generation; a text-only
        # forward must not inherit them
        if hasattr(self._inner, "rope_deltas"):
            self._inner.rope_deltas = None
        return super().text_logits(input_ids, attention_mask)

    # pre-processing and prompts
    def image_processor_kwargs(self) -> dict:
        vc = self.config.vision_config
        return {"patch_size": vc.patch_size, "merge_size": vc.spatial_merge_size,
                "temporal_patch_size": vc.temporal_patch_size}

    chat_image_separator = ""
    answer_separator = ""

    def _image_block(self, tokenizer, n_image_tokens: int) -> str:
        start = tokenizer.convert_ids_to_tokens(int(self.config.vision_start_token_id))
        end = tokenizer.convert_ids_to_tokens(int(self.config.vision_end_token_id))
        return f"{start}{self.image_token(tokenizer) * n_image_tokens}{end}"
