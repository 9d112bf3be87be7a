"""The toy models' folders record the image processor they were trained with (the family's defaults):
loading one pre-processes exactly as the build did, without the no-config warning; a cache written
before the folders recorded it gets the file on first load."""

from __future__ import annotations

import warnings

import torch

from vkd_fast.adapters import get_adapter
from vkd_fast.data import ToyModelConfig, ToyWorld, ToyWorldConfig
from vkd_fast.data import toy_model as TM


def test_a_toy_folder_preprocesses_as_the_build(tmp_path):
    world = ToyWorld(ToyWorldConfig(n_identities=4, forget_fraction=0.5))
    model = TM.build_model(world, TM.build_tokenizer(world), ToyModelConfig())
    images = [world.image(i, v) for i in range(2) for v in range(2)]
    built = get_adapter(model).default_image_processor()(images=images, return_tensors="pt")["pixel_values"]
    model.save_pretrained(tmp_path)
    TM._save_processor(model, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the folder's own config: no fallback warning
        loaded = get_adapter(TM._load(tmp_path)).preprocess(images)["pixel_values"]
    assert torch.equal(loaded, built)
    (tmp_path / "preprocessor_config.json").unlink()  # an older cache
    again = get_adapter(TM._load(tmp_path)).preprocess(images)["pixel_values"]
    assert (tmp_path / "preprocessor_config.json").is_file() and torch.equal(again, built)
