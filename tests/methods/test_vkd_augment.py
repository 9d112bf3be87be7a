"""Forget-image augmentation (vkd_fast.methods.vkd.augment)."""

from __future__ import annotations

import pytest
import torch

from vkd_fast.methods import VKDOptions
from vkd_fast.methods.vkd.augment import augment_forget_pixels


def test_forget_augmentation_changes_only_forget_images():
    g = torch.Generator().manual_seed(0)
    pv = torch.randn(5, 3, 32, 32, generator=g)
    before = pv.clone()
    out = augment_forget_pixels({"pixel_values": pv, "image_sizes": torch.ones(5, 2)}, 2, 1.0,
                                torch.Generator().manual_seed(1))
    assert torch.equal(out["pixel_values"][2:], pv[2:]) and not torch.equal(out["pixel_values"][:2], pv[:2])
    assert torch.equal(out["image_sizes"], torch.ones(5, 2)) and torch.equal(pv, before)  # input untouched
    again = augment_forget_pixels({"pixel_values": pv}, 2, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(again["pixel_values"], out["pixel_values"])  # deterministic given the generator
    # the shift is a circular roll of at most strength * H / 8 pixels: undo the noise-free part
    quiet = augment_forget_pixels({"pixel_values": pv}, 1, 0.5, torch.Generator().manual_seed(3))["pixel_values"][0]
    best = min(((quiet - torch.roll(pv[0], (dy, dx), (-2, -1))).abs().max().item(), (dy, dx))
               for dy in range(-2, 3) for dx in range(-2, 3))
    assert best[0] < 0.5  # noise std 0.05: some roll within reach explains the image
    assert augment_forget_pixels({"pixel_values": pv}, 0, 1.0, g)["pixel_values"] is pv
    # flattened patch rows (Qwen-VL): noise on the forget images' rows only
    grid = torch.tensor([[1, 2, 2], [1, 4, 4]])
    flat = torch.randn(4 + 16, 12, generator=g)
    out = augment_forget_pixels({"pixel_values": flat, "image_grid_thw": grid}, 1, 1.0, g)["pixel_values"]
    assert not torch.equal(out[:4], flat[:4]) and torch.equal(out[4:], flat[4:])
    with pytest.raises(ValueError, match="image_grid_thw"):
        augment_forget_pixels({"pixel_values": flat}, 1, 1.0, g)


def test_forget_augment_config():
    assert VKDOptions(forget_augment=0.5).forget_augment == 0.5
    with pytest.raises(ValueError, match=r"forget_augment must be in \[0, 1\]"):
        VKDOptions(forget_augment=2.0)
    with pytest.raises(ValueError, match="forget_augment needs a target that is not the image.s own"):
        VKDOptions(forget_augment=0.5, forget_target="repel")
