"""The subcommands' work: ``unlearn``, ``eval``, ``relearn`` and ``demo`` (argument parsing is in main.py)."""

from __future__ import annotations

import json

from .doctor import doctor_report
from .options import config_from
from .specs import _quiet_transformers, _tokenizer_for, load_items, load_model, load_visual


def _placement(args, command: str, threads: int | None = None):
    """(device, dtype of a local model's weights) from --device / --dtype, said in one line on stderr.
    dtype: a torch dtype, None (the checkpoint's own: --dtype auto) or "16bit" (--dtype default on an
    accelerator: the checkpoint's dtype when it is 16-bit, else bfloat16). ``threads``: the CPU threads
    the command will run its numerics on, when it sets them itself (the demo's --threads)."""
    import sys

    import torch

    from ..utils.devices import describe_device, is_accelerator, resolve_device

    device = resolve_device(args.device or "auto", "--device")
    choice = getattr(args, "dtype", "default")
    if choice == "default":
        dtype = "16bit" if is_accelerator(device) else torch.float32
    else:
        dtype = None if choice == "auto" else getattr(torch, choice)
    shown = {"16bit": "16-bit (bfloat16 unless the checkpoint is float16)", None: "the checkpoint's dtype"}.get(
        dtype, str(dtype).replace("torch.", ""))
    print(f"vkd-fast {command}: device {describe_device(device, threads)}; a local model's weights: {shown}",
          file=sys.stderr, flush=True)
    return device, dtype


def _task(args):
    from ..tasks import get_task

    return get_task(args.data)


def _protocol(args) -> str:
    """The scoring protocol: --protocol, else the task's first; checked against --data, and every
    protocol's own options against the protocol, before any work."""
    from ..tasks import available_tasks, get_task

    task = _task(args)
    protocol = args.protocol or task.protocols[0]
    if protocol not in task.protocols:
        raise ValueError(f"--protocol {protocol} does not apply to --data {args.data} (valid: "
                         f"{', '.join(task.protocols)})")
    if protocol != "likelihood":
        task.root(args)
    for name in available_tasks():
        for owner, flags in get_task(name).protocol_options.items():
            given = [f for f in flags if getattr(args, f.lstrip("-").replace("-", "_"), None) not in (None, False)]
            if owner != protocol and given:
                raise ValueError(f"{' and '.join(flags)} appl{'ies' if len(flags) == 1 else 'y'} to --protocol "
                                 f"{owner} only")
    if protocol != "likelihood":
        from ..eval.protocols.registry import PROTOCOLS

        try:  # an optional package the protocol needs, before any work
            PROTOCOLS.get(protocol).require()
        except ImportError as exc:
            raise ValueError(str(exc)) from None
    if protocol == "likelihood" and args.audit:
        from ..eval.protocols import available_protocols

        raise ValueError(f"--audit applies to --protocol {' / '.join(available_protocols()[1:])} (the likelihood "
                         "protocol's JSON has every score)")
    return protocol


def _audit_path(args):
    if args.audit:
        return args.audit
    if args.output:
        from pathlib import Path

        out = Path(args.output)
        return out.with_name(f"{out.stem}.questions.jsonl")
    return None


def _run_benchmark_protocol(args, protocol: str) -> int:
    from ..eval import evaluate, write_jsonl

    audit = _audit_path(args)
    _check_output_file("--audit", audit)
    task = _task(args)
    options = task.protocol_kwargs(args, protocol)  # checked before any model loads
    data = task.benchmark(args, protocol)
    device, dtype = _placement(args, "eval")
    model, tokenizer = load_model(args.model, args, dtype, device=device)
    tokenizer = _tokenizer_for(args, tokenizer)
    out = evaluate(model, tokenizer, data, protocol=protocol, **options)
    print(json.dumps(out["results"], indent=1, ensure_ascii=False))
    settings = dict(out["settings"], data_source=getattr(data, "source", None), audit=str(audit) if audit else None)
    if audit:
        write_jsonl(audit, out["records"])
        print(f"wrote {audit} ({len(out['records'])} questions)")
    if args.output:
        from ..eval import write_json

        # the benchmark's own keys at the top, everything of ours (settings, environment) under one key
        write_json(args.output, {**out["results"], "vkd_fast": {"model": args.model, **settings,
                                                                "environment": doctor_report()}})
        print(f"wrote {args.output}")
    return 0


def _write_report(path, report: dict) -> None:
    from ..eval import write_json

    write_json(path, {**report, "environment": doctor_report()})


def _check_output_file(option: str, path) -> None:
    """An output file's path, checked before any work (not a folder, not below a file)."""
    from ..utils.files import check_output_file

    if path is not None:
        check_output_file(option, path)


def _check_positive(option: str, value) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{option} must be >= 1, got {value}")


