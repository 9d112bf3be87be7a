"""The GPU check's ``--dry-run`` (benchmarks/gpu_check.py): the code paths a CUDA machine will run, on
tiny CPU shapes, so the script is known to start before a GPU is rented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_dry_run_writes_its_report(tmp_path):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path / "gc.json"),
                          "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, env=env,
                         timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "gc.json").read_text())
    assert report["dry_run"] is True and report["ok"] is True
    assert [r["dtype"] for r in report["loss"]] == ["fp32", "bf16"]
    assert all(r["matches_reference"] and r["GBps"] > 0 and r["copy_GBps"] > 0 for r in report["loss"])
    assert report["cache"]["prefetch_matches"] and report["cache"]["pinned"] is False
    roof = report["roofline"]
    assert [(r["n"], r["d"], r["dtype"]) for r in roof] == [(64, 32, "fp32"), (64, 32, "bf16")]
    assert all(r[k] > 0 for r in roof for k in ("kernel_ms", "step_ms", "scaled_step_ms", "eager_step_ms"))
    step = report["vkd_step"]
    # the small-shaped checkpoint was written (shard by shard, hub names) and only V + P were loaded
    assert step["checkpoint_write_seconds"] is not None and step["steps"] == 2 and step["loss_finite"]
    assert len(list((tmp_path / "cache").glob("llava-1.5-small-shaped-*/*.safetensors"))) == 4
    assert step["visual_params"] == 3327488 + 787968  # CLIP-like tower + projector of the small shape
    recipe = report["recipe"]  # the shipped recipe's commands at tiny size, on the check's device
    assert recipe["ok"] and recipe["returncode"] == 0 and recipe["unlearn"]["steps"] == 3, recipe
    assert len(recipe["device_lines"]) == 3 and all("device cpu" in line for line in recipe["device_lines"])
    assert set(recipe["eval"]) == {"vkd", "vanilla"}


def test_gpu_check_without_cuda_says_what_to_do(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the real check would run")
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gc.json")], capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode != 0 and "no CUDA device; run with --dry-run" in out.stderr
    assert not (tmp_path / "gc.json").exists()


def _load_gpu_check(monkeypatch):
    import importlib.util

    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])  # the module reads --dry-run from the command line
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_reports_a_failing_check_and_runs_the_others(tmp_path, monkeypatch):
    import torch

    gc = _load_gpu_check(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the checks themselves are replaced below
    monkeypatch.setattr(gc.H, "environment", lambda: {"device": "test"})
    ran = []

    def broken(*_):
        ran.append("loss")
        raise RuntimeError("kernel exploded")

    def cache(*_):
        ran.append("cache")
        return {"prefetch_matches": True}

    def recipe(*_):
        ran.append("recipe")
        return {"skipped": "missing packages: nltk", "ok": None}

    monkeypatch.setattr(gc, "check_loss", broken)
    monkeypatch.setattr(gc, "check_cache", cache)
    monkeypatch.setattr(gc, "check_recipe", recipe)
    out = tmp_path / "gc.json"
    assert gc.main(["--out", str(out), "--checks", "loss,recipe,cache"]) == 1
    assert ran == ["loss", "recipe", "cache"]  # in the order asked for, past the failure
    report = json.loads(out.read_text())
    assert report["loss"]["error"] == "RuntimeError: kernel exploded" and "Traceback" in report["loss"]["traceback"]
    assert report["passed"] == {"loss": False, "recipe": None, "cache": True} and report["ok"] is False
    assert "vkd_step" not in report
    assert gc.main(["--out", str(out), "--checks", "cache,recipe"]) == 0  # a skipped check does not fail the run
    assert json.loads(out.read_text())["ok"] is True


def test_gpu_check_rejects_unknown_checks(monkeypatch, tmp_path):
    gc = _load_gpu_check(monkeypatch)
    with pytest.raises(SystemExit, match="--checks must name some of loss, roofline, cache, recipe, vkd_step"):
        gc.main(["--out", str(tmp_path / "gc.json"), "--checks", "loss,speed"])
