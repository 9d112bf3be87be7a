"""The shipped toy build (vkd_fast.data.toy_model: shipped_build, write_manifest, load_toy_models):
the default world's trained files travel with the package, checksummed, and are loaded instead of a
build whenever the key matches, so the docs' tables are measured on the models every user gets."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from vkd_fast.data import load_toy_models
from vkd_fast.data.toy import ToyWorldConfig
from vkd_fast.data.toy_model import MANIFEST, SHIPPED_ROOT, ToyModelConfig, build_key, shipped_build, write_manifest

DEFAULT_KEY = build_key(ToyWorldConfig(), ToyModelConfig())


def test_the_default_world_is_shipped_under_its_current_key():
    # fails when the build recipe, BUILD_VERSION or a default config changes without the files re-shipped
    folder = shipped_build(DEFAULT_KEY)
    assert folder is not None, (f"no shipped build for the default world's key {DEFAULT_KEY} under {SHIPPED_ROOT}: "
                                "build it (vkd-fast demo --rebuild), copy the cache folder there and write_manifest()")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {"build.json", "vanilla/model.safetensors", "gold/model.safetensors", "tokenizer/tokenizer.json",
            "oracle-1500/model.safetensors"} <= set(manifest["files"])
    build = json.loads((folder / "build.json").read_text())
    assert build["world"] == ToyWorldConfig().to_dict() and build["model"] == ToyModelConfig().to_dict()


@pytest.mark.slow
def test_load_takes_the_shipped_files_and_writes_nothing(tmp_path):
    models = load_toy_models(cache_dir=tmp_path)
    folder = shipped_build(DEFAULT_KEY)
    assert models.shipped and models.path == folder and models.cache_path == tmp_path / "toy" / DEFAULT_KEY
    for name, model in (("vanilla", models.vanilla), ("gold", models.gold)):
        state = load_file(folder / name / "model.safetensors")
        params = dict(model.named_parameters())
        assert params and all(torch.equal(params[k], v) for k, v in state.items() if k in params), name
    oracle = models.oracle()  # shipped too: loaded, not trained
    state = load_file(folder / "oracle-1500" / "model.safetensors")
    assert all(torch.equal(p, state[k]) for k, p in oracle.named_parameters() if k in state)
    assert not (tmp_path / "toy").exists() or not any((tmp_path / "toy").rglob("*.safetensors"))


def _copy(tmp_path):
    root = tmp_path / "shipped"
    shutil.copytree(SHIPPED_ROOT / DEFAULT_KEY, root / DEFAULT_KEY)
    return root


def test_a_damaged_or_missing_file_is_an_error_naming_it(tmp_path):
    root = _copy(tmp_path)
    assert shipped_build(DEFAULT_KEY, root) == root / DEFAULT_KEY
    weights = root / DEFAULT_KEY / "gold" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=r"gold/model.safetensors is damaged.*--rebuild"):
        shipped_build(DEFAULT_KEY, root)
    weights.unlink()
    with pytest.raises(RuntimeError, match=r"gold/model.safetensors is missing"):
        shipped_build(DEFAULT_KEY, root)


def test_no_build_of_another_key_and_a_manifest_must_name_its_own_key(tmp_path):
    assert shipped_build("0" * 16) is None
    root = _copy(tmp_path)
    (root / DEFAULT_KEY).rename(root / ("f" * 16))
    with pytest.raises(RuntimeError, match="names key"):
        shipped_build("f" * 16, root)


def test_write_manifest_records_every_file_and_round_trips(tmp_path):
    folder = tmp_path / "k" / "abc"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.json").write_text("{}")
    (folder / "sub" / "b.bin").write_bytes(b"\x00\x01")
    path = write_manifest(folder, "abc", {"built": "today"})
    manifest = json.loads(path.read_text())
    assert set(manifest["files"]) == {"a.json", "sub/b.bin"} and manifest["note"] == {"built": "today"}
    assert shipped_build("abc", tmp_path / "k") == folder
    assert not list(folder.glob(".*tmp"))
