"""The robustness study's paired statistics (benchmarks/robustness_study.py paired_statistics) on
hand-made cells, against the formulas recomputed here; which kept cells it reuses; and the lock
diagnostics' items (benchmarks/lock_diagnostics.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import robustness_study as R  # noqa: E402


def _row(world, variant, llm, visual):
    return {"world": world, "variant": variant, "recovery_llm": sum(llm) / len(llm), "recovery_llm_seeds": llm,
            "recovery_visual": sum(visual) / len(visual), "recovery_visual_seeds": visual}


def test_paired_statistics_table():
    rows = [_row(0, "gold", [0.0, 0.1, 0.2], [0.0, 0.0, 0.3]), _row(0, "oracle", [0.5, 0.5, 0.5], [0.6, 0.9, 0.6]),
            _row(0, "default", [0.2, 0.3, 0.4], [0.3, 0.6, 0.6]),
            _row(1, "gold", [0.1, 0.1, 0.1], [0.1, 0.2, 0.0]), _row(1, "oracle", [0.4, 0.3, 0.5], [0.5, 0.4, 0.6]),
            _row(1, "default", [0.5, 0.6, 0.7], [0.7, 0.8, 0.9])]
    md = R.paired_statistics(rows, [0, 1], ["oracle", "default"], (0, 1, 2))
    line = next(x for x in md.splitlines() if x.startswith("| default | visual |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    m = [0.3, 0.6, 0.6, 0.7, 0.8, 0.9]
    g = [0.0, 0.0, 0.3, 0.1, 0.2, 0.0]
    o = [0.6, 0.9, 0.6, 0.5, 0.4, 0.6]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert cells[2].startswith(f"{(0.5 + 0.8) / 2:+.2f} [+0.50, +0.80]")  # mean over worlds [min, max]
    assert cells[3].startswith(f"{mean(m) - mean(g):+.2f} [")
    assert cells[4].startswith(f"{mean(m) - mean(o):+.2f} [")
    assert cells[5].startswith(f"{(mean(o) - mean(m)) / (mean(o) - mean(g)):+.2f} [")
    assert cells[6] == "1/2 (not: 1)"  # world 1: 0.80 > the oracle's 0.50
    gold_line = next(x for x in md.splitlines() if x.startswith("| gold | llm |"))
    assert "| – |" in gold_line  # gold is not compared with itself


def test_privacy_lines():
    by = {(0, "gold"): {"mia_auc": 0.5, "mia_auc_min_k": 0.55},
          (0, "default"): {"mia_auc": 0.6, "mia_auc_min_k": 0.7, "recovery_embedding": 0.5},
          (1, "gold"): {"mia_auc": 0.4, "mia_auc_min_k": 0.45},
          (1, "default"): {"mia_auc": 0.3, "mia_auc_min_k": 0.2, "recovery_embedding": 0.3}}
    lines = R.privacy_lines(by, [0, 1], ["gold", "default"])
    row = next(x for x in lines if x.startswith("| default |"))
    leaks = [(0.6 - 0.5) / 0.5, (0.3 - 0.4) / 0.4]
    # AUC - gold per world: +0.1, -0.1; resampling two worlds gives means -0.1, 0 or +0.1, so the 95%
    # interval is [-0.10, +0.10] around the mean 0.00
    assert row == (f"| default | 0.45 [0.30, 0.60] | +0.00 [-0.10, +0.10] | 0.45 [0.20, 0.70] | "
                   f"{sum(leaks) / 2:+.2f} [{min(leaks):+.2f}, {max(leaks):+.2f}] | +0.40 [+0.30, +0.50] |")
    gold = next(x for x in lines if x.startswith("| gold |"))
    assert gold.endswith("| – |") and gold.split("|")[3].strip() == "–"  # no embedding figure; not vs itself
    assert R.privacy_lines({}, [0], ["gold"]) == []


def test_a_kept_cell_is_reused_only_while_its_variant_runs_with_the_same_options(monkeypatch):
    monkeypatch.setattr(R, "VARIANTS", {"vkd_robust": {"method": "vkd_robust"},
                                        "vkd_robust prior": {"method": "vkd_robust",
                                                             "options": {"lock_forget_target": "prior"}}})
    now = R.resolved_options("vkd_robust")
    # the method's defaults are filled in: a changed default makes the kept cells stale
    assert now["method"] == "vkd_robust" and now["options"]["lock_forget_target"] == "stand_in"
    assert R.resolved_options("vkd_robust prior")["options"]["lock_forget_target"] == "prior"
    assert R.resolved_options("gold") is None and R.cell_is_current({}, "oracle")
    assert R.cell_is_current({"resolved_options": now}, "vkd_robust")
    stale = {**now, "options": {**now["options"], "lock_forget_target": "prior"}}
    assert not R.cell_is_current({"resolved_options": stale}, "vkd_robust")
    # an option added to the method after the cell was computed: the cell stands while the variant runs the
    # value that does what the method did before, and only for an option the study lists so
    older = {**now, "options": {k: v for k, v in now["options"].items() if k != "llm_attackers"}}
    assert R.cell_is_current({"resolved_options": older}, "vkd_robust")
    monkeypatch.setattr(R, "ADDED_OPTIONS", {})
    assert not R.cell_is_current({"resolved_options": older}, "vkd_robust")
    monkeypatch.setattr(R, "ADDED_OPTIONS", {"llm_attackers": 0})
    monkeypatch.setitem(R.VARIANTS, "vkd_robust llm1", {"method": "vkd_robust", "options": {"llm_attackers": 1}})
    assert not R.cell_is_current({"resolved_options": older}, "vkd_robust llm1")
    assert not R.cell_is_current({"resolved_options": {**older, "method": "vkd"}}, "vkd_robust")
    # cells from before the record: the variant's options as written must still match
    assert R.cell_is_current({"options": "{}"}, "vkd_robust")
    assert not R.cell_is_current({"options": "{}"}, "vkd_robust prior")


def test_lock_diagnostics_pairs_named_questions_with_the_portraits_it_says():
    import lock_diagnostics as L

    from vkd_fast.data import ToyWorld, ToyWorldConfig

    world = ToyWorld(ToyWorldConfig(seed=0))
    f, r = world.forget_ids, world.retain_ids
    own = L.named_with_image(world, f, "own")
    other = L.named_with_image(world, r, "other")
    names = {world.identities[i].name: i for i in range(len(world.identities))}
    for it in own:  # the named person's own first training portrait
        assert names[next(n for n in names if n in it["question"])] == it["identity"]
        assert it["image"].tobytes() == world.image(it["identity"], 0).tobytes()
    for it in other:  # the next retain person's portrait
        nxt = r[(r.index(it["identity"]) + 1) % len(r)]
        assert it["image"].tobytes() == world.image(nxt, 0).tobytes() and nxt != it["identity"]
    forget_other = L.named_with_image(world, f, "other")
    assert all(world.image(r[f.index(it["identity"]) % len(r)], 0).tobytes() == it["image"].tobytes()
               for it in forget_other)
    assert L.parse_runs('vkd; vkd_robust {"lock_forget_target": "prior"}') == [
        ("vkd", {}), ("vkd_robust", {"lock_forget_target": "prior"})]
    with pytest.raises(ValueError, match="whose"):
        L.named_with_image(world, f, "someone")
