"""Plots benchmarks/results/{feature_distill,unlearn_step}.csv (the latest run) into PNG files beside them.

    python benchmarks/plot.py
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


#: rows written before the C++ loss backend was renamed from "cpu" to "cext"
RENAMED_PROVIDERS = {"cpu": "cext", "cpu-fresh": "cext-fresh"}

def latest_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    last = max(r["date"] for r in rows)
    host = next(r["host"] for r in rows if r["date"] == last)
    # the host of the newest run, and there the newest row of each configuration
    keep: dict[tuple, dict] = {}
    for r in rows:
        r["provider"] = RENAMED_PROVIDERS.get(r["provider"], r["provider"])
        if r["host"] == host:
            keep[(r["provider"], r["mode"], r["N"], r["D"], r["dtype"])] = r
    return list(keep.values())


def plot_feature_distill(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [r for r in rows if r["mode"] == "full"]
    cases = sorted({(int(r["N"]), int(r["D"]), r["dtype"]) for r in full})
    providers = [p for p in ("eager", "compile", "cext-fresh", "cext", "triton")
                 if any(r["provider"] == p for r in full)]
    times = defaultdict(dict)
    for r in full:
        times[(int(r["N"]), int(r["D"]), r["dtype"])][r["provider"]] = float(r["median_ms"])
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases) + 2), 4))
    width = 0.8 / max(1, len(providers))
    for i, p in enumerate(providers):
        xs = [j + i * width for j in range(len(cases))]
        ax.bar(xs, [times[c].get(p, 0.0) for c in cases], width, label=p)
    ax.set_xticks([j + width * (len(providers) - 1) / 2 for j in range(len(cases))])
    ax.set_xticklabels([f"N={n}\nD={d}\n{dt}" for n, d, dt in cases])
    ax.set_yscale("log")
    ax.set_ylabel("fwd+bwd time, ms (log)")
    env = full[0]
    ax.set_title(f"feature_distill_loss, full step — {env['device']}, {env['cores']} cores, torch {env['torch']}")
    ax.legend()
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    print(f"wrote {out}")


def plot_unlearn_step(path: Path, out: Path) -> None:
    """Step time and peak memory per configuration, from the newest run in unlearn_step.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    last = max(r["date"] for r in rows)
    rows = [r for r in rows if r["date"] == last]
    names = [r["config"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.barh(names, [float(r["median_ms"]) for r in rows], color="tab:blue")
    a.set_xlabel("step time, ms (median)")
    b.barh(names, [int(r["peak_bytes"]) / 2**20 for r in rows], color="tab:orange")
    b.set_xlabel("peak memory, MiB")
    a.invert_yaxis()
    b.invert_yaxis()
    fig.suptitle(f"one unlearning step, {rows[0]['size']} LLaVA — {rows[0]['device']}, {rows[0]['cores']} cores")
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    print(f"wrote {out}")


def main() -> int:
    path = RESULTS / "feature_distill.csv"
    if not path.exists():
        print(f"no results at {path}; run benchmarks/bench_feature_distill.py first", file=sys.stderr)
        return 1
    plot_feature_distill(latest_rows(path), RESULTS / "feature_distill.png")
    if (RESULTS / "unlearn_step.csv").exists():
        plot_unlearn_step(RESULTS / "unlearn_step.csv", RESULTS / "unlearn_step.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
