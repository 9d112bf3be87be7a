"""Robustness study of VKD variants on several toy worlds (the robust-VKD issue).

For every world seed and every variant: unlearn a fresh copy of the vanilla model, evaluate every
metric, check that text-only logits are bit-identical, run the identity probe, the default relearning
attack over several attack seeds (mean and spread of the recovery, both modes) and -- for the variants
named with --grid, and for gold -- the attack grid's worst case (each cell a mean over --grid-seeds).
Each variant is judged by the bars of vkd_fast.eval.bars against the world's gold model; the cost is
the unlearning wall time against the previous default ("v0") in the same run.

References: ``gold`` (the model that never learned the forget people's images) and, with --oracle,
``oracle``: the vanilla model's frozen language model with a vision tower + projector re-initialised
and trained on the retain people's image questions only -- the best any method that keeps the LLM
(as VKD does by design) could hope to reach.

    python benchmarks/robustness_study.py                          # worlds 0,1,2, every variant
    python benchmarks/robustness_study.py --worlds 0 --variants v0,default --attack-seeds 0
    python benchmarks/robustness_study.py --grid default --oracle   # + the grid for the default, the oracle
    python benchmarks/robustness_study.py --cost 3 --variants default   # the default's cost vs v0, one run

The variants are read from vkd_fast/configs/robustness_study.yaml (--variants-file: another file or
shipped name); the research variants among them run vkd_fast.experimental's vkd_experimental.

Per (world, variant) results are kept in benchmarks/results/robustness/cells/ (a rerun skips what is
there; --fresh recomputes), and the summary is written to benchmarks/results/robustness_study.{csv,md,png}.
Thread count changes float results: the figures in docs/robustness.md used 2 threads (OMP_NUM_THREADS unset
on a 2-core machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = RESULTS / "robustness" / "cells"

#: the shipped variants file (vkd_fast/configs/robustness_study.yaml)
VARIANTS_FILE = "robustness_study"
#: name -> method ("method", default vkd), trainer options ("config") and the method's ("options"), as
#: the variants file gives them (load_variants); filled by main()
VARIANTS: dict[str, dict] = {}


def load_variants(spec: str = VARIANTS_FILE) -> dict[str, dict]:
    """The variants of ``spec`` (a shipped name or a YAML file), checked -- keys, the method, its options
    and the trainer options -- with errors that name the file and the variant."""
    import vkd_fast.experimental  # noqa: F401 -- registers vkd_experimental, which the research variants run
    from vkd_fast import UnlearnConfig, configs
    from vkd_fast.methods import get_method
    from vkd_fast.utils.options import from_mapping

    file, data = configs.load(spec, "--variants-file")
    variants = data.get("variants")
    if set(data) != {"variants"} or not isinstance(variants, dict) or not variants:
        raise ValueError(f"--variants-file {file}: expected one key, variants (a mapping of name to variant)")
    for name, spec_ in variants.items():
        where = f"--variants-file {file}: variants.{name}"
        if not isinstance(spec_, dict):
            raise ValueError(f"{where}: expected a mapping (method, config, options), got {type(spec_).__name__}")
        unknown = sorted(set(spec_) - {"method", "config", "options"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: method, config, options")
        try:
            cls = get_method(spec_.get("method", "vkd"))
            for key, known in (("config", UnlearnConfig), ("options", cls.Options)):
                if not isinstance(spec_.get(key, {}), dict):
                    raise ValueError(f"{key}: expected a mapping, got {type(spec_[key]).__name__}")
                from_mapping(known, spec_.get(key, {}), f"{key} option")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    return variants


def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.fmean(xs) if xs else float("nan")


def _attack(model, tok, forget_all, grid, vanilla, cache):
    from vkd_fast.eval.relearn import attack_grid

    out = attack_grid(model, tok, forget_all, grid, before=vanilla, before_cache=cache)
    return out


def _oracle(models):
    """The vanilla model with V+P re-initialised and trained on the retain people's image questions only
    (vkd_fast.data.toy_model: ToyModels.oracle, built once per world and cached with its models)."""
    return models.oracle(progress=True)


def _bootstrap_text(d: dict) -> str:
    """A paired bootstrap's ``mean [low, high]`` (:func:`vkd_fast.eval.stats.paired_bootstrap`), signed,
    two decimals, without "-0.00"."""
    f = lambda x: f"{round(x, 2) + 0.0:+.2f}"  # noqa: E731  (+ 0.0 turns -0.0 into 0.0)
    return f"{f(d['mean'])} [{f(d['low'])}, {f(d['high'])}]"


def written_options(name: str) -> str:
    """Variant ``name``'s trainer and method options as the variants file writes them (a cell's
    ``options``)."""
    return json.dumps({k: v for k, v in VARIANTS[name].items() if k != "method"})


def resolved_options(name: str) -> dict | None:
    """Every option variant ``name`` runs its method with, the method's defaults filled in (JSON-able);
    None for the references (gold, the oracle). A cell records them, and a cell whose recorded options
    differ from today's (a changed default, an edited variant) is computed again, not reused."""
    if name not in VARIANTS:
        return None
    from vkd_fast.methods.base import make_options
    from vkd_fast.methods.registry import get_method
    from vkd_fast.utils.options import to_dict

    spec = VARIANTS[name]
    cls = get_method(spec.get("method", "vkd"))
    return json.loads(json.dumps({"method": cls.name, "config": spec.get("config", {}),
                                  "options": to_dict(make_options(cls, dict(spec.get("options", {}))))}))


