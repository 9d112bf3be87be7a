"""``vkd-fast`` command line. Subcommands: ``doctor``, ``unlearn``, ``eval``, ``relearn``, ``demo``."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def doctor_report() -> dict:
    """Everything ``vkd-fast doctor`` prints, as a dict (also used by the benchmarks)."""
    import torch

    from . import __version__, _backend, _ext

    report: dict = {
        "vkd_fast": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "transformers": _version("transformers"),
        "cpu_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [],
        "triton_interpreter": _backend.interpreter_on(),
    }
    if report["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            report["cuda_devices"].append(
                {"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                 "capability": f"{p.major}.{p.minor}"}
            )
    module = _ext.load()
    report["cext"] = {
        "status": _ext.CEXT_SOURCE if module is not None else "unavailable",
        "path": getattr(module, "__file__", None),
        "reason": _ext.CEXT_ERROR,
        "threads": module.openmp_threads() if module is not None else None,
    }
    loss = {}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if report["cuda_available"] else [])
    for dev in devices:
        for name in ("cpu", "triton", "reference"):
            reason = _backend.unavailable_reason(name, dev, torch.float32)
            loss[f"{name}@{dev.type}"] = "ok" if reason is None else reason
        try:
            loss[f"auto@{dev.type}"] = _backend.resolve("auto", dev, torch.float32)
        except (RuntimeError, ValueError) as exc:
            loss[f"auto@{dev.type}"] = f"error: {exc}"
    report["loss_backends"] = loss
    report["cache_backends"] = {
        "cext": "ok" if module is not None else f"unavailable: {_ext.CEXT_ERROR}",
        "torch": "ok",
        "pinned_memory": "on (CUDA available)" if report["cuda_available"] else "off (no CUDA device)",
    }
    report["env"] = {
        k: os.environ[k]
        for k in ("VKD_FAST_BACKEND", "VKD_FAST_SKIP_CEXT", "VKD_FAST_NO_JIT", "VKD_FAST_EXT_DIR",
                  "VKD_FAST_CHECK_INDICES", "TRITON_INTERPRET")
        if k in os.environ
    }
    return report


def _print_report(report: dict) -> None:
    def line(key: str, value) -> None:
        print(f"  {key:<22} {value}")

    print("vkd-fast doctor")
    for key in ("vkd_fast", "python", "platform", "torch", "triton", "transformers", "cpu_threads"):
        line(key, report[key] if report[key] is not None else "not installed")
    line("cuda", f"{len(report['cuda_devices'])} device(s)" if report["cuda_available"] else "not available")
    for dev in report["cuda_devices"]:
        line(f"  cuda:{dev['index']}", f"{dev['name']}, {dev['memory_gib']} GiB, sm {dev['capability']}")
    line("triton interpreter", "on (TRITON_INTERPRET=1)" if report["triton_interpreter"] else "off")
    cext = report["cext"]
    detail = cext["path"] if cext["status"] != "unavailable" else cext["reason"]
    line("C++ extension", f"{cext['status']} ({detail})")
    print("  loss backends:")
    for key, value in report["loss_backends"].items():
        line(f"  {key}", value)
    print("  cache backends:")
    for key, value in report["cache_backends"].items():
        line(f"  {key}", value)
    if report["env"]:
        print("  environment:")
        for key, value in report["env"].items():
            line(f"  {key}", value)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def _quiet_transformers() -> None:
    """The CLI prints its own progress: no per-file load / save bars from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _toy_world(args):
    from .data import ToyWorld, ToyWorldConfig

    return ToyWorld(ToyWorldConfig(seed=getattr(args, "world_seed", 0), n_identities=getattr(args, "identities", 24),
                                   forget_fraction=getattr(args, "forget_fraction", 0.1)))


