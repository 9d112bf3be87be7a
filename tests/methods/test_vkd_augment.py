"""Forget-image augmentation (vkd_fast.methods.vkd.augment)."""

from __future__ import annotations

import pytest
import torch

import vkd_fast.adapters as A
from vkd_fast.methods import VKDOptions
from vkd_fast.methods.vkd.augment import augment_forget_pixels


def _patch_rows_adapter():
    """An adapter whose pixel_layout is "patch_rows" (Qwen2-VL's: image_grid_thw counts the rows)."""
    import _tiny_models as T

    ad = A.get_adapter(T.tiny_qwen2_vl())
    assert ad.pixel_layout == "patch_rows" and A.get_adapter(T.tiny_llava()).pixel_layout == "images"
    return ad


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
    # flattened patch rows (Qwen-VL, the adapter's pixel_layout): noise on the forget images' rows only
    qwen = _patch_rows_adapter()
    grid = torch.tensor([[1, 2, 2], [1, 4, 4]])
    flat = torch.randn(4 + 16, 12, generator=g)
    out = augment_forget_pixels({"pixel_values": flat, "image_grid_thw": grid}, 1, 1.0, g, qwen)["pixel_values"]
    assert not torch.equal(out[:4], flat[:4]) and torch.equal(out[4:], flat[4:])
    with pytest.raises(ValueError, match="image_grid_thw"):
        augment_forget_pixels({"pixel_values": flat}, 1, 1.0, g, qwen)
    with pytest.raises(ValueError, match=r"pixel_values of shape \(20, 12\) hold no image .*pass adapter="):
        augment_forget_pixels({"pixel_values": flat, "image_grid_thw": grid}, 1, 1.0, g)


def test_forget_augment_config():
    assert VKDOptions(forget_augment=0.5).forget_augment == 0.5
    with pytest.raises(ValueError, match=r"forget_augment must be in \[0, 1\]"):
        VKDOptions(forget_augment=2.0)


def test_forget_augment_default():
    from vkd_fast.methods.vkd.options import DEFAULT_FORGET_AUGMENT

    assert VKDOptions().forget_augment == DEFAULT_FORGET_AUGMENT == 0.6  # on by default (docs/robustness.md)
    assert VKDOptions(forget_target="retain_mean").forget_augment == 0.6  # any target that is not the image's own
    assert VKDOptions(forget_augment=0).forget_augment == 0.0


def test_per_image_generators_key_each_view_on_its_image():
    """A list of generators, one per forget image: image i's view depends only on generator i, so a
    batch split in two (two processes, two micro-batches) gets the views of the whole batch."""
    from vkd_fast.methods import entry_generator

    g = torch.Generator().manual_seed(0)
    pv = torch.randn(4, 3, 32, 32, generator=g)
    run = torch.Generator().manual_seed(7)
    state = run.get_state()
    whole = augment_forget_pixels({"pixel_values": pv}, 3, 0.6, [entry_generator(run, s) for s in (10, 11, 12)])
    assert torch.equal(run.get_state(), state)  # entry generators do not advance the run's generator
    first = augment_forget_pixels({"pixel_values": pv[:1]}, 1, 0.6, [entry_generator(run, 10)])
    rest = augment_forget_pixels({"pixel_values": pv[1:]}, 2, 0.6, [entry_generator(run, s) for s in (11, 12)])
    assert torch.equal(whole["pixel_values"][:1], first["pixel_values"])
    assert torch.equal(whole["pixel_values"][1:3], rest["pixel_values"][:2])
    assert torch.equal(whole["pixel_values"][3], pv[3])
    # the same image in two slots gets two different views; a generator restored from a saved state
    # (a resumed run) keys the same views
    twice = augment_forget_pixels({"pixel_values": pv[:1].repeat(2, 1, 1, 1)}, 2, 0.6,
                                  [entry_generator(run, s) for s in (10, 11)])["pixel_values"]
    assert not torch.equal(twice[0], twice[1])
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(augment_forget_pixels({"pixel_values": pv[:1]}, 1, 0.6, [entry_generator(resumed, 10)])
                       ["pixel_values"], first["pixel_values"])
    other = torch.Generator().manual_seed(8)  # another run seed: other views
    assert not torch.equal(augment_forget_pixels({"pixel_values": pv[:1]}, 1, 0.6, [entry_generator(other, 10)])
                           ["pixel_values"], first["pixel_values"])
    # flattened rows (Qwen-VL): each image's rows drawn from its own generator
    grid = torch.tensor([[1, 2, 2], [1, 4, 4], [1, 2, 2]])
    flat = torch.randn(4 + 16 + 4, 12, generator=g)
    qwen = _patch_rows_adapter()
    both = augment_forget_pixels({"pixel_values": flat, "image_grid_thw": grid}, 2, 1.0,
                                 [entry_generator(run, s) for s in (0, 1)], qwen)["pixel_values"]
    second = augment_forget_pixels({"pixel_values": flat[4:20], "image_grid_thw": grid[1:2]}, 1, 1.0,
                                   [entry_generator(run, 1)], qwen)["pixel_values"]
    assert torch.equal(both[4:20], second) and torch.equal(both[20:], flat[20:])
    with pytest.raises(ValueError, match="one per forget image"):
        augment_forget_pixels({"pixel_values": pv}, 3, 0.6, [run])
