"""Reports of a method comparison: JSON (machine-readable, with config and environment), a Markdown
table, and a PNG chart (matplotlib). All files are written to a temporary name, then renamed."""

from __future__ import annotations

import io
import json
import math

from ..utils.files import atomic_write

#: table columns: (row key, header, format)
COLUMNS = (
    ("forget_vqa", "forget VQA", "pct"),
    ("forget_vqa_unseen", "forget VQA unseen", "pct"),
    ("forget_qa", "forget QA", "pct"),
    ("retain_vqa", "retain VQA", "pct"),
    ("retain_qa", "retain QA", "pct"),
    ("real_world_vqa", "real-world VQA", "pct"),
    ("collapse_share", "collapse", "pct"),
    ("identity_probe", "identity probe", "pct"),
    ("recovery_llm", "relearn llm", "ratio"),
    ("recovery_visual", "relearn visual", "ratio"),
    ("worst_llm", "worst llm", "ratio"),
    ("worst_visual", "worst visual", "ratio"),
    ("recovery_embedding", "embedding attack", "ratio"),
    ("mia_auc", "MIA AUC", "ratio"),
    ("privacy_leak", "privacy leak", "ratio"),
    ("steps", "steps", "int"),
    ("seconds", "time s", "sec"),
    ("state_mib", "state MiB", "sec"),
    ("peak_extra_mib", "peak MiB", "sec"),
    ("trainable", "trainable params", "int"),
)


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}"
    if kind == "ratio":
        return f"{value:.2f}"
    if kind == "sec":
        return f"{value:.1f}"
    return f"{int(value):,}"


#: the columns that measure this machine, not the method (left out where a table must reproduce)
WALL_CLOCK = ("seconds",)


def _columns(rows: list[dict], exclude=()) -> list[tuple]:
    return [c for c in COLUMNS if c[0] not in exclude and any(r.get(c[0]) is not None for r in rows)]


def markdown_table(rows: list[dict], exclude=()) -> str:
    """Rows (``{"method": ..., metric: value}``) -> a Markdown table; accuracies in percent. ``exclude``:
    row keys whose columns are left out (e.g. :data:`WALL_CLOCK`)."""
    cols = _columns(rows, exclude)
    lines = ["| method | " + " | ".join(h for _, h, _ in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['method']} | " + " | ".join(_fmt(r.get(k), f) for k, _, f in cols) + " |")
    return "\n".join(lines)


def text_table(rows: list[dict], exclude=()) -> str:
    """The same table for a terminal (aligned columns)."""
    cols = _columns(rows, exclude)
    header = ["method"] + [h for _, h, _ in cols]
    body = [[r["method"]] + [_fmt(r.get(k), f) for k, _, f in cols] for r in rows]
    widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in [header] + body)


def _clean(obj):
    """JSON-safe: NaN / inf -> None (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path, report: dict) -> None:
    atomic_write(path, json.dumps(_clean(report), indent=1, allow_nan=False))


def write_jsonl(path, records: list[dict]) -> None:
    """One strict JSON object per line (NaN -> null, non-ASCII kept), written atomically: the
    protocols' per-question audit file."""
    atomic_write(path, "".join(json.dumps(_clean(r), ensure_ascii=False, allow_nan=False) + "\n" for r in records))


def write_markdown(path, rows: list[dict], title: str = "", notes: str = "", exclude=()) -> None:
    text = (f"## {title}\n\n" if title else "") + markdown_table(rows, exclude) + "\n"
    text += f"\n{notes}\n" if notes else ""
    atomic_write(path, text)


def plot(path, rows: list[dict], chance: float | None = None, title: str = "") -> None:
    """Grouped bars per method: forget / retain accuracies and relearning recovery."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc_keys = [c for c in COLUMNS if c[2] == "pct" and c[0] != "collapse_share" and any(r.get(c[0]) is not None
                                                                                        for r in rows)]
    rec_keys = [c for c in COLUMNS if c[2] == "ratio" and any(r.get(c[0]) is not None for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [3, 1.3]})
    width = 0.8 / max(1, len(rows))
    for ax, keys, ylabel in ((axes[0], acc_keys, "accuracy (%)"), (axes[1], rec_keys, "recovery (lower = robust)")):
        for i, r in enumerate(rows):
            vals = [r.get(k) for k, _, _ in keys]
            vals = [float("nan") if v is None else (100 * v if ax is axes[0] else v) for v in vals]
            ax.bar([j + (i - (len(rows) - 1) / 2) * width for j in range(len(keys))], vals, width, label=r["method"])
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([h for _, h, _ in keys], rotation=15, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    if chance is not None:
        axes[0].axhline(100 * chance, color="k", ls=":", lw=1, label="chance")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=110)
    finally:
        plt.close(fig)
    atomic_write(path, png.getvalue())
