"""Checkpoint fidelity of image pre-processing: a model loaded from a folder is pre-processed with the
folder's own image processor config (what ``AutoImageProcessor.from_pretrained(folder)`` gives with
the PIL backend), not with class defaults; only a model without such a config falls back to them,
with a warning. Tiny models of the real classes, saved next to NON-default processor configs."""

from __future__ import annotations

import json
import os
import warnings

import _tiny_models as T
import pytest
import torch
import transformers
from PIL import Image

import vkd_fast as vf
import vkd_fast.adapters as A
from vkd_fast.adapters.base import pil_processor_class

NEW_TRANSFORMERS = int(transformers.__version__.split(".")[0]) >= 5
NO_CONFIG = "no preprocessor config"


def _clip(**extra):
    """A CLIP processor for the tiny 32x32 ViT, far from the adapter's defaults (resize to 40, then crop)."""
    return pil_processor_class("CLIPImageProcessor")(
        size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3],
        image_std=[0.25, 0.2, 0.3], resample=2, **extra)


def _llava_next():
    return pil_processor_class("LlavaNextImageProcessor")(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3],
        image_std=[0.25, 0.2, 0.3], resample=2, image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]])


def _qwen():
    """Other pixel bounds (and so other grids) and statistics than Qwen2VLImageProcessor's defaults."""
    return pil_processor_class("Qwen2VLImageProcessor")(
        min_pixels=28 * 28 * 8, max_pixels=28 * 28 * 20, image_mean=[0.5, 0.4, 0.3], image_std=[0.25, 0.2, 0.3])


FAMILIES = {
    "llava": (T.tiny_llava, _clip),
    "llava_next": (T.tiny_llava_next, _llava_next),
    "qwen2_vl": (T.tiny_qwen2_vl, _qwen),
    "qwen2_5_vl": (T.tiny_qwen2_5_vl, _qwen),
}


def _images():
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy())
            for h, w in ((40, 50), (32, 32), (70, 45))]


def _reference(folder):
    """The folder's own image processor as transformers loads it, PIL-based."""
    backend = {"backend": "pil"} if NEW_TRANSFORMERS else {"use_fast": False}
    return transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True, **backend)


def _tensors(out) -> dict:
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def _assert_same(got: dict, want) -> None:
    want = _tensors(want)
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def _differs(a: dict, b: dict) -> bool:
    return set(a) != set(b) or any(a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a)


def _defaults(adapter, images) -> dict:
    """What the adapter gave before it read the folder: the family class, defaults + config values."""
    return _tensors(adapter.default_image_processor()(
        images=images, return_tensors="pt"))


def _saved(folder, name, processor=True):
    build, make = FAMILIES[name]
    model = build()
    model.save_pretrained(folder)
    if processor:
        make().save_pretrained(folder)
    return type(model)


def _no_fallback_warning(record) -> None:
    assert not [w for w in record if NO_CONFIG in str(w.message)]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_preprocess_follows_the_checkpoint_folder(tmp_path, name):
    cls = _saved(tmp_path, name)
    model = cls.from_pretrained(tmp_path).eval()
    images = _images()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        adapter = A.get_adapter(model)
        got = adapter.preprocess(images)
    _no_fallback_warning(record)
    _assert_same(got, _reference(tmp_path)(images=images, return_tensors="pt"))
    assert _differs(got, _defaults(adapter, images))  # the folder's values matter (the old code used these)
    with torch.no_grad():  # and the model runs on them
        feats, offsets = adapter.visual_features(**got)
    assert offsets.diff().tolist() == adapter.num_image_tokens(**got)


@pytest.mark.parametrize("name", ["llava", "qwen2_vl"])
def test_load_visual_model_follows_the_folder(tmp_path, name):
    _saved(tmp_path, name)
    model = vf.load_visual_model(tmp_path)
    images = _images()
    got = A.get_adapter(model).preprocess(images)
    _assert_same(got, _reference(tmp_path)(images=images, return_tensors="pt"))