#: options added to a method after cells were computed, and the value that does what the method did
#: before (bit for bit): a kept cell that does not record the option stands only while its variant runs
#: this value; an option missing here makes such a cell stale
ADDED_OPTIONS = {"llm_attackers": 0, "lambda_lock_names": 0.0}


def cell_is_current(row: dict, name: str) -> bool:
    """A kept cell still stands for variant ``name``: its recorded resolved options equal today's (cells
    written before they recorded them: their variant's options as written must still match; an option
    the cell does not record must be at its :data:`ADDED_OPTIONS` value)."""
    now = resolved_options(name)
    if now is None:
        return True
    if "resolved_options" not in row:
        return row.get("options") == written_options(name)
    kept = row["resolved_options"]
    if {k: v for k, v in kept.items() if k != "options"} != {k: v for k, v in now.items() if k != "options"}:
        return False
    added = set(now["options"]) - set(kept["options"])
    return (all(k in ADDED_OPTIONS and now["options"][k] == ADDED_OPTIONS[k] for k in added)
            and {k: v for k, v in now["options"].items() if k not in added} == kept["options"])


def _unlearn(models, name: str):
    """(a fresh copy of the world's vanilla model unlearned with variant ``name``, its wall time in s)."""
    import vkd_fast as vf

    spec, world = VARIANTS[name], models.world
    model = models.fresh_vanilla()
    t0 = time.perf_counter()
    vf.unlearn(model, world.unlearn_items(world.forget_ids), world.unlearn_items(world.retain_ids),
               method=spec.get("method", "vkd"), config=vf.UnlearnConfig(**spec.get("config", {})),
               options=spec.get("options", {}), tokenizer=models.tokenizer)
    return model, time.perf_counter() - t0


def _audit(model, models, sets) -> dict:
    """The membership-inference audit, as the demo measures it (vkd_fast.tasks.toy.privacy_row)."""
    from vkd_fast.tasks.toy import privacy_row

    return privacy_row(model, models.tokenizer, models.world, sets["forget_vqa"])


def _embedding(model, models, sets, state) -> dict:
    """The embedding attack, as the demo runs it (vkd_fast.tasks.toy.embedding_row)."""
    from vkd_fast.tasks.toy import embedding_row

    forget_all = sets["forget_vqa"] + sets["forget_vqa_unseen"]
    out = embedding_row(model, models.tokenizer, forget_all, models.vanilla, state)
    return {"recovery_embedding": out["recovery"], "embedding_acc_after_attack": out["acc_after_attack"],
            "embedding_acc_taught": out["acc_taught"]}


