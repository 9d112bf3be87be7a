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
                                              steps=(10,), seeds=(0,)), oracle_steps=400, bootstrap_draws=2000)
    report = run_demo(models, config, output_dir=tmp_path, progress=False, environment={"test": True})
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["vanilla", "gold", "oracle", "vkd", "grad_diff"]
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
    # (the reduced world; on worlds 1 and 2 of the study it is not met -- see docs/robustness.md)
    assert k["recovery_visual"] <= g["recovery_visual"] + 0.10
    seeds = report["details"]["vkd"]["relearn"]["default"]["cells"]
    assert all(len(c["recoveries"]) == 2 for c in seeds)  # a mean over the two attack seeds
    assert {"worst_llm", "worst_visual"} <= set(k) and {"worst_llm", "worst_visual"} <= set(g)
    assert len(report["checks"]) == 13
    failed = {c["check"] for c in report["checks"] if not c["ok"]}
    measured = {"relearn llm (default attack, mean over seeds) <= gold + 0.10",
                "relearn llm worst case over the grid <= gold's worst + 0.15",
                "relearn visual worst case over the grid <= gold's worst + 0.15",
                # the V+P limit: measured, not promised (docs/robustness.md)
                "relearn llm (default attack, mean over seeds) <= oracle + 0.00 (the V+P limit)",
                "relearn visual (default attack, mean over seeds) <= oracle + 0.00 (the V+P limit)"}
    assert failed <= measured, failed
    # the oracle is a reference row like gold: the same keys, attacked the same way
    o = rows["oracle"]
    assert set(o) == set(g) and {"recovery_llm", "recovery_visual", "worst_llm", "worst_visual"} <= set(o)
    assert o["forget_qa"] == v["forget_qa"] and o["retain_vqa"] >= 0.95
    # paired statistics over attack seeds, recomputed here from the per-seed recoveries
    stats = report["details"]["vkd"]["stats"]["visual"]
    mine = stats["recoveries"]
    gold_r = report["details"]["gold"]["stats"]["visual"]["recoveries"]
    oracle_r = report["details"]["oracle"]["stats"]["visual"]["recoveries"]
    assert len(mine) == len(gold_r) == len(oracle_r) == 2
    assert stats["vs_gold"]["mean"] == pytest.approx(sum(mine) / 2 - sum(gold_r) / 2)
    assert stats["vs_oracle"]["mean"] == pytest.approx(sum(mine) / 2 - sum(oracle_r) / 2)
    assert stats["vs_gold"]["low"] <= stats["vs_gold"]["mean"] <= stats["vs_gold"]["high"]
    if sum(oracle_r) != sum(gold_r):
        assert stats["gap_closed"]["value"] == pytest.approx((sum(oracle_r) - sum(mine)) / (sum(oracle_r) - sum(gold_r)))
    assert "vs_oracle" not in report["details"]["oracle"]["stats"]["visual"]  # not against itself
    assert "C " in (tmp_path / "report.md").read_text() or "C n/a" in (tmp_path / "report.md").read_text()
    for r in (k, rows["grad_diff"], g):
        assert {"recovery_llm", "recovery_visual", "identity_probe"} <= set(r)
    # the embedding attack on every attacked row; W is vanilla's for VKD and the oracle alike
    for name in ("gold", "oracle", "vkd", "grad_diff"):
        e = report["details"][name]["embedding_attack"]
        assert rows[name]["recovery_embedding"] == pytest.approx(e["recovery"], nan_ok=True), name
        assert e["acc_taught"] >= 0.9, name
    assert "recovery_embedding" not in v
    # the privacy audit on every row: vanilla's forget images are told from strangers', gold is the zero
    for r in rows.values():
        assert {"mia_auc", "mia_auc_min_k", "privacy_leak"} <= set(r) and 0 <= r["mia_auc"] <= 1
    assert v["mia_auc"] > 0.9 and g["privacy_leak"] == 0.0
    assert v["privacy_leak"] == pytest.approx((v["mia_auc"] - g["mia_auc"]) / g["mia_auc"])
    assert k["trainable"] > 0 and k["seconds"] > 0 and rows["grad_diff"]["steps"] <= 30
    # weights + grads + 2 AdamW moments of the trained tensors, plus the teacher cache for VKD
    assert k["state_mib"] > 16 * k["trainable"] / 2**20  # > : the teacher cache adds its bytes
    assert rows["grad_diff"]["state_mib"] == pytest.approx(16 * rows["grad_diff"]["trainable"] / 2**20)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["rows"][3]["method"] == "vkd" and saved["environment"] == {"test": True}
    assert "| vkd |" in (tmp_path / "report.md").read_text() and (tmp_path / "report.png").stat().st_size > 1000


def test_the_shipped_profile_holds_the_demos_methods_and_settings():
    from vkd_fast import configs
    from vkd_fast.demo import load_profile

    # the settings the demo's figures were measured with (the report's method_configs)
    want = {"vkd": {}, "vkd_robust": {}, "ga": {"lr": 1e-4}, "grad_diff": {"lr": 1e-4}, "kl_min": {"lr": 1e-4}, "npo": {"lr": 1e-4},
            "mmunlearner": {"lr": 1e-4, "options": {"mask_ratio": 0.3}}}
    assert load_profile() == want and list(load_profile()) == list(want)  # the order is the run order
    assert configs.path("demo") == configs.HERE / "demo.yaml"
    config = DemoConfig()
    assert config.methods == tuple(want) and config.method_configs == want
    assert DemoConfig(methods=("npo", "vkd")).methods == ("npo", "vkd")


