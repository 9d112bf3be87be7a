"""The method registry (vkd_fast.methods.registry): the worked example of docs/extending.md
(examples/extending/new_method.py), a method outside the package, is registered and run through
vf.unlearn and through the CLI (as a plug-in); options from mappings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _tiny_models as T
import pytest
import torch
from _items import FORGET, RETAIN

import vkd_fast as vf
from vkd_fast.methods.registry import METHODS
from vkd_fast.utils.plugins import load_plugin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "extending" / "new_method.py"


# docs/extending.md's worked example of a new method (it registers itself on import)
ShrinkProjector = load_plugin(str(EXAMPLE)).ShrinkProjector
METHODS.remove("shrink_projector")  # registered by the fixture below, for the tests that want it


@pytest.fixture
def registered():
    vf.register_method("shrink_projector", ShrinkProjector)
    yield
    METHODS.remove("shrink_projector")


def test_a_method_from_outside_the_package_runs_through_unlearn(registered):
    assert "shrink_projector" in vf.available_methods()
    model = T.tiny_llava()
    ad = vf.adapters.get_adapter(model)
    with torch.no_grad():
        before = ad.visual_features(tap="projector", **ad.preprocess([FORGET[0]["image"]]))[0].pow(2).mean()
    result = vf.unlearn(model, FORGET, RETAIN, method="shrink_projector", options={"scale": 2.0},
                        config=vf.UnlearnConfig(steps=15, batch_size=2, lr=3e-3))
    with torch.no_grad():
        after = ad.visual_features(tap="projector", **ad.preprocess([FORGET[0]["image"]]))[0].pow(2).mean()
    assert result.method == "shrink_projector" and result.options == {"scale": 2.0}
    assert after < 0.5 * before
    assert all("multi_modal_projector" in n for n in result.trainable["names"])
    with pytest.raises(ValueError, match="scale must be > 0"):
        vf.unlearn(model, FORGET, RETAIN, method="shrink_projector", options={"scale": -1})


def test_registry_errors():
    with pytest.raises(TypeError, match="must be a subclass of vkd_fast.methods.UnlearningMethod"):
        vf.register_method("x", object)
    with pytest.raises(ValueError, match="method name must be an identifier"):
        vf.register_method("two words", ShrinkProjector)
    with pytest.raises(ValueError, match="method must be one of 'ga', 'grad_diff'"):
        vf.methods.get_method("nope")


@pytest.mark.slow
def test_a_plugin_method_runs_through_the_cli(tmp_path):
    model = T.tiny_llava()
    model.save_pretrained(tmp_path / "model")
    images = tmp_path / "imgs"
    images.mkdir()
    for i, it in enumerate(FORGET):
        it["image"].save(images / f"{i}.png")
    plugin = EXAMPLE
    exe = str(Path(sys.executable).with_name("vkd-fast"))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = lambda *a: subprocess.run([exe, *a], capture_output=True, text=True, env=env, timeout=600,  # noqa: E731
                                    check=False, cwd=tmp_path)
    help_text = run("unlearn", "--plugin", str(plugin), "--help").stdout
    assert "  shrink_projector.scale " in help_text and "weight of the forget term [default: 1.0]" in help_text
    out = run("unlearn", str(tmp_path / "model"), "--forget", str(images), "--retain", str(images), "--plugin",
              str(plugin), "--method", "shrink_projector", "--output-dir", str(tmp_path / "run"), "steps=3",
              "shrink_projector.scale=0.5", "--save", "delta")
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["method"] == "shrink_projector" and result["options"] == {"scale": 0.5}
    assert result["steps_run"] == 3 and (tmp_path / "run" / "delta.safetensors").exists()
    bad = run("unlearn", str(tmp_path / "model"), "--forget", str(images), "--retain", str(images), "--plugin",
              str(tmp_path / "missing.py"), "--output-dir", str(tmp_path / "r2"))
    assert bad.returncode == 2 and "plug-in" in bad.stderr and "no such file" in bad.stderr


def test_options_from_mappings_are_converted_by_type():
    opts = vf.methods.create_method("vkd", {"lambda_forget": "2", "mask_ratio": "0.5", "mask": "true",
                                            "lora": None}).options
    assert opts.lambda_forget == 2.0 and isinstance(opts.lambda_forget, float)
    assert opts.mask_ratio == 0.5 and opts.mask is True
    with pytest.raises(ValueError, match="vkd option lambda_forget: expected float, got 'big'"):
        vf.methods.create_method("vkd", {"lambda_forget": "big"})
    with pytest.raises(ValueError, match="unknown vkd option"):
        vf.methods.create_method("vkd", {"lamda_forget": 1.0})
