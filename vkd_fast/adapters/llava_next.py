"""LLaVA-NeXT (1.6): LLaVA's parts plus "anyres" tiling -- each image is a base view and a grid of
crops, their visual tokens unpadded to the image's aspect ratio and ended row by row with a learned
``image_newline`` vector (part of P here). Inputs: ``pixel_values`` ``[n_images, n_crops, C, H, W]``
and ``image_sizes`` ``[n_images, 2]`` as the model's image processor makes them.
"""

from __future__ import annotations

import torch
from torch import nn

from .llava import LlavaAdapter, _part


def _image_size_to_num_patches(image_size, grid_pinpoints, patch_size):
    try:  # transformers 4.5x and 5.x keep it here
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("this transformers version has no LLaVA-NeXT image_size_to_num_patches") from exc
    return image_size_to_num_patches(image_size=image_size, grid_pinpoints=grid_pinpoints, patch_size=patch_size)


class LlavaNextAdapter(LlavaAdapter):
    model_types = ("llava_next",)
    benchmark_prompt_style = None  # its tokenizer's chat template when it has one (LLaVA-1.5's format otherwise)

    def _newline(self) -> nn.Parameter:
        return _part(self.model, "image_newline")

    def _crops(self, image_sizes) -> list[int]:
        return [
            _image_size_to_num_patches(size, self.config.image_grid_pinpoints, self.config.vision_config.image_size)
            for size in image_sizes
        ]

    def _flatten(self, pixel_values, image_sizes):
        if pixel_values.dim() == 5:
            return torch.cat([pv[:n] for pv, n in zip(pixel_values, self._crops(image_sizes))])
        return pixel_values

    def _vision_forward(self, pixel_values, image_sizes=None, **image_kwargs):
        if image_sizes is None:
            raise ValueError("LLaVA-NeXT needs image_sizes (one [height, width] per image)")
        return self.vision_tower(self._flatten(pixel_values, image_sizes))

    def _select_patch_tokens(self, block_out, image_sizes=None, **image_kwargs) -> list[torch.Tensor]:
        tokens = block_out[:, 1:] if self._strategy() == "default" else block_out
        per_image = torch.split(tokens, self._crops(image_sizes))
        return [t.reshape(-1, t.shape[-1]) for t in per_image]

    def _project(self, block_out, image_sizes=None, **image_kwargs) -> list[torch.Tensor]:
        feats = block_out[:, 1:] if self._strategy() == "default" else block_out
        feats = torch.split(self.projector_modules[0](feats), self._crops(image_sizes))
        packed, _lens = _part(self.model, "pack_image_features")(
            feats, image_sizes, vision_feature_select_strategy=self._strategy(), image_newline=self._newline()
        )
        return list(packed)

    def trainable_names(self, spec: str, tap: str = "projector") -> list[str]:
        names = super().trainable_names(spec, tap)
        if self.parse_tap(tap).kind != "vision":
            names = sorted(set(names) | self._param_names([self._newline()]))
        return names

    image_processor_classes = ("LlavaNextImageProcessorPil", "LlavaNextImageProcessor")

    def collate(self, per_image: list[dict]) -> dict:
        """Crops per image differ with the aspect ratio: pad ``pixel_values`` along the crop axis
        (the model reads only the first ``n_crops(image_size)`` of each row)."""
        crops = max(d["pixel_values"].shape[1] for d in per_image)
        padded = [torch.nn.functional.pad(d["pixel_values"], (0, 0, 0, 0, 0, 0, 0, crops - d["pixel_values"].shape[1]))
                  for d in per_image]
        return {"pixel_values": torch.cat(padded), "image_sizes": torch.cat([d["image_sizes"] for d in per_image])}

    def image_processor_kwargs(self) -> dict:
        return {**super().image_processor_kwargs(), "image_grid_pinpoints": self.config.image_grid_pinpoints}

    def num_image_tokens(self, pixel_values=None, image_sizes=None, **image_kwargs) -> list[int]:
        """Token counts from the model's own packing, run on zero-width stand-ins (no ViT work)."""
        vc = self.config.vision_config
        side = vc.image_size // vc.patch_size
        per_crop = side * side + (0 if self._strategy() == "default" else 1)
        stand_ins = [torch.zeros(n, per_crop, 1) for n in self._crops(image_sizes)]
        packed, lens = _part(self.model, "pack_image_features")(
            stand_ins, image_sizes, vision_feature_select_strategy=self._strategy(),
            image_newline=torch.zeros(1),
        )
        return [int(n) for n in lens]