def _complete_cell(row: dict, name: str, models, sets, state) -> bool:
    """Add what a cell computed before the study had it lacks (the privacy audit, the embedding
    attack), the model rebuilt deterministically; True when something was added."""
    missing = [k for k in ("mia_auc", "recovery_embedding") if k not in row]
    if not missing:
        return False
    if name == "gold":
        model = models.gold
    elif name == "oracle":
        model = _oracle(models)
    else:
        model = _unlearn(models, name)[0].eval()
        model.requires_grad_(False)
    if "mia_auc" in missing:
        row.update(_audit(model, models, sets))
    if "recovery_embedding" in missing:
        row.update(_embedding(model, models, sets, state))
    return True


DROPPED = " (lock dropped)"


def _default_attack(model, models, sets, state, args) -> dict:
    """The default attack over ``args.attack_seeds``, both modes, as row keys: ``recovery_<mode>`` (the
    mean over seeds), ``recovery_<mode>_std`` and ``recovery_<mode>_seeds``."""
    from vkd_fast.eval.relearn import AttackGrid

    forget_all = sets["forget_vqa"] + sets["forget_vqa_unseen"]
    default = _attack(model, models.tokenizer, forget_all, AttackGrid.default_attack(args.attack_seeds),
                      models.vanilla, state["cache"])
    out = {}
    for c in default["cells"]:
        out[f"recovery_{c['mode']}"] = c["recovery"]
        out[f"recovery_{c['mode']}_std"] = c["recovery_std"]
        out[f"recovery_{c['mode']}_seeds"] = c["recoveries"]
    return out


def _drop_lock(model, name: str, models, sets, state, args) -> dict:
    """A variant that installs the image-gated lock (vkd_robust) faces one more attack: the lock
    dropped (``lock.remove()`` on a copy: what a white-box attacker can do), then the default attack.
    Returned as ``{"dropped": row}``, a row of its own (variant ``<name> (lock dropped)``); {} without
    a lock."""
    import copy

    from vkd_fast.adapters import find_gated_lock
    from vkd_fast.eval import evaluate

    if find_gated_lock(model) is None:
        return {}
    dropped = copy.deepcopy(model)
    find_gated_lock(dropped).remove()
    row = {"world": models.world.config.seed, "variant": name + DROPPED,
           "text_identical": bool(torch.equal(state["text"](dropped), state["vanilla_text"]))}
    row.update({k: v for k, v in evaluate(dropped, models.tokenizer, sets).items() if k != "n"})
    row.update(_default_attack(dropped, models, sets, state, args))
    return {"dropped": row}


def run_cell(world_seed: int, name: str, args, models, sets, state) -> dict:
    from vkd_fast.eval import evaluate
    from vkd_fast.eval.probe import identity_probe

    tok = models.tokenizer
    forget_all = sets["forget_vqa"] + sets["forget_vqa_unseen"]
    row = {"world": world_seed, "variant": name}
    seconds = None
    if name == "gold":
        model = models.gold
    elif name == "oracle":
        t0 = time.perf_counter()
        model = _oracle(models)
        seconds = time.perf_counter() - t0
    else:
        model, seconds = _unlearn(models, name)
        model.eval()
        model.requires_grad_(False)
        row["text_identical"] = bool(torch.equal(state["text"](model), state["vanilla_text"]))
        row["options"] = written_options(name)  # as before the file
        row["resolved_options"] = resolved_options(name)
    row["seconds"] = seconds
    row.update({k: v for k, v in evaluate(model, tok, sets).items() if k != "n"})
    row["identity_probe"] = identity_probe(model, sets["forget_vqa"] + sets["retain_vqa"],
                                           sets["forget_vqa_unseen"])["accuracy"]
    row.update(_audit(model, models, sets))
    row.update(_embedding(model, models, sets, state))
    row.update(_default_attack(model, models, sets, state, args))
    row.update(_drop_lock(model, name, models, sets, state, args))
    if name in args.grid or (name == "gold" and not args.no_gold_grid):
        grid = _attack(model, tok, forget_all, args.attack_grid, models.vanilla, state["cache"])
        for mode, c in grid["worst"].items():
            row[f"worst_{mode}"] = c["recovery"]
            row[f"worst_{mode}_cell"] = f"{c['split']} lr {c['lr']:g} {c['steps']} steps"
        row["grid_cells"] = grid["cells"]
    return row