def load_items(spec: str, args=None) -> list[dict]:
    """A dataset spec -> items: ``toy:forget`` / ``toy:retain`` (the toy world's training images with a
    question and answer), ``mllmu:PATH`` (MLLMU-Bench training rows with metadata), ``clear:PATH``
    (CLEAR image rows, caption as the answer), a folder of images (sorted by name), or a ``.jsonl``
    file of objects with an ``image`` path (relative to the file) and optional ``question`` / ``answer``."""
    from pathlib import Path

    from PIL import Image

    if spec in ("toy:forget", "toy:retain"):
        world = _toy_world(args)
        return world.unlearn_items(world.forget_ids if spec == "toy:forget" else world.retain_ids)
    if spec.startswith("mllmu:"):
        from .data import load_mllmu_train

        return load_mllmu_train(spec[len("mllmu:"):])
    if spec.startswith("clear:"):
        from .data import load_clear_train

        return load_clear_train(spec[len("clear:"):])
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"dataset {spec}: the folder holds no image files ({', '.join(sorted(_IMAGE_SUFFIXES))})")
        return [{"image": Image.open(p).convert("RGB"), "path": str(p)} for p in files]
    if path.suffix == ".jsonl" and path.is_file():
        items = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "image" not in row:
                raise ValueError(f"dataset {spec}, line {n}: no 'image' field")
            items.append({**row, "image": Image.open(path.parent / row["image"]).convert("RGB")})
        return items
    raise ValueError(f"dataset {spec!r} must be toy:forget, toy:retain, mllmu:PATH, clear:PATH, a folder of images "
                     "or a .jsonl file of {\"image\": path, ...} rows")


def load_model(spec: str, args=None):
    """``toy:vanilla`` / ``toy:gold`` (the toy world's cached models, built on first use) or a local
    model directory -> (model, tokenizer or None)."""
    _quiet_transformers()
    if spec in ("toy:vanilla", "toy:gold"):
        from .data import load_toy_models

        models = load_toy_models(_toy_world(args), progress=True)
        return (models.vanilla if spec == "toy:vanilla" else models.gold), models.tokenizer
    from pathlib import Path

    if not Path(spec).is_dir():
        raise ValueError(f"model {spec!r} must be toy:vanilla, toy:gold or a local model directory")
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(spec, local_files_only=True).eval()
    model.requires_grad_(False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=True)
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


def _tokenizer_for(args, tokenizer):
    """--tokenizer DIR wins; else the model directory's; else the toy world's for toy data."""
    if getattr(args, "tokenizer", None):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    if tokenizer is not None:
        return tokenizer
    if getattr(args, "data", None) == "toy" or str(getattr(args, "forget", "")).startswith("toy:"):
        from .data import load_toy_models

        return load_toy_models(_toy_world(args), progress=True).tokenizer
    raise ValueError("no tokenizer: the model directory has none; pass --tokenizer DIR")


def _eval_sets(args) -> dict:
    from .eval import mllmu_eval_sets, toy_eval_sets

    if args.data == "toy":
        return toy_eval_sets(_toy_world(args))
    if not args.root:
        raise ValueError("--data mllmu needs --root (the local MLLMU-Bench folder)")
    return mllmu_eval_sets(args.root, args.forget_split, args.retain_split, limit=args.limit)


def _write_report(path, report: dict) -> None:
    from .eval import write_json

    write_json(path, {**report, "environment": doctor_report()})


def run_eval(args) -> int:
    from .eval import evaluate, text_table

    sets = _eval_sets(args)
    free = None
    if args.data == "mllmu" and args.max_new_tokens > 0:
        from .eval import mllmu_free_form_sets

        free = mllmu_free_form_sets(args.root, args.forget_split, args.retain_split, limit=args.limit)
    model, tokenizer = load_model(args.model, args)
    tokenizer = _tokenizer_for(args, tokenizer)
    result = evaluate(model, tokenizer, sets, batch_size=args.batch_size, free_form_sets=free,
                      max_new_tokens=max(1, args.max_new_tokens))
    row = {"method": args.model, **{k: v for k, v in result.items() if k != "n"}}
    print(text_table([row]))
    from .eval.report import COLUMNS

    shown = {c[0] for c in COLUMNS}
    for key, value in row.items():
        if key not in shown and key != "method":
            print(f"{key}: {value:.4f}")
    print("items per set: " + ", ".join(f"{k} {v}" for k, v in result["n"].items()))
    if args.output:
        _write_report(args.output, {"model": args.model, "data": args.data, "metrics": result})
        print(f"wrote {args.output}")
    return 0


