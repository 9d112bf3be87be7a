"""The bars (vkd_fast.eval.bars), each against hand-set rows."""

import pytest

from vkd_fast.eval.bars import Bars, unlearning_bars

VANILLA = {"forget_qa": 1.0, "retain_qa": 1.0, "retain_vqa": 0.97}
GOLD = {"forget_vqa": 0.20, "forget_vqa_unseen": 0.10, "collapse_share": 0.42, "recovery_llm": 0.1,
        "recovery_visual": 0.0, "worst_llm": 0.3, "worst_visual": 0.2}
GOOD = {"forget_vqa": 0.24, "forget_vqa_unseen": 0.08, "collapse_share": 0.5, "forget_qa": 1.0, "retain_qa": 1.0,
        "retain_vqa": 0.951, "recovery_llm": 0.2, "recovery_visual": 0.1, "worst_llm": 0.45, "worst_visual": 0.35}


def test_a_row_at_every_bound_passes():
    checks = unlearning_bars(GOOD, GOLD, VANILLA, chance=0.125, text_identical=True)
    assert len(checks) == 11 and all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
    band = next(c for c in checks if c["check"].startswith("forget_vqa_unseen"))
    assert band["bound"] == pytest.approx([0.05, 0.175])  # [min(chance, gold) - 5 pt, max(chance, gold) + 5 pt]


@pytest.mark.parametrize("key, value, failing", [
    ("recovery_visual", 0.11, "relearn visual (default attack"),
    ("worst_llm", 0.46, "relearn llm worst case"),
    ("forget_vqa", 0.26, "forget_vqa in"),
    ("forget_vqa_unseen", 0.04, "forget_vqa_unseen in"),  # below the band: wrong on purpose
    ("collapse_share", 0.53, "collapse"),
    ("forget_qa", 0.99, "forget_qa == vanilla"),
    ("retain_vqa", 0.949, "retain_vqa >= vanilla - 0.02"),
    ("recovery_llm", float("nan"), "relearn llm (default attack"),
])
def test_each_bar_fails_alone(key, value, failing):
    checks = unlearning_bars({**GOOD, key: value}, GOLD, VANILLA, chance=0.125)
    bad = [c["check"] for c in checks if not c["ok"]]
    assert len(bad) == 1 and bad[0].startswith(failing), bad


def test_missing_inputs_leave_their_bars_out():
    row = {k: v for k, v in GOOD.items() if not k.startswith("worst")}
    checks = unlearning_bars(row, GOLD, VANILLA, chance=0.125, bars=Bars(collapse_margin=0.0))
    assert len(checks) == 8 and not any("worst" in c["check"] for c in checks)
    assert [c["ok"] for c in checks if c["check"].startswith("collapse")] == [False]
    assert not unlearning_bars(GOOD, GOLD, VANILLA, 0.125, text_identical=False)[-1]["ok"]


def test_the_v_p_limit_bars_with_an_oracle_row():
    oracle = {"recovery_llm": 0.2, "recovery_visual": 0.4}
    checks = unlearning_bars(GOOD, GOLD, VANILLA, chance=0.125, oracle=oracle)
    limit = [c for c in checks if "(the V+P limit)" in c["check"]]
    assert [c["check"].split(" (default")[0] for c in limit] == ["relearn llm", "relearn visual"]
    assert all(c["ok"] for c in limit) and [c["bound"] for c in limit] == [0.2, 0.4]  # at or under the oracle
    lower = {**oracle, "recovery_llm": 0.19}  # the row now regains more than the oracle, still <= gold + 0.10
    over = unlearning_bars(GOOD, GOLD, VANILLA, chance=0.125, oracle=lower)
    bad = [c["check"] for c in over if not c["ok"]]
    assert bad == ["relearn llm (default attack, mean over seeds) <= oracle + 0.00 (the V+P limit)"]
    margin = unlearning_bars(GOOD, GOLD, VANILLA, chance=0.125, oracle=lower, bars=Bars(oracle_margin=0.05))
    assert all(c["ok"] for c in margin)