def run_eval(args) -> int:
    from ..eval import evaluate, text_table

    _check_output_file("--output", args.output)  # before any work
    _check_positive("--batch-size", args.batch_size)
    _check_positive("--limit", args.limit)
    protocol = _protocol(args)
    if protocol != "likelihood":
        return _run_benchmark_protocol(args, protocol)
    sets, free = _task(args).eval_sets(args), _task(args).free_form_sets(args)
    device, dtype = _placement(args, "eval")
    model, tokenizer = load_model(args.model, args, dtype, device=device)
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


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ValueError("--seeds must name at least one seed")
    return seeds


def run_relearn(args) -> int:
    from ..eval.relearn import AttackGrid, attack_grid

    _check_output_file("--output", args.output)
    modes, seeds = tuple(args.modes.split(",")), _seeds(args.seeds if args.seeds else str(args.seed))
    if args.grid:
        grid = AttackGrid(modes=modes, seeds=seeds, batch_size=args.attack_batch_size)
    else:
        split = f"attributes:{args.attributes}" if args.split == "attributes" else f"fraction:{args.fraction}"
        grid = AttackGrid(splits=(split,), lrs=(args.lr,), steps=(args.steps,), modes=modes, seeds=seeds,
                          batch_size=args.attack_batch_size)  # every option is checked before any model loads
    sets = _task(args).eval_sets(args)
    forget = sets["forget_vqa"] + sets.get("forget_vqa_unseen", [])
    before_spec = args.before or _task(args).model_before(args)
    if before_spec is None:
        raise ValueError("--before MODEL (the model before unlearning) is needed to compute the recovery")
    device, dtype = _placement(args, "relearn")
    before, before_tok = load_model(before_spec, args, dtype, device=device)
    model, tokenizer = load_model(args.model, args, dtype, device=device)
    tokenizer = _tokenizer_for(args, tokenizer or before_tok)
    result = attack_grid(model, tokenizer, forget, grid, before=before)
    del before
    print(f"relearning attack, recovery over seeds {','.join(map(str, seeds))} (0 = nothing regained, "
          "1 = back to the model before unlearning):")
    for c in result["cells"]:
        print(f"  {c['split']:<22} lr {c['lr']:<7g} {c['steps']:>4} steps  {c['mode']:<6} recovery "
              f"{c['recovery']:+.2f} ± {c['recovery_std']:.2f}  ({', '.join(f'{r:+.2f}' for r in c['recoveries'])})")
    for mode, c in result["worst"].items():
        if c is not None:
            print(f"worst case, {mode}: {c['recovery']:+.2f} ({c['split']}, lr {c['lr']:g}, {c['steps']} steps)")
    if args.output:
        _write_report(args.output, {"model": args.model, "before": before_spec, "data": args.data, **result})
        print(f"wrote {args.output}")
    return 0


#: ``vkd-fast demo --quick``: VKD and two baselines (one that keeps retain accuracy, one fast); the
#: references and the default attack as in the full demo; no attack grid, no embedding attack
QUICK_METHODS = "vkd,grad_diff,npo"


def run_demo_cmd(args) -> int:
    import time

    from ..demo import DemoConfig, run_demo, summary
    from ..eval.relearn import AttackGrid
    from ..tasks.toy import toy_models

    t0 = time.perf_counter()
    _quiet_transformers()
    quick = args.quick
    methods = args.methods or (QUICK_METHODS if quick else None)
    methods = tuple(methods.split(",")) if methods else None  # None: the profile's
    attack = AttackGrid(splits=("attributes:job,city",), lrs=(1e-3,), steps=(args.relearn_steps,),
                        seeds=_seeds(args.attack_seeds))
    device, _ = _placement(args, "demo", threads=args.threads or None)
    config = DemoConfig(methods=methods, profile=args.config, attack=attack, device=str(device),
                        oracle=not args.no_oracle,
                        embedding_attack=not (args.no_embedding_attack or quick),
                        threads=args.threads or None,
                        **({"worst_grid": None} if args.no_grid or quick else {}))
    models = toy_models(args, rebuild=args.rebuild)
    report = run_demo(models, config, output_dir=args.output_dir, progress=True, environment=doctor_report())
    print(summary(report))
    where = "the shipped build" if models.shipped else "built on this machine"
    print(f"wrote {args.output_dir}/report.json, report.md, report.png in {time.perf_counter() - t0:.0f} s "
          f"(toy models: {where}, {models.path})")
    return 0 if all(c["ok"] for c in report["checks"]) or not args.strict else 1


