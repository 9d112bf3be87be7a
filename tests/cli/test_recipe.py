"""The paper's recipe as shipped (vkd_fast/configs/mllmu_llava15_vkd.{yaml,sh}): its options are the code's
defaults, and its exact commands -- unlearn, export, MLLMU-Bench protocol evaluation -- run on a tiny
checkpoint in the hub's folder layout and an MLLMU-Bench-format fixture, with only sizes changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _recipe_fixture import RECIPE_SIZES, hub_folder, mllmu_fixture

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "vkd_fast" / "configs" / "mllmu_llava15_vkd.yaml"
SCRIPT = ROOT / "vkd_fast" / "configs" / "mllmu_llava15_vkd.sh"


def test_recipe_options_are_the_codes_defaults():
    from vkd_fast import UnlearnConfig
    from vkd_fast.methods import get_method
    from vkd_fast.utils.options import effective_defaults

    recipe = yaml.safe_load(RECIPE.read_text())
    vkd = recipe.pop("vkd")
    trainer = effective_defaults(UnlearnConfig)
    assert recipe.pop("steps") == get_method("vkd").default_steps
    for key, value in recipe.items():
        assert trainer[key] == value, key
    options = effective_defaults(get_method("vkd").Options)
    for key, value in vkd.items():
        assert options[key] == value, key
    from vkd_fast.cli.options import config_from  # what `vkd-fast unlearn --config` makes of the file

    for spec in (RECIPE, "mllmu_llava15_vkd"):  # its path, or its shipped name
        trainer, opts = config_from(spec, [], "vkd", "runs/x")
        assert (trainer.steps, trainer.lr, trainer.batch_size, trainer.device) == (600, 1e-3, 8, "auto")
        assert (opts.trainable, opts.tap, opts.forget_target) == ("vision+projector", "vision:feature",
                                                                  "retain_person")
    import vkd_fast.configs

    assert vkd_fast.configs.path("mllmu_llava15_vkd") == RECIPE.resolve()
    assert vkd_fast.configs.path("mllmu_llava15_vkd.sh") == SCRIPT.resolve()


@pytest.mark.parametrize("text, words, error", [
    ("stpes: 3\n", [], r"--config .*c.yaml: unknown option\(s\) stpes; known: "),
    ("vkd: {tapp: projector}\n", [], r"--config .*c.yaml: unknown option\(s\) vkd.tapp; known: "),
    ("lr: fast\n", [], r"--config .*c.yaml: option lr: expected float"),
    ("vkd: {forget_target: repel}\n", [], r"--config .*c.yaml: .*forget_target 'repel' is a research variant"),
    ("lr: fast\n", ["lr=oops"], r"^option lr: expected float, got 'oops'"),  # the word's value, not the file's
    ("- 1\n", [], r"--config .*c.yaml: expected a mapping of options"),
])
def test_unlearn_config_errors_name_the_file_and_key(tmp_path, text, words, error):
    from vkd_fast.cli.options import config_from

    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ValueError, match=error):
        config_from(tmp_path / "c.yaml", words, "vkd", "runs/x")


def test_unlearn_config_names_a_shipped_file_or_a_path(tmp_path, monkeypatch):
    from vkd_fast.cli.options import config_from

    with pytest.raises(ValueError, match=r"--config nope: no such file, and no shipped configuration of that name "
                                         r"\(shipped: demo, mllmu_llava15_vkd, robustness_study\)"):
        config_from("nope", [], "vkd", "runs/x")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").write_text("steps: 7\n")  # a file without a suffix is still read by its path
    assert config_from("mine", [], "vkd", "runs/x")[0].steps == 7


@pytest.mark.slow
def test_the_recipe_runs_end_to_end(tmp_path):
    vanilla = hub_folder(tmp_path / "llava-mllmu-vanilla")
    bench, train = mllmu_fixture(tmp_path)
    out = tmp_path / "runs" / "mllmu-vkd"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(VANILLA=str(vanilla), BENCH=str(bench), TRAIN=str(train), OUT=str(out), SEEDS="0",
               VKD_FAST=str(Path(sys.executable).with_name("vkd-fast")),
               **RECIPE_SIZES)
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "device cpu" in run.stderr  # each command says where it runs
    summary = json.loads((out / "run" / "result.json").read_text())
    assert summary["config"]["steps"] == 3 and summary["config"]["lr"] == 1e-3 and summary["visual_only"]
    assert summary["options"]["forget_target"] == "retain_person" and summary["options"]["forget_augment"] == 0.6

    from safetensors.torch import load_file

    before, after = load_file(vanilla / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("vision_tower" in k or "multi_modal_projector" in k for k in changed), sorted(changed)[:5]
    for name in ("preprocessor_config.json", "tokenizer.json", "config.json"):  # the folder's own files travel
        assert (out / "model" / name).read_bytes() == (vanilla / name).read_bytes(), name
    for who in ("vkd", "vanilla"):
        result = json.loads((out / "eval" / f"{who}-seed0.json").read_text())
        assert set(result) == {"Forget Set Results", "Test Set Results", "Retain Set (shared dataset) Results",
                               "Retain Set (real person) Results", "vkd_fast"}  # the benchmark's own keys
        for key in ("Forget Set Results", "Test Set Results"):
            accuracy = result[key]["classification"]["Image-Textual Question Accuracy"]
            assert isinstance(accuracy, float) and 0 <= accuracy <= 100
        assert result["vkd_fast"]["seed"] == 0 and result["vkd_fast"]["model"] == str(out / "model" if who == "vkd"
                                                                                      else vanilla)
    assert (out / "eval" / "vkd-seed0.questions.jsonl").is_file()