def summarise(rows: list[dict], worlds: list[int], variants: list[str]) -> tuple[str, list[dict]]:
    from vkd_fast.eval.bars import unlearning_bars

    table, md = [], []
    for w in worlds:
        by = {r["variant"]: r for r in rows if r["world"] == w}
        if "gold" not in by or "v0" not in by:
            continue
        gold, vanilla, v0 = by["gold"], by["vanilla"], by["v0"]
        for name in variants:
            r = by.get(name)
            if r is None:
                continue
            checks = unlearning_bars(r, gold, vanilla, 1 / 8, text_identical=r.get("text_identical"))
            cost = r["seconds"] / v0["seconds"] if r.get("seconds") and v0.get("seconds") else float("nan")
            r["bars_failed"] = [c["check"] for c in checks if not c["ok"]]
            r["bars_passed"] = sum(c["ok"] for c in checks)
            r["bars_total"] = len(checks)
            r["cost_vs_v0"] = cost
            table.append(r)
    cols = [("forget_vqa", "forget VQA", 100), ("forget_vqa_unseen", "unseen", 100), ("retain_vqa", "retain VQA", 100),
            ("collapse_share", "collapse", 100), ("identity_probe", "probe", 100), ("recovery_llm", "relearn llm", 1),
            ("recovery_visual", "relearn visual", 1), ("worst_llm", "worst llm", 1),
            ("worst_visual", "worst visual", 1)]
    md.append("| variant | " + " | ".join(h for _, h, _ in cols) + " | time s | cost vs v0 | bars passed (per world) |")
    md.append("|---|" + "---:|" * (len(cols) + 2) + "---|")
    for name in ["vanilla", "gold", "oracle"] + variants:
        rs = [r for r in rows if r["variant"] == name and r["world"] in worlds]
        if not rs:
            continue
        cells = []
        for key, _, scale in cols:
            vals = [r.get(key) for r in rs if r.get(key) is not None]
            if not vals:
                cells.append("–")
                continue
            m = _mean(vals) * scale
            lo, hi = min(vals) * scale, max(vals) * scale
            cells.append(f"{m:.1f} [{lo:.1f}, {hi:.1f}]" if scale == 100 else f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]")
        secs = _mean([r.get("seconds") for r in rs])
        cost = _mean([r.get("cost_vs_v0") for r in rs])
        passed = ", ".join(f"{r['bars_passed']}/{r['bars_total']}" for r in rs if "bars_passed" in r) or "–"
        time_cell = "–" if math.isnan(secs) else f"{secs:.0f}"
        cost_cell = "–" if math.isnan(cost) else f"{cost:.2f}x"
        md.append(f"| {name} | " + " | ".join(cells) + f" | {time_cell} | {cost_cell} | {passed} |")
    return "\n".join(md), table


