"""Qwen2.5-VL: Qwen2-VL's layout with a windowed ViT (RMSNorm, gated MLP; full attention only in
``fullatt_block_indexes``). Inside the ViT the patches are permuted window by window, so block
outputs are put back into ``pixel_values`` order before they are returned or merged.
"""

from __future__ import annotations

import torch

from .qwen2_vl import Qwen2VLAdapter


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    model_types = ("qwen2_5_vl",)

    def _window_index(self, grid) -> torch.Tensor:
        visual = self.vision_tower
        if hasattr(visual, "get_window_index"):  # transformers 4.5x
            return visual.get_window_index(grid)[0]
        from transformers.vision_utils import get_vision_window_index  # transformers 5.x

        c = visual.config
        return get_vision_window_index(grid, spatial_merge_size=c.spatial_merge_size, window_size=c.window_size,
                                       patch_size=c.patch_size)[0]

    def _to_image_order(self, packed, image_grid_thw):
        unit = self._merge**2
        order = torch.argsort(self._window_index(image_grid_thw).to(packed.device))
        return packed.reshape(-1, unit, packed.shape[-1])[order].reshape(-1, packed.shape[-1])