def run_relearn(args) -> int:
    from .eval import RelearnConfig, held_out_accuracy, relearning_attack

    sets = _eval_sets(args)
    forget = sets["forget_vqa"] + sets.get("forget_vqa_unseen", [])
    config = RelearnConfig(modes=tuple(args.modes.split(",")), split=args.split,
                           attributes=tuple(args.attributes.split(",")), fraction=args.fraction, steps=args.steps,
                           lr=args.lr, batch_size=args.attack_batch_size, seed=args.seed)
    before_spec = args.before or ("toy:vanilla" if args.data == "toy" else None)
    if before_spec is None:
        raise ValueError("--before MODEL (the model before unlearning) is needed to compute the recovery")
    before, before_tok = load_model(before_spec, args)
    model, tokenizer = load_model(args.model, args)
    tokenizer = _tokenizer_for(args, tokenizer or before_tok)
    acc_before = held_out_accuracy(before, tokenizer, forget, config)
    del before
    result = relearning_attack(model, tokenizer, forget, config, acc_before=acc_before)
    print(f"held-out forget VQA: before unlearning {acc_before:.3f}, after unlearning "
          f"{result['acc_after_unlearn']:.3f} ({result['n_attack']} attack / {result['n_held_out']} held-out items)")
    for mode, res in result["modes"].items():
        print(f"  {mode:<6} after relearning {res['acc_after_relearn']:.3f}, recovery {res['recovery']:.2f}")
    if args.output:
        _write_report(args.output, {"model": args.model, "before": before_spec, "data": args.data, **result})
        print(f"wrote {args.output}")
    return 0


def run_demo_cmd(args) -> int:
    import time

    from .data import ToyModelConfig, load_toy_models
    from .eval import DemoConfig, RelearnConfig, run_demo, summary

    t0 = time.perf_counter()
    _quiet_transformers()
    methods = tuple(args.methods.split(","))
    config = DemoConfig(methods=methods, relearn=RelearnConfig(steps=args.relearn_steps))
    models = load_toy_models(_toy_world(args), ToyModelConfig(), rebuild=args.rebuild, progress=True)
    report = run_demo(models, config, output_dir=args.output_dir, progress=True, environment=doctor_report())
    print(summary(report))
    print(f"wrote {args.output_dir}/report.json, report.md, report.png in {time.perf_counter() - t0:.0f} s "
          f"(models cached in {models.path})")
    return 0 if all(c["ok"] for c in report["checks"]) or not args.strict else 1


