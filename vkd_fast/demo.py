"""The toy-world demo (``vkd-fast demo``, ``make demo``): build or load the vanilla and gold models,
unlearn the forget people with VKD and every baseline, evaluate every metric of docs/method.md §4,
run the relearning attack in both modes, and write a table, JSON, Markdown and a PNG chart.

Which methods run, in which order and with which settings is the demo profile's to say: a YAML file,
by default the shipped ``vkd_fast/configs/demo.yaml`` (:func:`load_profile`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .adapters import get_adapter
from .data.toy_model import ORACLE_STEPS
from .engine import UnlearnConfig, unlearn
from .eval import evaluate
from .eval.bars import Bars, unlearning_bars
from .eval.metrics import multiple_choice
from .eval.privacy import privacy_leak
from .eval.probe import identity_probe
from .eval.relearn import AttackGrid, attack_grid
from .eval.report import WALL_CLOCK, markdown_table, plot, text_table, write_json, write_markdown
from .eval.stats import gap_closed, paired_bootstrap
from .methods import create_method, get_method
from .tasks.toy import embedding_row, privacy_row, toy_eval_sets
from .utils.devices import check_device_spec, resolve_device
from .utils.memory import measure
from .utils.options import check_types, from_mapping
from .utils.progress import log_line, progress_bar
from .utils.text import encode_prompt, pad_right
from .utils.validate import check_positive_int

#: methods that run their default steps (no early stop: their steps are tuned, the baselines overshoot),
#: get the worst-case grid and are judged by the bars
VKD_FAMILY = ("vkd", "vkd_robust")
_LABEL = {"vkd": "VKD", "vkd_robust": "vkd_robust"}
#: the shipped demo profile (vkd_fast/configs/demo.yaml)
DEFAULT_PROFILE = "demo"


def load_profile(spec: str = DEFAULT_PROFILE) -> dict[str, dict]:
    """The demo profile ``spec`` (a shipped name or a YAML file's path) as ``{method: settings}``, in the
    file's order: each method's trainer options (UnlearnConfig) over their defaults, and its own under
    ``options``. Checked here, every error naming the file and the key: registered methods, known
    option names, values of the options' types."""
    from . import configs
    from .engine import UnlearnConfig

    file, data = configs.load(spec, "demo profile")
    unknown = sorted(set(data) - {"methods"})
    if unknown or not isinstance(data.get("methods"), dict) or not data["methods"]:
        raise ValueError(f"demo profile {file}: expected one key, methods (a mapping of method name to settings)"
                         + (f"; unknown key(s) {', '.join(map(str, unknown))}" if unknown else ""))
    for name, settings in data["methods"].items():
        where = f"demo profile {file}: methods.{name}"
        if settings is None:
            data["methods"][name] = settings = {}
        try:
            cls = get_method(name)
            if not isinstance(settings, dict):
                raise ValueError(f"expected a mapping of settings, got {type(settings).__name__}")
            options = settings.get("options") or {}
            if not isinstance(options, dict):
                raise ValueError(f"options: expected a mapping of {name} options, got {type(options).__name__}")
            from_mapping(UnlearnConfig, {k: v for k, v in settings.items() if k != "options"}, "option")
            from_mapping(cls.Options, options, f"{name} option")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    return data["methods"]


@dataclass
class DemoConfig:
    """What ``vkd-fast demo`` runs."""

    #: the methods to run, a subset of the profile's (None: every method of the profile, in its order)
    methods: tuple[str, ...] | None = None
    #: method -> settings over the profile's: trainer options, and the method's under "options"
    overrides: dict = field(default_factory=dict)
    #: the default attack (teach job + city, test hobby + pet, 40 steps at lr 1e-3) over attack seeds:
    #: every method's "relearn" columns are the mean recovery over these seeds
    attack: AttackGrid = field(default_factory=AttackGrid.default_attack)
    #: the small grid whose worst cell (a mean over its seeds) is shown for VKD and gold
    worst_grid: AttackGrid | None = field(default_factory=lambda: AttackGrid(
        splits=("attributes:job,city", "attributes:hobby,pet"), lrs=(1e-4, 1e-3), steps=(40, 200), seeds=(0,)))
    early_stop_every: int = 5  # baselines: steps between forget-accuracy checks
    #: the oracle reference row (the V+P-only limit: the vanilla LLM with a V+P trained on retain people
    #: only; built on first use per world and cached): attacked like gold, so the checks can say both
    #: "at the V+P limit" and "at gold level", and every method's recovery gets intervals against both
    oracle: bool = True
    #: the oracle's training schedule (vkd_fast.data.toy_model.ORACLE_STEPS; each length is cached apart)
    oracle_steps: int = ORACLE_STEPS
    #: the embedding attack (vkd_fast.eval.embedding_attack) on every attacked row: how much of the
    #: forget people the language model still holds, whatever the vision side does
    embedding_attack: bool = True
    #: bootstrap draws of the paired intervals (method - gold, method - oracle, C) over attack seeds
    bootstrap_draws: int = 10000
    bars: Bars = field(default_factory=Bars)  # what VKD is held to (PASS / FAIL at the end)
    #: where unlearning, evaluation and the attacks run ("auto": the accelerator when one is visible);
    #: the toy models are built on the CPU. Float results differ between devices.
    device: str = "auto"
    #: the demo profile: which methods run, in order, and their settings -- a shipped name ("demo":
    #: vkd_fast/configs/demo.yaml) or a YAML file's path (:func:`load_profile`)
    profile: str = DEFAULT_PROFILE
    #: CPU threads for the demo's numerics, set for the run and restored after it (None: leave torch's).
    #: Float results move with the thread count (docs/demo.md, Reproducibility): one thread makes the
    #: table independent of OMP_NUM_THREADS and of the machine's core count
    threads: int | None = 1

    def __post_init__(self) -> None:
        check_types(self)
        self._method_configs = load_profile(self.profile)
        known = tuple(self._method_configs)
        if self.methods is None:
            self.methods = known
        bad = [m for m in self.methods if m not in known]
        if bad or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {known} (demo profile {self.profile}), got "
                             f"{list(self.methods)}")
        unknown = sorted(set(self.overrides) - set(self.methods))
        if unknown:
            raise ValueError(f"overrides for method(s) not run: {unknown}")
        check_device_spec("device", self.device)
        if self.threads is not None:
            check_positive_int("threads", self.threads)

    @property
    def method_configs(self) -> dict[str, dict]:
        """The profile's ``{method: settings}`` (every method of the profile, not only those run)."""
        return self._method_configs


