"""A new model family for vkd_fast in one file: DeepSeek-VL (transformers' ``deepseek_vl``).

DeepSeek-VL is a SigLIP ViT -> a two-layer MLP ("aligner") -> a Llama LLM. Its model reads the
ViT's ``last_hidden_state`` -- the last block's output *through the ViT's final norm* -- so that norm
is part of the projector here (it is between the block the model reads and the LLM input).

Use it with ``vkd-fast unlearn --plugin examples/extending/new_family.py ...`` or, in Python, by
importing this file before ``vkd_fast.unlearn``. Its test: tests/adapters/test_example_new_family.py.
"""

from __future__ import annotations

from torch import nn

from vkd_fast.adapters import VisualAdapter, register_adapter


@register_adapter  # get_adapter(model) now picks this class for every name in model_types
class DeepseekVLAdapter(VisualAdapter):
    model_types = ("deepseek_vl",)  # the models' config.model_type
    # transformers 4.x holds and saves the SigLIP tower one level deeper (model.vision_model.vision_model.*)
    # than 5.x (model.vision_model.*): checkpoints of either version map onto a model of either version
    checkpoint_renames = (("vision_model.vision_model.", "vision_model."),)
    # image pre-processing: the processor class (PIL-based one first) and its size from the model config
    image_processor_classes = ("DeepseekVLImageProcessorPil", "DeepseekVLImageProcessor")
    # prompts when the tokenizer has no chat template (DeepSeek-VL's chat format, without its system prompt)
    image_prompt_template = "User: {image}\n{question}\n\nAssistant:"
    text_prompt_template = "User: {question}\n\nAssistant:"

    def image_processor_kwargs(self) -> dict:
        side = self.config.vision_config.image_size
        return {"size": {"height": side, "width": side}}

    # ---- where the parts are (V: vision tower, P: projector, W: language model)
    @property
    def _vit(self) -> nn.Module:  # the module holding embeddings / encoder / post_layernorm (4.x: one level down)
        tower = self.vision_tower
        return getattr(tower, "vision_model", tower)

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.model.vision_model

    @property
    def vision_blocks(self) -> nn.ModuleList:
        return self._vit.encoder.layers

    @property
    def projector_modules(self) -> list[nn.Module]:
        return [self._vit.post_layernorm, self.model.model.aligner]

    @property
    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    @property
    def llm_layers(self) -> nn.ModuleList:
        return self.language_model.layers

    def vision_param_owners(self, last_block: int) -> list[nn.Module]:
        # what influences block last_block's output: the patch / position embeddings and blocks 0..last_block
        return [self._vit.embeddings, *list(self.vision_blocks)[: last_block + 1]]

    # ---- the visual path (the ViT is stopped after the block a tap reads by a hook in the base class)
    def _vision_forward(self, pixel_values, **image_kwargs):
        return self.vision_tower(pixel_values)

    def _select_patch_tokens(self, block_out, **image_kwargs):
        return list(block_out)  # SigLIP has no CLS token: every token is a patch token, one row per image

    def _project(self, block_out, **image_kwargs):
        return list(self.model.model.aligner(self._vit.post_layernorm(block_out)))  # the model's image features

    def num_image_tokens(self, pixel_values=None, **image_kwargs) -> list[int]:
        vc = self.config.vision_config
        count = 1 if pixel_values is None else pixel_values.shape[0]
        return [(vc.image_size // vc.patch_size) ** 2] * count