def _config_from(args) -> object:
    import dataclasses

    from .engine import UnlearnConfig

    values: dict = {}
    if args.config:
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - pyyaml comes with transformers
            raise RuntimeError("--config needs PyYAML: pip install pyyaml") from exc
        with open(args.config) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {args.config}: expected a mapping of options, got {type(loaded).__name__}")
        values.update(loaded)
    import yaml

    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must be key=value")
        key, raw = item.split("=", 1)
        values[key.strip()] = yaml.safe_load(raw)
    names = {f.name for f in dataclasses.fields(UnlearnConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; see vkd-fast unlearn --help")
    values["output_dir"] = args.output_dir
    return UnlearnConfig(**values)


def _options_help() -> str:
    import dataclasses

    from .engine import UnlearnConfig

    lines = ["options (YAML keys of --config, or key=value overrides):"]
    for f in dataclasses.fields(UnlearnConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name:<20} {f.metadata.get('help', '')} [default: {default!r}]")
    return "\n".join(lines)


def run_unlearn(args) -> int:
    import time

    from . import unlearn

    config = _config_from(args)  # every input is checked before the model is loaded
    forget, retain = load_items(args.forget, args), load_items(args.retain, args)
    model, tokenizer = load_model(args.model, args)
    if args.method != "vkd" or config.output_terms or config.llm_tap or config.mask:  # these score text
        tokenizer = _tokenizer_for(args, tokenizer)
    t0 = time.perf_counter()
    result = unlearn(model, forget, retain, method=args.method, config=config, tokenizer=tokenizer,
                     resume=args.resume, progress=True)
    from pathlib import Path

    out = Path(args.output_dir)
    if args.save == "full":
        result.save_pretrained(out / "model")
    elif args.save == "delta":
        result.save_delta(out / "delta.safetensors")
    summary = {
        "method": result.method, "config": result.config, "steps_run": len(result.history),
        "start_step": result.start_step, "first": result.history[0] if result.history else None,
        "last": result.history[-1] if result.history else None, "wall_seconds": time.perf_counter() - t0,
        "trainable": {k: v for k, v in result.trainable.items() if k != "names"},
        "teacher_cache": result.teacher_cache, "saved": args.save,
    }
    from .engine.checkpoint import atomic_write

    atomic_write(out / "result.json", json.dumps(summary, indent=1))
    last = summary["last"] or {}
    print(f"unlearned in {summary['wall_seconds']:.1f} s: loss {last.get('loss', float('nan')):.4g} "
          f"(retain {last.get('loss_retain', float('nan')):.4g}, forget {last.get('loss_forget', float('nan')):.4g}); "
          f"wrote {out / 'result.json'}")
    return 0


def _world_args(p) -> None:
    p.add_argument("--world-seed", type=int, default=0, help="toy world: seed (default 0)")
    p.add_argument("--identities", type=int, default=24, help="toy world: number of people (default 24)")
    p.add_argument("--forget-fraction", type=float, default=0.1,
                   help="toy world: share of the people forgotten (default 0.1, at least 2)")


def _eval_args(p) -> None:
    p.add_argument("--data", choices=("toy", "mllmu"), default="toy", help="benchmark (default: the toy world)")
    p.add_argument("--root", help="--data mllmu: the local MLLMU-Bench folder (forget_5/, retain_95/, Test_Set/, ...)")
    p.add_argument("--forget-split", default="forget_5", help="--data mllmu: forget split folder")
    p.add_argument("--retain-split", default="retain_95", help="--data mllmu: retain split folder")
    p.add_argument("--limit", type=int, help="--data mllmu: rows per file (quick runs)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory's, or the toy world's)")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per evaluation forward")
    p.add_argument("--max-new-tokens", type=int, default=32,
                   help="--data mllmu: generation length of free-form answers (ROUGE-L) and cloze fills; 0 = skip them")
    p.add_argument("--output", help="write the results as JSON (with the environment) to this file")
    _world_args(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vkd-fast", description="VKD machine unlearning for MLLMs")
    sub = parser.add_subparsers(dest="command", required=True)
    p_doc = sub.add_parser("doctor", help="report versions, devices, the C++ extension and usable backends")
    p_doc.add_argument("--json", action="store_true", help="print the report as JSON")
    p_un = sub.add_parser(
        "unlearn", help="unlearn a local model's visual knowledge of the forget images (VKD)",
        description="Unlearn the visual knowledge of FORGET images from a local MLLM directory while keeping "
                    "RETAIN (METHOD.md). Only the vision encoder / projector change; the run folder gets "
                    "run.json, the teacher cache, checkpoints, result.json and the export.",
        epilog=_options_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p_un.add_argument("model", help="local model directory (save_pretrained layout), or toy:vanilla; nothing is "
                                    "downloaded")
    data_help = ("a folder of images, a .jsonl of {image: path, question, answer}, toy:forget / toy:retain, "
                 "mllmu:PATH (MLLMU-Bench rows with metadata) or clear:PATH")
    p_un.add_argument("--forget", required=True, help=f"forget data: {data_help}")
    p_un.add_argument("--retain", required=True, help=f"retain data: {data_help}")
    p_un.add_argument("--tokenizer", help="tokenizer directory (default: the model directory's, or the toy world's)")
    _world_args(p_un)
    p_un.add_argument("--output-dir", required=True, help="run folder (new, or the same run with --resume)")
    p_un.add_argument("--config", help="YAML file of options (see below)")
    p_un.add_argument("--method", default="vkd", help="unlearning method: vkd (default), ga, grad_diff, kl_min, npo, "
                                                      "mmunlearner (these need .jsonl data with question and answer, "
                                                      "and a tokenizer in the model directory)")
    p_un.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    p_un.add_argument("--save", choices=("full", "delta", "none"), default="full",
                      help="export: the full model (output-dir/model), the trained tensors only "
                           "(output-dir/delta.safetensors), or nothing")
    p_un.usage = "vkd-fast unlearn MODEL --forget SPEC --retain SPEC --output-dir DIR [options] [key=value ...]"
    p_ev = sub.add_parser("eval", help="evaluate a model on every metric of METHOD.md section 4",
                          description="Multiple-choice accuracy (option log-likelihood) on the forget / retain, "
                                      "image / text-only sets of the toy world or a local MLLMU-Bench copy, and the "
                                      "answer-collapse share on forget images.")
    p_ev.add_argument("model", help="toy:vanilla, toy:gold or a local model directory")
    _eval_args(p_ev)
    p_rl = sub.add_parser("relearn", help="relearning attack on an unlearned model (llm and visual modes)",
                          description="Fine-tune the model on image questions about part of the forget knowledge "
                                      "(some attributes, or a fraction of the pairs), then measure forget VQA on the "
                                      "rest; recovery = (after relearn - after unlearn) / (before - after unlearn).")
    p_rl.add_argument("model", help="the unlearned model: a local model directory (or toy:gold)")
    p_rl.add_argument("--before", help="the model before unlearning (default for --data toy: toy:vanilla)")
    p_rl.add_argument("--modes", default="llm,visual", help="attack modes, comma-separated: llm, visual")
    p_rl.add_argument("--split", default="attributes", choices=("attributes", "fraction"))
    p_rl.add_argument("--attributes", default="job,city", help="split=attributes: what the attacker trains on")
    p_rl.add_argument("--fraction", type=float, default=0.25, help="split=fraction: share of forget VQA pairs")
    p_rl.add_argument("--steps", type=int, default=40, help="attacker's fine-tuning steps")
    p_rl.add_argument("--lr", type=float, default=1e-3, help="attacker's AdamW learning rate")
    p_rl.add_argument("--attack-batch-size", type=int, default=8, help="attacker's batch size")
    p_rl.add_argument("--seed", type=int, default=0)
    _eval_args(p_rl)
    p_dm = sub.add_parser("demo", help="the toy-world demo: vanilla and gold, VKD and every baseline, all metrics, "
                                       "relearning attack, table + JSON + Markdown + PNG",
                          description="Builds (first run, cached) or loads the toy world's vanilla and gold tiny "
                                      "LLaVA models, unlearns the forget people with each method, evaluates, attacks "
                                      "and reports. Nothing is downloaded.")
    from .eval.demo import METHODS

    p_dm.add_argument("--output-dir", default="demo_output", help="where report.json / .md / .png go")
    p_dm.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    p_dm.add_argument("--relearn-steps", type=int, default=40, help="attacker's fine-tuning steps")
    p_dm.add_argument("--rebuild", action="store_true", help="retrain the vanilla and gold models")
    p_dm.add_argument("--strict", action="store_true", help="exit 1 when a VKD check fails")
    _world_args(p_dm)
    args, rest = parser.parse_known_args(argv)
    if args.command == "unlearn":
        # option overrides (key=value) may stand anywhere after the subcommand; they win over --config
        args.overrides = [a for a in rest if "=" in a and not a.startswith("-")]
        stray = [a for a in rest if a not in args.overrides]
        if stray:
            p_un.error(f"unrecognized arguments: {' '.join(stray)}")
        try:
            return run_unlearn(args)
        except (ValueError, TypeError, KeyError) as exc:
            print(f"vkd-fast unlearn: error: {exc}", file=sys.stderr)
            return 2
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    runners = {"eval": run_eval, "relearn": run_relearn, "demo": run_demo_cmd}
    if args.command in runners:
        try:
            return runners[args.command](args)
        except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
            print(f"vkd-fast {args.command}: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "doctor":
        report = doctor_report()
        if args.json:
            json.dump(report, sys.stdout, indent=2)
            print()
        else:
            _print_report(report)
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