def _log(msg: str) -> None:
    log_line(f"[vkd-fast demo] {msg}")  # keeps an active terminal bar intact


def _text_logits(model, tokenizer, items) -> torch.Tensor:
    adapter = get_adapter(model)
    rows = [encode_prompt(adapter, tokenizer, it["question"]) for it in items]
    ids, mask = pad_right(rows)
    device = next(model.parameters()).device
    with torch.no_grad():
        return adapter.text_logits(ids.to(device), mask.to(device))


def run_demo(models, config: DemoConfig | None = None, output_dir=None, progress: bool = True,
             environment: dict | None = None) -> dict:
    """Run the comparison on a loaded toy world (:func:`vkd_fast.data.load_toy_models`). Returns the
    report dict; with ``output_dir`` also writes report.json, report.md and report.png there.
    ``environment``: recorded in the JSON report (the CLI passes ``vkd-fast doctor``'s report)."""
    config = config or DemoConfig()
    before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run_demo(models, config, output_dir, progress, environment)
    finally:
        torch.set_num_threads(before)


def _run_demo(models, config: DemoConfig, output_dir, progress: bool, environment: dict | None) -> dict:
    device = resolve_device(config.device)
    models.vanilla.to(device)
    models.gold.to(device)
    world, tok = models.world, models.tokenizer
    sets = toy_eval_sets(world)
    chance = 1 / len(sets["forget_vqa"][0]["options"])
    forget_all = sets["forget_vqa"] + sets["forget_vqa_unseen"]
    forget_items, retain_items = world.unlearn_items(world.forget_ids), world.unlearn_items(world.retain_ids)
    text_probe = sets["forget_qa"] + sets["retain_qa"]
    t_start = time.perf_counter()
    rows: dict[str, dict] = {}
    details: dict[str, dict] = {}
    before_cache: dict = {}  # the vanilla model's held-out accuracies, shared by every attack
    vanilla_text = _text_logits(models.vanilla, tok, text_probe)

    def attack(model, grid, row, prefix):
        result = attack_grid(model, tok, forget_all, grid, before=models.vanilla, before_cache=before_cache)
        for cell in result["cells"]:
            row[f"{prefix}_{cell['mode']}"] = (cell["recovery"] if prefix == "recovery"
                                               else result["worst"][cell["mode"]]["recovery"])
        return result

    def probe(model):
        return identity_probe(model, sets["forget_vqa"] + sets["retain_vqa"], sets["forget_vqa_unseen"])["accuracy"]

    embedding_cache: dict = {}

    def embed(model, row):
        """The embedding attack (what W holds whatever V+P does): row["recovery_embedding"]."""
        if not config.embedding_attack:
            return None
        result = embedding_row(model, tok, forget_all, models.vanilla, embedding_cache)
        row["recovery_embedding"] = result["recovery"]
        return result

    # the privacy audit: the forget people's training images against as many strangers' (never seen)
    strangers = world.stranger_items(len(world.forget_ids), seed=0)

    def audit(model):
        return privacy_row(model, tok, world, sets["forget_vqa"], strangers)

    references = [("vanilla", models.vanilla), ("gold", models.gold)]
    if config.oracle:
        references.append(("oracle", models.oracle(config.oracle_steps, progress=progress).to(device)))
    for name, model in references:
        rows[name] = {"method": name, **_flat(evaluate(model, tok, sets)), "identity_probe": probe(model),
                      **audit(model)}
    if progress:
        oracle = f", oracle: {rows['oracle']['forget_vqa']:.3f}" if "oracle" in rows else ""
        _log(f"vanilla: forget VQA {rows['vanilla']['forget_vqa']:.3f}, gold: {rows['gold']['forget_vqa']:.3f}"
             f"{oracle}, chance {chance:.3f}")
    stop_at = max(chance, rows["gold"]["forget_vqa"])
    stages = None
    if progress:
        stages = progress_bar(len(config.methods) + 1, "[vkd-fast demo] unlearn + evaluate + attack", unit="method")
    for method in config.methods:
        if stages is not None:
            stages.set_postfix(method=method)
        model = models.fresh_vanilla().to(device)
        profile = config.method_configs[method]
        settings = {"device": str(device), **profile, **config.overrides.get(method, {})}
        options = {**(profile.get("options") or {}), **(settings.pop("options", None) or {})}
        ucfg = from_mapping(UnlearnConfig, settings, "option").for_method(create_method(method, options))
        adapter = get_adapter(model)
        eval_seconds = [0.0]

        def forget_acc(m, _adapter=adapter, _spent=eval_seconds):
            t = time.perf_counter()
            acc = multiple_choice(m, _adapter, tok, sets["forget_vqa"], batch_size=96)["accuracy"]
            _spent[0] += time.perf_counter() - t
            return acc

        early = method not in VKD_FAMILY  # docs/method.md: baselines need early stopping (they overshoot below gold)
        if progress:
            stop = f", early stop at forget VQA <= {stop_at:.3f}" if early else ""
            _log(f"unlearning with {method} ({ucfg.steps} steps max{stop})")
        with measure() as m:
            result = unlearn(model, forget_items, retain_items, method=method, config=ucfg, options=options,
                             tokenizer=tok,
                             eval_fn=forget_acc if early else None, eval_every=config.early_stop_every if early else 0,
                             stop_at=stop_at if early else None)
        model.eval()
        model.requires_grad_(False)
        trained = set(result.trainable["names"])
        tensors = sum(p.numel() for n, p in model.named_parameters() if n in trained)
        row = {"method": method, **_flat(evaluate(model, tok, sets)),
               "seconds": m["seconds"] - eval_seconds[0],
               # weights + gradients + two AdamW moments (fp32) of the trained tensors, and the teacher
               # cache's data (KL: the retain log-probs): what the run adds, independent of the allocator
               "state_mib": (16 * tensors + result.method_stats.get("bytes", 0)) / 2**20,
               "trainable": result.trainable.get("masked_trainable", result.trainable["trainable"]),
               "steps": len(result.history), "identity_probe": probe(model), **audit(model)}
        text_identical = bool(torch.equal(_text_logits(model, tok, text_probe), vanilla_text))
        relearn = {"default": attack(model, config.attack, row, "recovery")}
        if method in VKD_FAMILY and config.worst_grid is not None:
            relearn["grid"] = attack(model, config.worst_grid, row, "worst")
        embedded = embed(model, row)
        rows[method] = row
        details[method] = {"config": result.config, "options": result.options,
                           "trainable": {k: v for k, v in result.trainable.items() if k != "names"},
                           "history_last": result.history[-1] if result.history else None,
                           "text_logits_identical": text_identical, "relearn": relearn,
                           **({"embedding_attack": embedded} if embedded is not None else {}),
                           # in-process peak RSS is a lower bound on CPU: freed heap memory is reused
                           "peak_extra_bytes": m["peak_extra_bytes"], "memory_kind": m["memory_kind"]}
        if progress:
            _log(f"{method}: " + ", ".join(f"{k} {row[k]:.3f}" for k in ("forget_vqa", "forget_vqa_unseen",
                                                                         "forget_qa", "retain_vqa", "retain_qa"))
                 + f", relearn recovery llm {row.get('recovery_llm', float('nan')):.2f} visual "
                 f"{row.get('recovery_visual', float('nan')):.2f} ({row['seconds']:.1f} s, {row['steps']} steps)")
        del model
        if stages is not None:
            stages.update(1)
    for name, model in references[1:]:  # the references' attacks: gold, and the oracle
        if stages is not None:
            stages.set_postfix(method=f"{name} (attack)")
        details[name] = {"relearn": {"default": attack(model, config.attack, rows[name], "recovery")}}
        if any(m in VKD_FAMILY for m in config.methods) and config.worst_grid is not None:
            details[name]["relearn"]["grid"] = attack(model, config.worst_grid, rows[name], "worst")
        embedded = embed(model, rows[name])
        if embedded is not None:
            details[name]["embedding_attack"] = embedded
    if stages is not None:
        stages.update(1)
        stages.close()
    for name in ["gold", "oracle", *config.methods]:
        if name in details:
            details[name]["stats"] = recovery_stats(details, name, n_boot=config.bootstrap_draws)

    for row in rows.values():  # MUSE's privacy leak: the membership AUC relative to gold's (0 = gold)
        row["privacy_leak"] = privacy_leak(row["mia_auc"], rows["gold"]["mia_auc"])
    ordered = [rows[n] for n in ("vanilla", "gold", "oracle") if n in rows] + [rows[m] for m in config.methods]
    checks_by = {m: unlearning_bars(rows[m], rows["gold"], rows["vanilla"], chance, bars=config.bars,
                                    text_identical=details[m]["text_logits_identical"], oracle=rows.get("oracle"))
                 for m in VKD_FAMILY if m in rows}
    checks = checks_by.get("vkd", [])
    report = {
        "title": "vkd_fast toy-world demo",
        "world": world.describe(),
        "models": {"path": str(models.path), "shipped": getattr(models, "shipped", False), "build": models.build},
        "chance": chance, "rows": ordered, "checks": checks, "details": details,
        "checks_by_method": checks_by,
        "attack": config.attack.to_dict(),
        "worst_grid": config.worst_grid.to_dict() if config.worst_grid is not None else None,
        "demo_config": {"methods": list(config.methods), "overrides": config.overrides,
                        "method_configs": config.method_configs},
        "threads": torch.get_num_threads(),  # the numerics' thread count (DemoConfig.threads)
        "seconds_total": time.perf_counter() - t_start, "environment": environment or {},
    }
    if output_dir is not None:
        out = Path(output_dir)
        write_json(out / "report.json", report)
        notes = "\n".join(f"- {'PASS' if c['ok'] else 'FAIL'}: {_LABEL.get(m, m)} {c['check']} (value "
                          f"{_num(c['value'])}, bound {_num(c['bound'])})" for m, cs in checks_by.items() for c in cs)
        stats = stats_lines(report)
        if stats:
            notes += ("\n\nRelearning recovery, paired over attack seeds (mean difference [95% bootstrap interval]; "
                      "C = (oracle - method) / (oracle - gold)):\n\n" + "\n".join(f"- {s}" for s in stats))
        notes = wall_clock_line(report) + "\n\n" + notes
        write_markdown(out / "report.md", ordered, "Toy-world comparison (accuracies in %)", notes, exclude=WALL_CLOCK)
        plot(out / "report.png", ordered, chance, "vkd_fast toy world: forget / retain accuracy and relearning")
    return report