def test_the_processor_is_built_once_per_folder_and_file_version(tmp_path, monkeypatch):
    from transformers.image_processing_utils import ImageProcessingMixin

    cls = _saved(tmp_path, "llava")
    reads = []
    original = ImageProcessingMixin.get_image_processor_dict.__func__
    monkeypatch.setattr(ImageProcessingMixin, "get_image_processor_dict",
                        classmethod(lambda c, *a, **kw: reads.append(a) or original(c, *a, **kw)))
    model = cls.from_pretrained(tmp_path)
    first = A.get_adapter(model).image_processor()
    images = _images()
    for _ in range(3):  # adapters are made often: the folder is read once
        A.get_adapter(model).preprocess(images)
    assert A.get_adapter(model).image_processor() is first and len(reads) == 1
    assert A.get_adapter(cls.from_pretrained(tmp_path)).image_processor() is first  # same folder, same files
    # the file changes: read again, with its new values
    path = tmp_path / "preprocessor_config.json"
    values = json.loads(path.read_text())
    values["image_mean"] = [0.1, 0.2, 0.3]
    path.write_text(json.dumps(values))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = A.get_adapter(model).image_processor()
    assert again is not first and len(reads) == 2 and list(again.image_mean) == [0.1, 0.2, 0.3]
    _assert_same(A.get_adapter(model).preprocess(images), _reference(tmp_path)(images=images, return_tensors="pt"))


def test_a_fast_processor_name_gets_its_pil_counterpart(tmp_path):
    cls = _saved(tmp_path, "llava")
    path = tmp_path / "preprocessor_config.json"
    values = json.loads(path.read_text())
    values["image_processor_type"] = "CLIPImageProcessorFast"
    path.write_text(json.dumps(values))
    images = _images()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        adapter = A.get_adapter(cls.from_pretrained(tmp_path))
        got = adapter.preprocess(images)
    _no_fallback_warning(record)
    assert type(adapter.image_processor()) is pil_processor_class("CLIPImageProcessor")
    _assert_same(got, _reference(tmp_path)(images=images, return_tensors="pt"))


def test_an_unknown_processor_name_keeps_the_folder_values(tmp_path):
    cls = _saved(tmp_path, "llava")
    path = tmp_path / "preprocessor_config.json"
    values = json.loads(path.read_text())
    path.write_text(json.dumps({**values, "image_processor_type": "NoSuchImageProcessor"}))
    adapter = A.get_adapter(cls.from_pretrained(tmp_path))
    images = _images()
    with pytest.warns(UserWarning, match="NoSuchImageProcessor"):
        got = adapter.preprocess(images)
    _assert_same(got, _clip()(images=images, return_tensors="pt"))


def test_processor_config_json_layout(tmp_path):
    """Newer layouts keep the image processor's values in processor_config.json's image_processor."""
    cls = _saved(tmp_path, "qwen2_vl")
    path = tmp_path / "preprocessor_config.json"
    values = json.loads(path.read_text())
    path.unlink()
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": values}))
    images = _images()
    adapter = A.get_adapter(cls.from_pretrained(tmp_path))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = adapter.preprocess(images)
    _no_fallback_warning(record)
    _assert_same(got, _reference(tmp_path)(images=images, return_tensors="pt"))
    assert _differs(got, _defaults(adapter, images))


@pytest.mark.parametrize("name", ["llava", "qwen2_vl"])
def test_without_a_processor_config_class_defaults_and_one_warning(tmp_path, name):
    cls = _saved(tmp_path, name, processor=False)
    model = cls.from_pretrained(tmp_path)
    images = _images()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = A.get_adapter(model).preprocess(images)
        A.get_adapter(model).preprocess(images)  # once per model
        assert A.get_adapter(model).image_processor() is A.get_adapter(model).image_processor()
    messages = [str(w.message) for w in record if NO_CONFIG in str(w.message)]
    assert len(messages) == 1 and str(tmp_path) in messages[0] and "class defaults" in messages[0]
    _assert_same(got, _defaults(A.get_adapter(model), images))
    # a model built from a config (no folder at all): the same fallback, its own warning
    with pytest.warns(UserWarning, match="not loaded from a local checkpoint folder"):
        A.get_adapter(FAMILIES[name][0]()).preprocess(images)
