"""The runnable examples of docs/integration.md (examples/own_loop.py, hf_trainer.py, checkpoint_recipe.py),
each run as a user runs it -- a fresh process from the repository root -- and checked by what it wrote:
the unlearned checkpoint loads with transformers, only the vision tower and projector changed, and the
integration ends with the weights of ``vf.unlearn``. (examples/extending/ has its own tests.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
VISUAL = ("vision_tower", "multi_modal_projector")


def _env() -> dict:
    """This environment for a user's process: passive OpenMP threads, no Triton interpreter (tests only)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def _changed(before: Path, after: Path) -> list[str]:
    """Names of the tensors that differ between two saved checkpoints (the same names in both)."""
    from safetensors.torch import load_file

    a, b = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    assert a.keys() == b.keys()
    return sorted(k for k in a if not torch.equal(a[k], b[k]))


def _only_visual_changed(before: Path, after: Path) -> None:
    changed = _changed(before, after)
    assert changed, "nothing was unlearned"
    outside = [k for k in changed if not any(part in k for part in VISUAL)]
    assert not outside, outside[:5]  # the language model is bit-identical


def _loads_with_transformers(folder: Path) -> None:
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(folder)
    assert model.config.model_type == "llava"


@pytest.fixture(scope="module")
def own_loop(tmp_path_factory):
    out = tmp_path_factory.mktemp("own_loop")
    return out, _run([str(EXAMPLES / "own_loop.py"), "--output-dir", str(out)])


@pytest.mark.slow
def test_own_loop_ends_with_the_weights_of_unlearn(own_loop):
    out, run = own_loop
    stdout = _ok(run)
    assert "weights equal to vf.unlearn's bit for bit: yes" in stdout
    assert "0 in the language model" in stdout
    _only_visual_changed(out / "checkpoint", out / "unlearned")
    _loads_with_transformers(out / "unlearned")
    run_json = json.loads((out / "run" / "run.json").read_text())  # the run folder of vf.unlearn
    assert run_json["trajectory"]["method"] == "vkd" and run_json["trajectory"]["steps"] == 8, run_json
    assert (out / "run" / "checkpoint-8").is_dir() and (out / "run" / "teacher.vkdc").is_file()


@pytest.mark.slow
def test_own_loop_under_torchrun_trains_what_one_process_does(own_loop, tmp_path):
    one, single = own_loop
    _ok(single)
    out = tmp_path / "ddp"
    run = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                str(EXAMPLES / "own_loop.py"), "--output-dir", str(out)])
    stdout = _ok(run)
    assert "rank 0: done (2 processes)" in stdout and "rank 1: done (2 processes)" in stdout
    assert json.loads((out / "run" / "run.json").read_text())["trajectory"]["world_size"] == 2
    _only_visual_changed(out / "checkpoint", out / "unlearned")
    from safetensors.torch import load_file

    a, b = load_file(one / "unlearned" / "model.safetensors"), load_file(out / "unlearned" / "model.safetensors")
    # DDP averages per-rank gradients: another reduction order, so equal to rounding (one update here is ~1e-3)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.slow
def test_own_loop_refuses_a_used_output_dir(own_loop):
    out, _ = own_loop
    run = _run([str(EXAMPLES / "own_loop.py"), "--output-dir", str(out)])
    assert run.returncode == 2 and "is not empty: choose a new folder" in run.stderr, run.stderr[-2000:]


@pytest.mark.slow
def test_hf_trainer_ends_with_the_weights_of_unlearn(tmp_path):
    stdout = _ok(_run([str(EXAMPLES / "hf_trainer.py"), "--output-dir", str(tmp_path)]))
    assert "Trainer: 8 steps" in stdout
    assert "weights equal to the Trainer's bit for bit: yes" in stdout
    _only_visual_changed(tmp_path / "checkpoint", tmp_path / "trainer" / "unlearned")
    _loads_with_transformers(tmp_path / "trainer" / "unlearned")


@pytest.mark.slow
def test_checkpoint_recipe_runs_the_shipped_script(tmp_path):
    stdout = _ok(_run([str(EXAMPLES / "checkpoint_recipe.py"), "--output-dir", str(tmp_path)]))
    vanilla, out = tmp_path / "llava-mllmu-vanilla", tmp_path / "runs" / "mllmu-vkd"
    log = (tmp_path / "recipe.log").read_text()
    assert "loading only the vision tower and projector" in log  # the script's unlearn took the visual-only path
    summary = json.loads((out / "run" / "result.json").read_text())
    assert summary["visual_only"] and summary["config"]["steps"] == 4 and summary["saved"] == "delta"
    assert summary["config"]["lr"] == 1e-3 and summary["options"]["forget_target"] == "retain_person"  # the YAML's
    _only_visual_changed(vanilla, out / "model")  # vkd-fast export: the vanilla folder + the unlearned tensors
    _loads_with_transformers(out / "model")
    for name in ("tokenizer.json", "preprocessor_config.json"):  # the folder's own files travel with it
        assert (out / "model" / name).read_bytes() == (vanilla / name).read_bytes(), name
    for who in ("vkd", "vanilla"):
        result = json.loads((out / "eval" / f"{who}-seed0.json").read_text())
        accuracy = result["Forget Set Results"]["classification"]["Image-Textual Question Accuracy"]
        assert 0 <= accuracy <= 100 and result["vkd_fast"]["seed"] == 0
        assert (out / "eval" / f"{who}-seed0.questions.jsonl").is_file()
        assert f"eval {who}: forget VQA {accuracy:.1f}%" in stdout
    assert "0 of them outside the vision tower and projector" in stdout