def _seed_recoveries(relearn: dict) -> dict[str, list[float]]:
    """mode -> the default attack's recoveries, cell by cell and seed by seed (the pairing order)."""
    out: dict[str, list[float]] = {}
    for cell in relearn["default"]["cells"]:
        out.setdefault(cell["mode"], []).extend(cell["recoveries"])
    return out


def recovery_stats(details: dict, name: str, n_boot: int = 10000) -> dict:
    """Per attack mode: ``name``'s recoveries per attack seed, and -- paired seed by seed -- the mean
    difference to gold and to the oracle with bootstrap intervals, and C = (oracle - method) /
    (oracle - gold) with its interval (:mod:`vkd_fast.eval.stats`). Cells whose recovery is
    undefined (NaN) are left out of the pairing, on both sides."""
    mine = _seed_recoveries(details[name]["relearn"])
    refs = {ref: _seed_recoveries(details[ref]["relearn"]) for ref in ("gold", "oracle")
            if ref in details and ref != name}
    out = {}
    for mode, values in mine.items():
        entry: dict = {"recoveries": values}
        for ref, theirs in refs.items():
            pairs = [(a, b) for a, b in zip(values, theirs.get(mode, [])) if not (math.isnan(a) or math.isnan(b))]
            if pairs:
                entry[f"vs_{ref}"] = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs], n_boot=n_boot)
        if {"gold", "oracle"} <= set(refs):
            triples = [t for t in zip(values, refs["oracle"].get(mode, []), refs["gold"].get(mode, []))
                       if not any(math.isnan(x) for x in t)]
            if triples:
                entry["gap_closed"] = gap_closed(*zip(*triples), n_boot=n_boot)
        out[mode] = entry
    return out


