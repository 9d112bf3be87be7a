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