def test_another_profile_by_path(tmp_path):
    (tmp_path / "p.yaml").write_text("methods:\n  grad_diff: {lr: 2.0e-4, steps: 5}\n  vkd:\n")
    config = DemoConfig(profile=str(tmp_path / "p.yaml"))
    assert config.methods == ("grad_diff", "vkd")
    assert config.method_configs == {"grad_diff": {"lr": 2e-4, "steps": 5}, "vkd": {}}
    with pytest.raises(ValueError, match=r"methods must be a non-empty subset of \('grad_diff', 'vkd'\)"):
        DemoConfig(profile=str(tmp_path / "p.yaml"), methods=("ga",))


@pytest.mark.parametrize("text, error", [
    ("methods:\n  nope: {}\n", r"p.yaml: methods.nope: method must be one of"),
    ("methods:\n  ga: {lrr: 1.0}\n", r"p.yaml: methods.ga: unknown option\(s\) lrr"),
    ("methods:\n  ga: {lr: fast}\n", r"p.yaml: methods.ga: option lr: expected float"),
    ("methods:\n  mmunlearner: {options: {mask_ratio: 2.0}}\n", r"p.yaml: methods.mmunlearner: .*mask_ratio"),
    ("methods:\n  vkd: {options: {forget_target: repel}}\n", r"p.yaml: methods.vkd: forget_target 'repel'"),
    ("methods:\n  vkd: 3\n", r"p.yaml: methods.vkd: expected a mapping of settings"),
    ("method:\n  vkd: {}\n", r"p.yaml: expected one key, methods .*unknown key\(s\) method"),
    ("- vkd\n", r"p.yaml: expected a mapping"),
    ("methods: [\n", r"p.yaml: not valid YAML"),
])
def test_a_bad_profile_is_refused_naming_the_file_and_key(tmp_path, text, error):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ValueError, match=error):
        DemoConfig(profile=str(tmp_path / "p.yaml"))


def test_demo_config_option_of_the_cli(tmp_path, capsys):
    from vkd_fast.cli import main

    code = main(["demo", "--config", "nope", "--output-dir", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "demo profile nope: no such file, and no shipped configuration of that name" in err
    assert "demo, mllmu_llava15_vkd, robustness_study" in err
    (tmp_path / "p.yaml").write_text("methods:\n  ga: {lr: 1.0e-4}\n")
    code = main(["demo", "--config", str(tmp_path / "p.yaml"), "--methods", "vkd", "--output-dir",
                 str(tmp_path / "out"), "--device", "cpu"])
    assert code == 2 and "methods must be a non-empty subset of ('ga',)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_stats_lines_read_a_report_from_before_c_had_its_caveat():
    from vkd_fast.demo import stats_lines

    d = {"mean": 0.1, "low": -0.1, "high": 0.3}
    old = {"rows": [{"method": "vkd"}], "details": {"vkd": {"stats": {"visual": {
        "recoveries": [0.1, 0.2], "vs_gold": d, "vs_oracle": d, "gap_closed": {"value": 0.5, "low": 0.1, "high": 0.9}}}}}}
    assert stats_lines(old) == ["vkd          visual seeds +0.10, +0.20; vs gold +0.10 [-0.10, +0.30]; "
                                "vs oracle +0.10 [-0.10, +0.30]; C +0.50 [+0.10, +0.90]"]
    old["details"]["vkd"]["stats"]["visual"]["gap_closed"]["meaningful"] = False
    assert stats_lines(old)[0].endswith("C +0.50 [+0.10, +0.90] (not meaningful: oracle - gold not clearly > 0)")


@pytest.mark.slow
def test_vkd_robust_runs_its_steps_and_is_judged_by_the_bars(toy, tmp_path):
    models, _ = toy
    config = DemoConfig(methods=("vkd_robust",), overrides={"vkd_robust": {"steps": 20, "options": {"lock_steps": 2}}},
                        attack=AttackGrid(splits=("attributes:job,city",), lrs=(1e-3,), steps=(5,), seeds=(0,)),
                        worst_grid=None, oracle_steps=400, bootstrap_draws=200, embedding_attack=False)
    report = run_demo(models, config, output_dir=tmp_path, progress=False, environment={"test": True})
    rows = {r["method"]: r for r in report["rows"]}
    assert rows["vkd_robust"]["steps"] == 20  # no early stop: its default schedule, like vkd
    assert report["details"]["vkd_robust"]["text_logits_identical"] is True  # the lock never sees text
    assert report["checks"] == [] and len(report["checks_by_method"]["vkd_robust"]) == 11
    assert "vkd_robust" in (tmp_path / "report.md").read_text()
    from vkd_fast.demo import summary

    assert "vkd_robust text-only logits bit-identical to vanilla: True" in summary(report)
