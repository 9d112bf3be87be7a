"""Paired bootstrap and the gap-closed share C (vkd_fast.eval.stats) against exact enumeration of the
bootstrap distribution (small cases: every resample listed, numpy's percentiles) and hand formulas."""

import itertools
import math

import numpy as np
import pytest

from vkd_fast.eval.stats import gap_closed, paired_bootstrap


def exact_interval(diffs, level=0.95):
    """The bootstrap distribution of the mean, enumerated (every ordered resample is equally likely),
    and its quantiles (the inverse of its CDF: what many draws' percentiles converge to)."""
    n = len(diffs)
    means = [np.mean([diffs[i] for i in idx]) for idx in itertools.product(range(n), repeat=n)]
    a = (1 - level) / 2
    return (np.percentile(means, 100 * a, method="inverted_cdf"),
            np.percentile(means, 100 * (1 - a), method="inverted_cdf"))


def test_paired_bootstrap_matches_the_enumerated_distribution():
    method, ref = [0.9, 0.1, 0.5, 0.7, 0.2], [0.3, 0.2, 0.1, 0.4, 0.0]
    out = paired_bootstrap(method, ref, n_boot=40000, seed=3)
    diffs = [m - r for m, r in zip(method, ref)]
    lo, hi = exact_interval(diffs)
    assert out["mean"] == pytest.approx(np.mean(diffs))
    assert out["low"] == pytest.approx(lo, abs=0.02) and out["high"] == pytest.approx(hi, abs=0.02)
    assert (out["n"], out["clusters"], out["level"]) == (5, 5, 0.95)
    assert paired_bootstrap(method, ref, n_boot=40000, seed=3) == out  # seeded: reproducible
    narrow = paired_bootstrap(method, ref, n_boot=40000, seed=3, level=0.5)
    assert lo < narrow["low"] < narrow["high"] < hi


def test_constant_differences_give_a_point_and_pairing_removes_shared_noise():
    ref = [0.1, 0.9, 0.4, 0.6]
    out = paired_bootstrap([r + 0.25 for r in ref], ref, n_boot=500)
    assert out["low"] == pytest.approx(0.25) and out["high"] == pytest.approx(0.25)
    assert out["mean"] == pytest.approx(0.25)


def test_clusters_resample_worlds_then_cells():
    # every cell of a world has the same difference: the two-level bootstrap is the bootstrap of the
    # worlds' means, enumerated exactly over the 3 worlds
    world_diff = {0: 0.6, 1: -0.2, 2: 0.1}
    clusters = [w for w in world_diff for _ in range(4)]
    diffs = [world_diff[w] for w in clusters]
    out = paired_bootstrap(diffs, [0.0] * len(diffs), clusters=clusters, n_boot=40000, seed=1)
    lo, hi = exact_interval(list(world_diff.values()))
    assert out["clusters"] == 3 and out["n"] == 12
    assert out["low"] == pytest.approx(lo, abs=0.02) and out["high"] == pytest.approx(hi, abs=0.02)
    # treating the 12 cells as independent would claim a narrower interval
    flat = paired_bootstrap(diffs, [0.0] * len(diffs), n_boot=40000, seed=1)
    assert flat["high"] - flat["low"] < out["high"] - out["low"]


def test_gap_closed_formula_interval_and_degenerate_cases():
    oracle, gold = [0.5, 0.7, 0.6, 0.4], [0.1, 0.2, 0.0, 0.1]
    method = [0.3, 0.5, 0.2, 0.2]
    out = gap_closed(method, oracle, gold, n_boot=2000)
    want = (np.mean(oracle) - np.mean(method)) / (np.mean(oracle) - np.mean(gold))
    assert out["value"] == pytest.approx(want)
    assert out["low"] <= out["value"] <= out["high"] and out["undefined_draws"] == 0
    assert gap_closed(gold, oracle, gold, n_boot=200)["value"] == pytest.approx(1.0)
    assert gap_closed(oracle, oracle, gold, n_boot=200)["value"] == pytest.approx(0.0)
    assert out["meaningful"] and out["denominator_low"] > 0  # the oracle is above gold in every cell
    # an oracle that is sometimes above, sometimes below gold: the ratio's denominator crosses zero
    shaky = gap_closed(method, [0.2, 0.1, 0.3, 0.0], [0.1, 0.2, 0.0, 0.3], n_boot=2000)
    assert not shaky["meaningful"] and shaky["denominator_low"] <= 0
    same = gap_closed(method, gold, gold, n_boot=200)
    assert math.isnan(same["value"]) and same["undefined_draws"] == 200 and math.isnan(same["low"])


def test_refusals_name_the_argument():
    with pytest.raises(ValueError, match="reference must have one value per cell"):
        paired_bootstrap([1, 2], [1])
    with pytest.raises(ValueError, match="method must not be empty"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="method has NaN values"):
        paired_bootstrap([float("nan")], [0.0])
    with pytest.raises(TypeError, match="gold must be a sequence of numbers"):
        gap_closed([1.0], [1.0], ["x"])
    with pytest.raises(ValueError, match="clusters must name one cluster per cell"):
        paired_bootstrap([1, 2], [1, 2], clusters=[0])
    with pytest.raises(ValueError, match="n_boot must be an int >= 100"):
        paired_bootstrap([1], [1], n_boot=10)
    with pytest.raises(ValueError, match="level must be in"):
        paired_bootstrap([1], [1], level=1.5)
