"""`vkd-fast eval` and `vkd-fast relearn` (and the demo's argument errors) end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _tiny_models as T
import pytest
from _parquet import GREEN, RED, eval_schema, person, write
from _toy import EXE

from vkd_fast.eval import (
    evaluate,
    toy_eval_sets,
)


def _run(*args, cwd, cache):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["VKD_FAST_CACHE_DIR"] = str(cache)
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900, check=False)


@pytest.mark.slow
def test_eval_and_relearn_commands(toy, tmp_path):
    models, cache = toy
    van, gold = tmp_path / "vanilla", tmp_path / "gold"
    models.vanilla.save_pretrained(van)
    models.tokenizer.save_pretrained(van)
    models.gold.save_pretrained(gold)  # no tokenizer here: --tokenizer is needed
    out = _run("eval", str(van), "--identities", "12", "--forget-fraction", "0.25", "--output", str(tmp_path / "e.json"), cwd=tmp_path, cache=cache)
    assert out.returncode == 0, out.stderr
    got = json.loads((tmp_path / "e.json").read_text())["metrics"]
    want = evaluate(models.vanilla, models.tokenizer, toy_eval_sets(models.world))
    for key in ("forget_vqa", "forget_vqa_unseen", "forget_qa", "retain_vqa", "retain_qa"):
        assert got[key] == pytest.approx(want[key], abs=1.5 / want["n"][key]), key  # sdpa vs eager: near-ties
    assert "forget VQA" in out.stdout
    out = _run("relearn", str(gold), "--before", str(van), "--tokenizer", str(van), "--identities", "12", "--forget-fraction", "0.25", "--steps",
               "3", "--modes", "visual", "--seeds", "0,1", "--output", str(tmp_path / "r.json"), cwd=tmp_path, cache=cache)
    assert out.returncode == 0, out.stderr
    rel = json.loads((tmp_path / "r.json").read_text())
    assert [c["mode"] for c in rel["cells"]] == ["visual"] and len(rel["cells"][0]["recoveries"]) == 2
    assert rel["cells"][0]["split"] == "attributes:job,city" and rel["worst"]["visual"]["steps"] == 3
    assert "worst case, visual" in out.stdout and "recovery" in out.stdout
    out = _run("relearn", str(gold), "--before", str(van), "--tokenizer", str(van), "--identities", "12", "--forget-fraction", "0.25",
               "--seeds", "a,b", cwd=tmp_path, cache=cache)
    assert out.returncode == 2 and "--seeds must be comma-separated integers" in out.stderr
    out = _run("eval", str(gold), "--identities", "12", "--forget-fraction", "0.25", "--data", "mllmu", cwd=tmp_path, cache=cache)
    assert out.returncode == 2 and "--data mllmu needs --root" in out.stderr
    out = _run("demo", "--methods", "vkd,nope", cwd=tmp_path, cache=cache)
    assert out.returncode == 2 and "methods must be a non-empty subset" in out.stderr


@pytest.mark.slow
def test_eval_command_on_an_mllmu_copy(tmp_path):
    import json
    import os
    import subprocess

    root = tmp_path / "MLLMU-Bench"
    write(root / "forget_5" / "a.parquet", [person("p0", RED)], eval_schema())
    write(root / "retain_95" / "a.parquet", [person("r0", GREEN)], eval_schema())
    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    exe = str(Path(sys.executable).with_name("vkd-fast"))
    out = subprocess.run([exe, "eval", str(tmp_path / "model"), "--data", "mllmu", "--root", str(root),
                          "--max-new-tokens", "2", "--output", str(tmp_path / "e.json")],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "e.json").read_text())["metrics"]
    assert metrics["n"] == {"forget_vqa": 2, "forget_qa": 1, "retain_vqa": 2, "retain_qa": 1, "forget_generation": 2,
                            "forget_cloze": 2, "retain_generation": 2, "retain_cloze": 2}
    for key in ("forget_vqa", "forget_generation_rouge_l", "forget_cloze", "retain_generation_exact_match"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "forget_cloze:" in out.stdout