def paired_statistics(rows: list[dict], worlds: list[int], names: list[str], seeds) -> str:
    """The paired statistics of docs/method.md §4.4 over every (world, attack seed) cell: per variant and
    attack mode, the mean recovery, its difference to gold and to the oracle with a two-level bootstrap
    interval (worlds, then seeds within them), C = (oracle - variant) / (oracle - gold) with its
    interval, and per world whether the variant's mean is at or under the oracle's (the V+P limit)."""
    from vkd_fast.eval.stats import gap_closed, paired_bootstrap

    by = {(r["world"], r["variant"]): r for r in rows}
    lines = [f"Paired statistics over {len(worlds)} worlds x {len(seeds)} attack seeds (default attack; mean "
             "difference [95% two-level bootstrap interval: worlds, then seeds]; C = (oracle - variant) / (oracle - "
             "gold): 1 = at gold, 0 = at the V+P limit):", "",
             "| variant | mode | recovery mean [min, max over worlds] | - gold | - oracle | C | worlds at or under "
             "the oracle |", "|---|---|---:|---:|---:|---:|---|"]
    privacy = privacy_lines(by, worlds, ["gold", *dict.fromkeys(n for n in names if n != "gold")])
    for name in ["gold", *dict.fromkeys(n for n in names if n != "gold")]:
        for mode in ("llm", "visual"):
            cells, clusters, per_world = {"m": [], "g": [], "o": []}, [], {}
            for w in worlds:
                rs = {k: by.get((w, v)) for k, v in (("m", name), ("g", "gold"), ("o", "oracle"))}
                if rs["m"] is None or f"recovery_{mode}_seeds" not in rs["m"]:
                    continue
                per_world[w] = rs["m"][f"recovery_{mode}"]
                if rs["g"] is None or rs["o"] is None:
                    continue
                trip = zip(*(rs[k][f"recovery_{mode}_seeds"] for k in ("m", "g", "o")))
                for m, g, o in trip:
                    if not any(math.isnan(x) for x in (m, g, o)):
                        cells["m"].append(m), cells["g"].append(g), cells["o"].append(o), clusters.append(w)
            if not per_world:
                continue
            vals = list(per_world.values())
            vs_g = vs_o = c = "–"
            if cells["m"]:
                if name != "gold":
                    vs_g = _bootstrap_text(paired_bootstrap(cells["m"], cells["g"], clusters=clusters))
                if name != "oracle":
                    vs_o = _bootstrap_text(paired_bootstrap(cells["m"], cells["o"], clusters=clusters))
                if name not in ("gold", "oracle"):
                    gc = gap_closed(cells["m"], cells["o"], cells["g"], clusters=clusters)
                    c = ("n/a" if math.isnan(gc["value"])
                         else f"{gc['value']:+.2f} [{gc['low']:+.2f}, {gc['high']:+.2f}]"
                         + ("" if gc["meaningful"] else " (not meaningful: oracle - gold not clearly > 0)"))
            under = "–"
            if name != "oracle" and all(by.get((w, "oracle")) for w in per_world):
                ok = [w for w in per_world if per_world[w] <= by[(w, "oracle")][f"recovery_{mode}"] + 1e-9]
                missed = sorted(set(per_world) - set(ok))
                under = f"{len(ok)}/{len(per_world)}" + (f" (not: {', '.join(map(str, missed))})" if missed else "")
            lines.append(f"| {name} | {mode} | {_mean(vals):+.2f} [{min(vals):+.2f}, {max(vals):+.2f}] | {vs_g} | "
                         f"{vs_o} | {c} | {under} |")
    return "\n".join(lines + ([""] + privacy if privacy else []))