def _num(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_num(v) for v in value) + "]"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _flat(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "n"}


def summary(report: dict) -> str:
    """The terminal summary: the table, the VKD checks and where the files are."""
    lines = [text_table(report["rows"], exclude=WALL_CLOCK), "",
             f"accuracies in %, chance {100 * report['chance']:.1f}%; relearning recovery: 0 = nothing regained, "
             "1 = back to the vanilla model", wall_clock_line(report)]
    stats = stats_lines(report)
    if stats:
        lines += ["", "relearning recovery per method, paired over attack seeds (mean difference [95% bootstrap "
                      "interval]; C = (oracle - method) / (oracle - gold): 1 = at gold, 0 = at the V+P limit):"]
        lines += [f"  {line}" for line in stats]
    by = report.get("checks_by_method") or {"vkd": report["checks"]}  # reports before vkd_robust: VKD's only
    for method, checks in by.items():
        for c in checks:
            verdict = "PASS" if c["ok"] else "FAIL"
            lines.append(f"  {verdict}  {_LABEL.get(method, method)} {c['check']}: {_num(c['value'])} "
                         f"(bound {_num(c['bound'])})")
    return "\n".join(lines)


def wall_clock_line(report: dict) -> str:
    """The unlearning runs' wall times: a figure of this machine, kept out of the table (which is the
    same on every machine that loads the same models with the same thread count: docs/demo.md)."""
    times = [f"{r['method']} {r['seconds']:.1f} s" for r in report["rows"] if r.get("seconds") is not None]
    return ("unlearning wall time on this machine (not part of the table): " + ", ".join(times)) if times else ""


def stats_lines(report: dict) -> list[str]:
    """One line per (method, attack mode) with intervals against gold and the oracle, and C (a report
    written before C carried ``meaningful`` is read as it was printed then)."""
    out = []
    for row in report["rows"]:
        stats = report["details"].get(row["method"], {}).get("stats", {})
        for mode, s in stats.items():
            parts = [f"{row['method']:<12} {mode:<6} seeds " + ", ".join(f"{r:+.2f}" for r in s["recoveries"])]
            for ref in ("gold", "oracle"):
                if f"vs_{ref}" in s:
                    d = s[f"vs_{ref}"]
                    parts.append(f"vs {ref} {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]")
            if "gap_closed" in s:
                c = s["gap_closed"]
                caveat = "" if c.get("meaningful", True) else " (not meaningful: oracle - gold not clearly > 0)"
                parts.append("C n/a (oracle = gold)" if math.isnan(c["value"]) else
                             f"C {c['value']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]{caveat}")
            out.append("; ".join(parts))
    return out


__all__ = ["DEFAULT_PROFILE", "DemoConfig", "load_profile", "markdown_table", "recovery_stats", "run_demo",
           "stats_lines", "summary"]
