"""Statistics that can tell a real gain from seed noise (docs/method.md §4.4).

A relearning attack's recovery varies a lot between attack seeds and between toy worlds (a cell's
spread over seeds can be a large part of the scale; gold itself, which never learned the forget
people, recovers a lot on one world; measured: docs/robustness.md), so a method is compared
with a reference on the *same* cells -- the same world, attack and seed -- and the uncertainty of
the mean difference comes from a paired bootstrap over those cells:

* :func:`paired_bootstrap`: the mean of ``method - reference`` over paired cells and its percentile
  interval. With ``clusters`` (each cell's world) it resamples worlds, then cells within each drawn
  world (a two-level bootstrap): seeds of one world share that world's models, so treating 25 cells
  of 5 worlds as 25 independent draws would make the interval too narrow.
* :func:`gap_closed`: C = (oracle - method) / (oracle - gold), the share of the gap between the
  V+P-only limit (the oracle) and gold that a method closes (1: at gold; 0: at the oracle; < 0:
  worse than the oracle), with its paired bootstrap interval.

Everything is plain Python (``random``) and seeded: the same inputs give the same intervals.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def _check(name: str, values, n: int | None = None) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if not out:
        raise ValueError(f"{name} must not be empty")
    if n is not None and len(out) != n:
        raise ValueError(f"{name} must have one value per cell ({n}), got {len(out)}")
    if any(math.isnan(v) for v in out):
        raise ValueError(f"{name} has NaN values: a recovery is undefined where the method did not unlearn "
                         "(before == after); drop those cells explicitly")
    return out


def _groups(n: int, clusters: Sequence | None) -> list[list[int]]:
    if clusters is None:
        return [[i] for i in range(n)]
    if len(clusters) != n:
        raise ValueError(f"clusters must name one cluster per cell ({n}), got {len(clusters)}")
    by: dict = {}
    for i, c in enumerate(clusters):
        by.setdefault(c, []).append(i)
    return list(by.values())


def _resample(groups: list[list[int]], rng: random.Random) -> list[int]:
    """Cell indices of one bootstrap draw: groups with replacement, then members of each drawn group
    with replacement (for one-member groups: plain resampling of cells)."""
    out = []
    for _ in range(len(groups)):
        g = groups[rng.randrange(len(groups))]
        out += [g[rng.randrange(len(g))] for _ in range(len(g))] if len(g) > 1 else g
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of already sorted values; ``q`` in [0, 1]."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _check_settings(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def paired_bootstrap(method: Sequence[float], reference: Sequence[float], *, clusters: Sequence | None = None,
                     n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean of ``method[i] - reference[i]`` over paired cells and its ``level`` percentile interval
    from ``n_boot`` seeded bootstrap draws (two-level when ``clusters`` names each cell's world).
    Returns ``{"mean", "low", "high", "n", "clusters", "level", "n_boot"}``."""
    a = _check("method", method)
    b = _check("reference", reference, len(a))
    _check_settings(n_boot, level)
    groups = _groups(len(a), clusters)
    d = [x - y for x, y in zip(a, b)]
    rng = random.Random(seed)
    means = sorted(sum(d[i] for i in idx) / len(idx) for idx in (_resample(groups, rng) for _ in range(n_boot)))
    alpha = (1 - level) / 2
    return {"mean": sum(d) / len(d), "low": _percentile(means, alpha), "high": _percentile(means, 1 - alpha),
            "n": len(d), "clusters": len(groups), "level": level, "n_boot": n_boot}


def gap_closed(method: Sequence[float], oracle: Sequence[float], gold: Sequence[float], *,
               clusters: Sequence | None = None, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> dict:
    """C = (mean oracle - mean method) / (mean oracle - mean gold) over paired cells, and its paired
    bootstrap interval (draws where oracle and gold coincide are left out of it; their count is
    ``undefined_draws``). ``value`` is NaN when the oracle and gold do not differ at all: then no
    method can be placed between them. ``meaningful``: the same bootstrap's interval of oracle -
    gold lies above zero; otherwise the ratio's denominator may cross zero and C's interval says
    nothing (report it as not defined). Returns ``{"value", "low", "high", "meaningful",
    "denominator_low", "n", "clusters", "level", "n_boot", "undefined_draws"}``."""
    m = _check("method", method)
    o = _check("oracle", oracle, len(m))
    g = _check("gold", gold, len(m))
    _check_settings(n_boot, level)
    groups = _groups(len(m), clusters)

    def c_of(idx) -> float:
        mo, mm, mg = (sum(v[i] for i in idx) / len(idx) for v in (o, m, g))
        return (mo - mm) / (mo - mg) if mo != mg else math.nan

    rng = random.Random(seed)
    draws, gaps = [], []
    for _ in range(n_boot):
        idx = _resample(groups, rng)
        draws.append(c_of(idx))
        gaps.append(sum(o[i] - g[i] for i in idx) / len(idx))
    kept = sorted(x for x in draws if not math.isnan(x))
    alpha = (1 - level) / 2
    low, high = (_percentile(kept, alpha), _percentile(kept, 1 - alpha)) if kept else (math.nan, math.nan)
    denominator_low = _percentile(sorted(gaps), alpha)
    return {"value": c_of(range(len(m))), "low": low, "high": high, "meaningful": denominator_low > 0,
            "denominator_low": denominator_low, "n": len(m), "clusters": len(groups), "level": level,
            "n_boot": n_boot, "undefined_draws": n_boot - len(kept)}


__all__ = ["gap_closed", "paired_bootstrap"]