def run_unlearn(args) -> int:
    import time

    from .. import unlearn
    from ..methods import create_method

    # every option is checked before any data or model is loaded
    config, options = config_from(args.config, args.overrides, args.method, args.output_dir, device=args.device)
    args.device = config.device
    from ..utils.devices import resolve_device

    resolve_device(config.device, "--device")  # a device torch does not see is refused before any work
    method = create_method(args.method, options)
    from pathlib import Path

    _check_output_file("log_path", config.log_path)
    lora = method.trainable_set()[2]
    if lora and args.save == "full":  # an option combination that could only fail after the work
        raise ValueError(f"--save full: method {args.method!r} trains LoRA adapters, which cannot be folded into a "
                         "checkpoint of the model's family yet; use --save delta (the adapter tensors) or --save none")
    if args.link and args.save != "full":
        raise ValueError(f"--link applies to --save full only (got --save {args.save})")
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise ValueError(f"--output-dir {args.output_dir} is a file; choose a folder")

    local = Path(args.model).is_dir()
    if args.visual_only and method.needs_language_model:
        raise ValueError(f"--visual-only: method {args.method!r} with these options runs the language model (an llm "
                         "tap, output terms, a mask or a baseline); drop --visual-only")
    if args.visual_only and not local:
        raise ValueError("--visual-only needs a local model directory (the toy models are loaded whole)")
    visual_only = local and not method.needs_language_model and not args.full_model
    forget, retain = load_items(args.forget, args), load_items(args.retain, args)
    method.check_data(forget, retain)  # what the items alone decide (e.g. a person on each), before the model
    import torch

    device, dtype = _placement(args, "unlearn")
    if visual_only:
        print(f"loading only the vision tower and projector of {args.model}: {args.method} with these options never "
              "runs the language model (--full-model loads everything)", flush=True)
        # everything loaded here trains (or is never run): full precision unless a dtype was asked for
        model, tokenizer = load_visual(args.model, torch.float32 if dtype == "16bit" else dtype), None
    else:
        model, tokenizer = load_model(args.model, args, dtype if local else None)
    if method.needs_tokenizer:  # it scores text
        tokenizer = _tokenizer_for(args, tokenizer)
    t0 = time.perf_counter()
    from ..engine import RunFinished

    try:
        result = unlearn(model, forget, retain, method=method, config=config, tokenizer=tokenizer,
                         resume=args.resume, progress=True)
    except RunFinished as exc:  # nothing to do: the run's result.json and export stay as they are
        print(exc)
        return 0
    out = Path(args.output_dir)
    exported = None
    if args.save == "full":
        # from a local checkpoint: rewrite only the shards that changed, the rest copied (no LLM in memory)
        exported = result.save_pretrained(out / "model", base=args.model if local else None, link=args.link,
                                          overwrite=args.resume)
    elif args.save == "delta":
        result.save_delta(out / "delta.safetensors")
    summary = {
        "method": result.method, "config": result.config, "options": result.options, "steps_run": len(result.history),
        "start_step": result.start_step, "first": result.history[0] if result.history else None,
        "last": result.history[-1] if result.history else None, "wall_seconds": time.perf_counter() - t0,
        "trainable": {k: v for k, v in result.trainable.items() if k != "names"},
        "method_stats": result.method_stats, "saved": args.save, "visual_only": visual_only,
        "export": {k: v for k, v in exported.items() if k != "changed"} if exported else None,
    }
    from ..utils.files import atomic_write

    atomic_write(out / "result.json", json.dumps(summary, indent=1))
    last = summary["last"] or {}
    terms = ", ".join(f"{k[len('loss_'):]} {v:.4g}" for k, v in last.items() if k.startswith("loss_"))
    loss = f"loss {last['loss']:.4g}" + (f" ({terms})" if terms else "") if "loss" in last else "no steps run"
    print(f"unlearned in {summary['wall_seconds']:.1f} s: {loss}; wrote {out / 'result.json'}")
    return 0


def run_export(args) -> int:
    from pathlib import Path

    from ..checkpoints import export_unlearned

    source = Path(args.delta)
    if source.is_dir():  # a run folder: its delta, else its latest checkpoint's trained tensors
        from ..engine import latest_checkpoint

        if (source / "delta.safetensors").is_file():
            source = source / "delta.safetensors"
        else:
            ckpt = latest_checkpoint(source)
            if ckpt is None:
                raise ValueError(f"{args.delta}: a run folder with neither delta.safetensors nor a checkpoint")
            source = ckpt / "trainable.safetensors"
    report = export_unlearned(args.base, source, args.out, link=args.link, overwrite=args.overwrite)
    print(f"exported {args.out} from {args.base} + {source} in {report['seconds']:.1f} s: "
          f"{len(report['changed'])} tensors changed, {len(report['rewritten'])} shard(s) rewritten, "
          f"{len(report['copied'])} copied, {len(report['linked'])} linked, {report['bytes_written'] / 2**20:.1f} MiB "
          "written")
    return 0
