"""The toy-world demo (vkd_fast.demo) end to end on a reduced world."""

from __future__ import annotations

import json

import pytest

from vkd_fast.demo import DemoConfig, run_demo
from vkd_fast.eval.relearn import AttackGrid


@pytest.mark.slow
def test_reduced_demo_meets_the_vkd_bars(toy, tmp_path):
    models, _ = toy
    config = DemoConfig(methods=("vkd", "grad_diff"), overrides={"grad_diff": {"steps": 30}},
                        attack=AttackGrid(splits=("attributes:job,city",), lrs=(1e-3,), steps=(10,), seeds=(0, 1)),
                        worst_grid=AttackGrid(splits=("attributes:job,city", "attributes:hobby,pet"), lrs=(1e-3,),
                                              steps=(10,), seeds=(0,)))
    report = run_demo(models, config, output_dir=tmp_path, progress=False, environment={"test": True})
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["vanilla", "gold", "vkd", "grad_diff"]
    v, g, k = rows["vanilla"], rows["gold"], rows["vkd"]
    chance = 1 / 8
    # the issue's bars, restated from the rows (independently of the report's own checks)
    for key in ("forget_vqa", "forget_vqa_unseen"):  # within 5 points of [chance, gold]
        assert min(chance, g[key]) - 0.05 <= k[key] <= max(chance, g[key]) + 0.05, key
    assert k["collapse_share"] <= g["collapse_share"] + 0.10
    assert k["forget_qa"] == v["forget_qa"] and k["retain_qa"] == v["retain_qa"]
    assert k["retain_vqa"] >= v["retain_vqa"] - 0.02
    assert report["details"]["vkd"]["text_logits_identical"] is True
    # vision-side relearning, the default attack's mean over its seeds: no more than gold's + 0.10 here
    # (the reduced world; on worlds 1 and 2 of the study it is not met -- see the README's Robustness section)
    assert k["recovery_visual"] <= g["recovery_visual"] + 0.10
    seeds = report["details"]["vkd"]["relearn"]["default"]["cells"]
    assert all(len(c["recoveries"]) == 2 for c in seeds)  # a mean over the two attack seeds
    assert {"worst_llm", "worst_visual"} <= set(k) and {"worst_llm", "worst_visual"} <= set(g)
    assert len(report["checks"]) == 11
    failed = {c["check"].split(" <=")[0].split(" in [")[0] for c in report["checks"] if not c["ok"]}
    assert failed <= {"relearn llm (default attack, mean over seeds)", "relearn llm worst case over the grid",
                      "relearn visual worst case over the grid"}, failed
    for r in (k, rows["grad_diff"], g):
        assert {"recovery_llm", "recovery_visual", "identity_probe"} <= set(r)
    assert k["trainable"] > 0 and k["seconds"] > 0 and rows["grad_diff"]["steps"] <= 30
    # weights + grads + 2 AdamW moments of the trained tensors, plus the teacher cache for VKD
    assert k["state_mib"] > 16 * k["trainable"] / 2**20  # > : the teacher cache adds its bytes
    assert rows["grad_diff"]["state_mib"] == pytest.approx(16 * rows["grad_diff"]["trainable"] / 2**20)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["rows"][2]["method"] == "vkd" and saved["environment"] == {"test": True}
    assert "| vkd |" in (tmp_path / "report.md").read_text() and (tmp_path / "report.png").stat().st_size > 1000