def privacy_lines(by: dict, worlds: list[int], names: list[str]) -> list[str]:
    """The membership-inference audit per variant: AUCs (forget people's training images vs strangers')
    and MUSE's privacy leak (AUC - gold's) / gold's, mean [min, max] over worlds; and the AUC's paired
    difference from gold's on the same worlds with its bootstrap interval over worlds (a world's AUC
    rests on a few forget people, so it moves a lot from world to world, gold's too)."""
    from vkd_fast.eval.privacy import privacy_leak
    from vkd_fast.eval.stats import paired_bootstrap

    out = ["Privacy audit (membership inference, the forget people's training images vs strangers'; AUC 0.5: "
           "indistinguishable; leak = (AUC - gold's) / gold's, 0 at gold) and the embedding attack (the visual "
           "tokens W reads optimised per forget image on job and city, hobby and pet tested: what W still holds); "
           "mean [min, max] over worlds; AUC - gold: paired over worlds [95% bootstrap interval over worlds]:", "",
           "| variant | AUC loss | AUC loss - gold | AUC min-k | privacy leak | embedding attack recovery |",
           "|---|---:|---:|---:|---:|---:|"]
    for name in names:
        rs = [(w, by.get((w, name))) for w in worlds]
        rs = [(w, r) for w, r in rs if r is not None and "mia_auc" in r]
        if not rs:
            continue
        cols = []
        for key in ("mia_auc", "mia_auc_min_k"):
            vals = [r[key] for _, r in rs]
            cols.append(f"{_mean(vals):.2f} [{min(vals):.2f}, {max(vals):.2f}]")
        paired = [(r["mia_auc"], by[(w, "gold")]["mia_auc"]) for w, r in rs if "mia_auc" in by.get((w, "gold"), {})]
        if name != "gold" and paired:
            cols.insert(1, _bootstrap_text(paired_bootstrap([a for a, _ in paired], [g for _, g in paired])))
        else:
            cols.insert(1, "–")
        leaks = [privacy_leak(r["mia_auc"], by[(w, "gold")]["mia_auc"]) for w, r in rs
                 if by.get((w, "gold"), {}).get("mia_auc")]
        cols.append(f"{_mean(leaks):+.2f} [{min(leaks):+.2f}, {max(leaks):+.2f}]" if leaks else "–")
        emb = [r["recovery_embedding"] for _, r in rs if r.get("recovery_embedding") is not None
               and not math.isnan(r["recovery_embedding"])]
        cols.append(f"{_mean(emb):+.2f} [{min(emb):+.2f}, {max(emb):+.2f}]" if emb else "–")
        out.append(f"| {name} | " + " | ".join(cols) + " |")
    return out if len(out) > 4 else []


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    names = sorted({r["variant"] for r in rows} - {"vanilla"})
    for i, name in enumerate(names):
        rs = [r for r in rows if r["variant"] == name and r.get("recovery_visual") is not None]
        if not rs:
            continue
        ax.scatter([100 * r["collapse_share"] for r in rs], [r["recovery_visual"] for r in rs], label=name,
                   marker="*" if name in ("gold", "oracle") else "o", s=140 if name in ("gold", "oracle") else 50,
                   color=plt.cm.tab10(i % 10))
    ax.set_xlabel("answer collapse on forget images (%)")
    ax.set_ylabel("relearn visual: recovery, mean over attack seeds")
    ax.set_title("VKD variants on several toy worlds (one point per world)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def _cost(world_seed: int, variants: list[str], repeats: int, tag: str = "") -> int:
    """Unlearning wall time of v0 and ``variants`` measured in one process, runs interleaved (v0, a, b,
    v0, a, b, ...) so a slower or busier moment of the machine touches every variant alike; the cost is
    the ratio of the fastest run of each to v0's fastest."""
    from vkd_fast.data import ToyWorld, ToyWorldConfig, load_toy_models
    from vkd_fast.eval.report import write_json

    models = load_toy_models(ToyWorld(ToyWorldConfig(seed=world_seed)), progress=True)
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name in ["v0", *variants]:
            times.setdefault(name, []).append(_unlearn(models, name)[1])
    out = {"world": world_seed, "repeats": repeats, "seconds": times,
           "cost_vs_v0": {n: min(t) / min(times["v0"]) for n, t in times.items()}, "environment": H.environment()}
    path = RESULTS / ("robustness_cost" + (f"_{tag}" if tag else "") + ".json")
    write_json(path, out)
    for name, t in times.items():
        print(f"{name:<30} {min(t):6.1f} s (runs: {', '.join(f'{x:.1f}' for x in t)})  "
              f"{out['cost_vs_v0'][name]:.2f}x v0")
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="0,1,2")
    ap.add_argument("--variants-file", default=VARIANTS_FILE, metavar="NAME_OR_PATH",
                    help="the variants: a YAML file or a shipped name (default robustness_study: "
                         "vkd_fast/configs/robustness_study.yaml)")
    ap.add_argument("--variants", help="comma-separated subset of the file's variants (default: all of them)")
    ap.add_argument("--attack-seeds", default="0,1,2")
    ap.add_argument("--grid", default="", help="variants that also get the attack grid (gold always does)")
    ap.add_argument("--grid-seeds", default="0,1,2")
    ap.add_argument("--grid-splits", help="the grid's splits, ';'-separated (default: the study's grid, "
                                          "vkd_fast.eval.relearn.AttackGrid), e.g. 'attributes:job,city;fraction:0.5'")
    ap.add_argument("--grid-lrs", help="the grid's learning rates, comma-separated (default: the study's grid)")
    ap.add_argument("--grid-steps", help="the grid's attack lengths, comma-separated (default: the study's grid); "
                                         "a study with another grid keeps its cells under a --tag of its own")
    ap.add_argument("--oracle", action="store_true",
                    help="also the oracle reference (a V+P trained on retain people only; built once per world and "
                         "cached with its toy models, under a minute here)")
    ap.add_argument("--fresh", action="store_true", help="recompute cells kept from an earlier run")
    ap.add_argument("--no-gold-grid", action="store_true",
                    help="gold gets the attack grid only when a variant does (by default gold always does)")
    ap.add_argument("--tag", default="", help="keep this study's cells in cells/<tag>/ and write "
                                              "results/robustness_study_<tag>.{csv,md,png} (e.g. stats5x5)")
    ap.add_argument("--cost", type=int, default=0, metavar="N",
                    help="only time the unlearning of v0 and of --variants back to back on the first world, N runs "
                         "each, interleaved (no evaluation); writes results/robustness_cost[_<tag>].json. The cells' "
                         "own "
                         "times come from whichever run computed them, so their ratio is not a same-run figure")
    args = ap.parse_args(argv)
    try:
        VARIANTS.clear()
        VARIANTS.update(load_variants(args.variants_file))
    except ValueError as exc:
        ap.error(str(exc))
    worlds = [int(w) for w in args.worlds.split(",")]
    variants = [v for v in (args.variants or ",".join(VARIANTS)).split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    args.attack_seeds = tuple(int(s) for s in args.attack_seeds.split(","))
    args.grid_seeds = tuple(int(s) for s in args.grid_seeds.split(","))
    from vkd_fast.eval.relearn import AttackGrid

    custom = {}
    if args.grid_splits:
        custom["splits"] = tuple(x for x in args.grid_splits.split(";") if x)
    if args.grid_lrs:
        custom["lrs"] = tuple(float(x) for x in args.grid_lrs.split(","))
    if args.grid_steps:
        custom["steps"] = tuple(int(x) for x in args.grid_steps.split(","))
    try:
        args.attack_grid = AttackGrid(seeds=args.grid_seeds, **custom)
    except ValueError as exc:
        ap.error(str(exc))
    args.grid = {g for g in args.grid.split(",") if g}
    from vkd_fast.adapters import get_adapter
    from vkd_fast.data import ToyWorld, ToyWorldConfig, load_toy_models
    from vkd_fast.eval import evaluate, toy_eval_sets
    from vkd_fast.utils.text import encode_prompt, pad_right

    if args.cost:
        return _cost(worlds[0], [v for v in variants if v != "v0"], args.cost, args.tag)
    cells = CELLS / args.tag if args.tag else CELLS  # a tagged study keeps its cells apart
    cells.mkdir(parents=True, exist_ok=True)
    out_stem = RESULTS / ("robustness_study" + (f"_{args.tag}" if args.tag else ""))
    rows = []
    env = H.environment()
    for w in worlds:
        models = load_toy_models(ToyWorld(ToyWorldConfig(seed=w)), progress=True)
        sets = toy_eval_sets(models.world)
        tok = models.tokenizer
        probe_items = sets["forget_qa"] + sets["retain_qa"]

        def text(model, _tok=tok, _items=probe_items):
            ad = get_adapter(model)
            ids, mask = pad_right([encode_prompt(ad, _tok, it["question"]) for it in _items])
            with torch.no_grad():
                return ad.text_logits(ids, mask)

        state = {"cache": {}, "text": text, "vanilla_text": text(models.vanilla)}
        rows.append({"world": w, "variant": "vanilla",
                     **{k: v for k, v in evaluate(models.vanilla, tok, sets).items() if k != "n"}})
        names = ["gold"] + (["oracle"] if args.oracle else []) + (["v0"] if "v0" not in variants else []) + variants
        for name in names:
            path = cells / f"world{w}-{re.sub(r'[^A-Za-z0-9_.+-]', '_', name)}.json"
            if path.exists() and not args.fresh:
                row = json.loads(path.read_text())
                # cells written before they recorded their seeds: judged by how many seeds they hold
                recorded = row.get("attack_seeds")
                seeds_ok = (recorded == list(args.attack_seeds) if recorded is not None
                            else len(row.get("recovery_llm_seeds", [])) == len(args.attack_seeds))
                current = cell_is_current(row, name)
                if not current:
                    print(f"world {w} {name}: the kept cell was computed with other options (a changed default "
                          "or variant): computing it again", flush=True)
                if current and seeds_ok and ((name not in args.grid and (name != "gold" or args.no_gold_grid))
                                 or "worst_visual" in row):
                    if _complete_cell(row, name, models, sets, state):  # an older cell: add only what it lacks
                        tmp = path.with_suffix(".tmp")
                        tmp.write_text(json.dumps(row, indent=1))
                        tmp.replace(path)
                    rows.append(row)
                    if "dropped" in row:
                        rows.append(row["dropped"])
                    continue
            t0 = time.perf_counter()
            row = run_cell(w, name, args, models, sets, state)
            row["environment"], row["attack_seeds"] = env, list(args.attack_seeds)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(row, indent=1))
            tmp.replace(path)
            rows.append(row)
            if "dropped" in row:
                rows.append(row["dropped"])
            print(f"world {w} {name:<22} forget {100 * row['forget_vqa']:5.1f} / {100 * row['forget_vqa_unseen']:5.1f}"
                  f"  retain {100 * row['retain_vqa']:5.1f}  collapse {100 * row['collapse_share']:5.1f}"
                  f"  probe {row['identity_probe']:.2f}  relearn llm {row['recovery_llm']:+.2f}"
                  f" visual {row['recovery_visual']:+.2f}"
                  + (f"  worst llm {row['worst_llm']:+.2f} visual {row['worst_visual']:+.2f}" if "worst_llm" in row
                     else "") + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    # a variant with the lock is followed by its drop-lock row
    variants = [v for name in variants for v in (name, name + DROPPED)
                if v == name or any(r["variant"] == v for r in rows)]
    md, table = summarise(rows, worlds, variants)
    header = (f"VKD robustness study: worlds {', '.join(map(str, worlds))}; default attack over seeds "
              f"{','.join(map(str, args.attack_seeds))}; grid seeds {','.join(map(str, args.grid_seeds))}"
              f" (grid: splits {'; '.join(args.attack_grid.splits)}, "
              f"lr {', '.join(f'{x:g}' for x in args.attack_grid.lrs)}, "
              f"steps {', '.join(map(str, args.attack_grid.steps))}). "
              "Cells: mean [min, max] over worlds; accuracies in %.")
    fails = "\n".join(f"- world {r['world']} {r['variant']}: " + ("; ".join(r["bars_failed"]) or "all bars met")
                      for r in table)
    stats_md = paired_statistics(rows, worlds, ["oracle", "v0", *variants], args.attack_seeds)
    (out_stem.with_suffix(".md")).write_text(f"{header}\n\n{md}\n\nBars failed per world:\n\n{fails}\n\n{stats_md}\n")
    keys = ["world", "variant", "forget_vqa", "forget_vqa_unseen", "forget_qa", "retain_vqa", "retain_qa",
            "collapse_share", "identity_probe", "recovery_llm", "recovery_llm_std", "recovery_visual",
            "recovery_visual_std", "worst_llm", "worst_visual", "recovery_embedding", "mia_auc", "mia_auc_min_k",
            "seconds", "cost_vs_v0", "bars_passed", "bars_total", "text_identical", "options"]
    with open(out_stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in keys})
    plot([r for r in rows if r["variant"] != "vanilla"], out_stem.with_suffix(".png"))
    print(f"\n{header}\n\n{md}\n\n{stats_md}\n\nwrote {out_stem}.{{csv,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
