"""The subcommands' work: ``unlearn``, ``eval``, ``relearn`` and ``demo`` (argument parsing is in main.py)."""

from __future__ import annotations

import json

from .doctor import doctor_report
from .options import config_from
from .specs import _quiet_transformers, _tokenizer_for, _toy_world, load_items, load_model


def _eval_sets(args) -> dict:
    from ..eval import mllmu_eval_sets, toy_eval_sets

    if args.data == "toy":
        return toy_eval_sets(_toy_world(args))
    if not args.root:
        raise ValueError("--data mllmu needs --root (the local MLLMU-Bench folder)")
    return mllmu_eval_sets(args.root, args.forget_split, args.retain_split, limit=args.limit)


def _write_report(path, report: dict) -> None:
    from ..eval import write_json

    write_json(path, {**report, "environment": doctor_report()})


def run_eval(args) -> int:
    from ..eval import evaluate, text_table

    sets = _eval_sets(args)
    free = None
    if args.data == "mllmu" and args.max_new_tokens > 0:
        from ..eval import mllmu_free_form_sets

        free = mllmu_free_form_sets(args.root, args.forget_split, args.retain_split, limit=args.limit)
    model, tokenizer = load_model(args.model, args)
    tokenizer = _tokenizer_for(args, tokenizer)
    result = evaluate(model, tokenizer, sets, batch_size=args.batch_size, free_form_sets=free,
                      max_new_tokens=max(1, args.max_new_tokens))
    row = {"method": args.model, **{k: v for k, v in result.items() if k != "n"}}
    print(text_table([row]))
    from ..eval.report import COLUMNS

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
    from ..eval import RelearnConfig, held_out_accuracy, relearning_attack

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

    from ..data import ToyModelConfig, load_toy_models
    from ..demo import DemoConfig, run_demo, summary
    from ..eval import RelearnConfig

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


def run_unlearn(args) -> int:
    import time

    from .. import unlearn
    from ..methods import create_method

    # every option is checked before any data or model is loaded
    config, options = config_from(args.config, args.overrides, args.method, args.output_dir)
    method = create_method(args.method, options)
    forget, retain = load_items(args.forget, args), load_items(args.retain, args)
    model, tokenizer = load_model(args.model, args)
    if method.needs_tokenizer:  # it scores text
        tokenizer = _tokenizer_for(args, tokenizer)
    t0 = time.perf_counter()
    result = unlearn(model, forget, retain, method=method, config=config, tokenizer=tokenizer,
                     resume=args.resume, progress=True)
    from pathlib import Path

    out = Path(args.output_dir)
    if args.save == "full":
        result.save_pretrained(out / "model")
    elif args.save == "delta":
        result.save_delta(out / "delta.safetensors")
    summary = {
        "method": result.method, "config": result.config, "options": result.options, "steps_run": len(result.history),
        "start_step": result.start_step, "first": result.history[0] if result.history else None,
        "last": result.history[-1] if result.history else None, "wall_seconds": time.perf_counter() - t0,
        "trainable": {k: v for k, v in result.trainable.items() if k != "names"},
        "teacher_cache": result.teacher_cache, "saved": args.save,
    }
    from ..utils.files import atomic_write

    atomic_write(out / "result.json", json.dumps(summary, indent=1))
    last = summary["last"] or {}
    print(f"unlearned in {summary['wall_seconds']:.1f} s: loss {last.get('loss', float('nan')):.4g} "
          f"(retain {last.get('loss_retain', float('nan')):.4g}, forget {last.get('loss_forget', float('nan')):.4g}); "
          f"wrote {out / 'result.json'}")
    return 0
