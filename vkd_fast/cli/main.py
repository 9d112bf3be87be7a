"""``vkd-fast`` command line: the parsers and the dispatch. Subcommands: ``doctor``, ``unlearn``,
``eval``, ``relearn``, ``demo``."""

from __future__ import annotations

import argparse
import json
import sys

from .commands import run_demo_cmd, run_eval, run_export, run_relearn, run_unlearn
from .doctor import _print_report, doctor_report
from .options import load_plugins, options_help


def _tasks():
    from ..tasks import available_tasks, get_task

    return [get_task(name) for name in available_tasks()]


def _task_args(p, command: str) -> None:
    """Every registered task's own options for ``command`` (e.g. the toy world's --world-seed)."""
    for task in _tasks():
        task.add_arguments(p, command)


def _plugin_arg(p) -> None:
    # read before the parsers are built (load_plugins), declared here for --help and so argparse accepts it
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                   help="import a module (dotted name or .py file) that registers methods, tasks, protocols or model "
                        "adapters (repeatable; also VKD_FAST_PLUGINS=a,b)")


def _device_args(p, what: str) -> None:
    p.add_argument("--device", default=None,
                   help=f"where {what} runs: auto (the default: the GPU when torch sees one, else the CPU; said in one "
                        "line at start), cpu, cuda, cuda:1, ...")


def _dtype_args(p) -> None:
    p.add_argument("--dtype", choices=("default", "float32", "bfloat16", "float16", "auto"), default="default",
                   help="a local model's weights in memory. default: float32 on the CPU; on an accelerator bfloat16 "
                        "for the frozen parts (training keeps the tensors it updates in float32 and autocasts to "
                        "bf16). auto: the checkpoint's own dtype. float32 everywhere also makes --visual-only and "
                        "--full-model give the same weights")


def _eval_args(p, command: str, protocols: bool = False) -> None:
    """The evaluation data options, from the task registry (``protocols``: also the benchmark
    protocols' options)."""
    from ..eval.protocols.registry import PROTOCOLS

    tasks = [t for t in _tasks() if protocols or "likelihood" in t.protocols]
    p.add_argument("--data", choices=[t.name for t in tasks], default=tasks[0].name,
                   help="benchmark task: " + ", ".join(f"{t.name} ({t.title})" for t in tasks)
                        + f" (default {tasks[0].name})")
    p.add_argument("--root", help="; ".join(f"--data {t.name}: {t.root_help}" for t in tasks if t.root_help))
    for side, i in (("forget", 0), ("retain", 1)):
        defaults = [f"{t.default_splits[i]} for {t.name}" for t in tasks if t.default_splits[i]]
        p.add_argument(f"--{side}-split", help=f"{side} split folder (default: {', '.join(defaults)})")
    p.add_argument("--limit", type=int,
                   help="; ".join(f"--data {t.name}: {t.limit_help}" for t in tasks if t.limit_help))
    if protocols:
        names = list(dict.fromkeys(name for t in tasks for name in t.protocols))
        where = {name: ", ".join(f"--data {t.name}" for t in tasks if name in t.protocols) for name in names}
        described = [f"{name} = " + ("option log-likelihood" if name == "likelihood" else PROTOCOLS.get(name).summary)
                     + f" ({where[name]})" for name in names]
        p.add_argument("--protocol", choices=names,
                       help="scoring protocol (docs/method.md §4.3; default: the task's first): "
                            + "; ".join(described))
        p.add_argument("--seed", type=int, default=0,
                       help="benchmark protocols: the seed of every random draw (demonstration people, test poses, "
                            "caption questions); recorded in the output")
        p.add_argument("--audit", help="benchmark protocols: the per-question JSON-lines file (default: beside "
                                       "--output, <output stem>.questions.jsonl)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory's, or the task's)")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per evaluation forward")
    p.add_argument("--max-new-tokens", type=int, default=32,
                   help="likelihood protocol, tasks with free-form sets (MLLMU-Bench): generation length of free-form "
                        "answers (ROUGE-L) and cloze fills; 0 = skip them (benchmark protocols use their own lengths)")
    p.add_argument("--output", help="write the results as JSON (with the environment) to this file")
    _task_args(p, command)


def build_parser() -> argparse.ArgumentParser:
    """The ``vkd-fast`` parser with every subcommand; builds, runs nothing. Methods and tasks are the
    registered ones: plug-ins (``--plugin`` / ``VKD_FAST_PLUGINS``) are loaded first (:func:`main` does)."""
    from .. import __version__
    from ..methods import available_methods

    parser = argparse.ArgumentParser(prog="vkd-fast", description="VKD machine unlearning for MLLMs")
    parser.add_argument("--version", action="version", version=f"vkd-fast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_doc = sub.add_parser("doctor", help="report versions, devices, the C++ extension and usable backends")
    p_doc.add_argument("--json", action="store_true", help="print the report as JSON")
    p_un = sub.add_parser(
        "unlearn", help="unlearn a local model's visual knowledge of the forget images (VKD)",
        description="Unlearn the visual knowledge of FORGET images from a local MLLM directory while keeping "
                    "RETAIN (docs/method.md). Only the vision encoder / projector change; the run folder gets "
                    "run.json, the teacher cache, checkpoints, result.json and the export.",
        epilog=options_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    models = ", ".join(t.model_spec_help for t in _tasks() if t.model_spec_help)
    p_un.add_argument("model", help=f"local model directory (save_pretrained layout), or {models}; nothing is "
                                    "downloaded")
    specs = [t.train_spec_help for t in _tasks() if t.train_spec_help]
    data_help = ("a folder of images with one subfolder per person (FOLDER/<person>/<image>), a flat folder of "
                 "images (no person; see --person-per-image), a .jsonl of "
                 "{image: path, identity, question, answer} rows (image paths relative to the file; identity names "
                 "the person pictured), or a task's data: " + "; ".join(specs))
    p_un.add_argument("--forget", required=True, help=f"forget data: {data_help}")
    p_un.add_argument("--retain", required=True, help=f"retain data: {data_help}")
    p_un.add_argument("--person-per-image", action="store_true",
                      help="count every image without a person (identity / name / id) as a person of its own; "
                           "methods that group images by person (VKD's default retain_person target) refuse such "
                           "data otherwise")
    p_un.add_argument("--tokenizer", help="tokenizer directory (default: the model directory's, or the task's)")
    _task_args(p_un, "unlearn")
    p_un.add_argument("--output-dir", required=True, help="run folder (new, or the same run with --resume)")
    p_un.add_argument("--config", help="YAML file of options (see below)")
    p_un.add_argument("--method", default="vkd", choices=available_methods(),
                      help="unlearning method (default vkd); the output-level baselines need .jsonl data with "
                           "question and answer, and a tokenizer in the model directory")
    _plugin_arg(p_un)
    p_un.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    p_un.add_argument("--save", choices=("full", "delta", "none"), default="full",
                      help="export: the full model (output-dir/model; from a local checkpoint only the shards holding "
                           "changed tensors are rewritten), the trained tensors only (output-dir/delta.safetensors), "
                           "or nothing")
    p_un.add_argument("--link", action="store_true",
                      help="--save full: hard-link the unchanged shards instead of copying them (same filesystem)")
    load = p_un.add_mutually_exclusive_group()
    load.add_argument("--visual-only", action="store_true",
                      help="load only the vision tower and projector (the default whenever the method never runs "
                           "the language model: VKD with vision / projector taps and no output terms)")
    load.add_argument("--full-model", action="store_true", help="load the whole model even when it is not needed")
    _device_args(p_un, "training")
    _dtype_args(p_un)
    p_un.usage = "vkd-fast unlearn MODEL --forget SPEC --retain SPEC --output-dir DIR [options] [key=value ...]"
    p_ex = sub.add_parser("export", help="write a complete unlearned checkpoint from a base folder and a delta",
                          description="Copy BASE_DIR to OUT_DIR with the unlearned tensors of DELTA_OR_RUN_DIR (a "
                                      "delta.safetensors, or a run folder: its delta or its latest checkpoint): only "
                                      "the shards holding changed tensors are rewritten, the rest copied or "
                                      "hard-linked; the language model is never in memory. Written into a temporary "
                                      "folder, then renamed.")
    p_ex.add_argument("base", metavar="BASE_DIR", help="the checkpoint folder the run started from")
    p_ex.add_argument("delta", metavar="DELTA_OR_RUN_DIR")
    p_ex.add_argument("out", metavar="OUT_DIR", help="a new folder")
    p_ex.add_argument("--link", action="store_true", help="hard-link unchanged shards (same filesystem)")
    p_ex.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p_ev = sub.add_parser("eval", help="evaluate a model on every metric of docs/method.md §4",
                          description="Multiple-choice accuracy (option log-likelihood) on the forget / retain, "
                                      "image / text-only sets of the toy world or a local MLLMU-Bench copy, and the "
                                      "answer-collapse share on forget images; or a benchmark's own protocol "
                                      "(--protocol mllmu / clear) with its JSON and a per-question audit file.")
    p_ev.add_argument("model", help=f"a local model directory, or {models}")
    _eval_args(p_ev, "eval", protocols=True)
    _plugin_arg(p_ev)
    _device_args(p_ev, "evaluation")
    _dtype_args(p_ev)
    p_rl = sub.add_parser("relearn", help="relearning attack on an unlearned model (llm and visual modes)",
                          description="Fine-tune the model on image questions about part of the forget knowledge "
                                      "(some attributes, or a fraction of the pairs), then measure forget VQA on the "
                                      "rest; recovery = (after relearn - after unlearn) / (before - after unlearn).")
    p_rl.add_argument("model", help="the unlearned model: a local model directory (or toy:gold)")
    p_rl.add_argument("--before", help="the model before unlearning (default: the task's, e.g. toy:vanilla for --data "
                                       "toy)")
    p_rl.add_argument("--modes", default="llm,visual", help="attack modes, comma-separated: llm, visual")
    p_rl.add_argument("--split", default="attributes", choices=("attributes", "fraction"))
    p_rl.add_argument("--attributes", default="job,city", help="split=attributes: what the attacker trains on")
    p_rl.add_argument("--fraction", type=float, default=0.25,
                      help="split=fraction: share of the forget (person, attribute) pairs the attacker trains on")
    p_rl.add_argument("--steps", type=int, default=40, help="attacker's fine-tuning steps")
    p_rl.add_argument("--lr", type=float, default=1e-3, help="attacker's AdamW learning rate")
    p_rl.add_argument("--attack-batch-size", type=int, default=8, help="attacker's batch size")
    p_rl.add_argument("--seed", type=int, default=0, help="the attack's seed (its batches; the fraction split)")
    p_rl.add_argument("--seeds", help="several attack seeds, comma-separated: each attack is run with each and the "
                                      "recovery's mean and spread reported (instead of --seed)")
    p_rl.add_argument("--grid", action="store_true",
                      help="the attack grid: splits job,city -> hobby,pet, the reverse, and half of the (person, "
                           "attribute) pairs; lr 1e-4 and 1e-3; 40 and 200 steps; each cell and the worst case per "
                           "mode (with --seeds; the single-attack options are ignored)")
    _eval_args(p_rl, "relearn")
    _plugin_arg(p_rl)
    _device_args(p_rl, "the attack and its evaluation")
    _dtype_args(p_rl)
    p_dm = sub.add_parser("demo", help="the toy-world demo: vanilla and gold, VKD and every baseline, all metrics, "
                                       "relearning attack, table + JSON + Markdown + PNG",
                          description="Loads the toy world's vanilla, gold and oracle tiny LLaVA models (the default "
                                      "world's ship with the package; another world is built on first use and "
                                      "cached), unlearns the forget people with each method, evaluates, attacks and "
                                      "reports. Nothing is downloaded.")
    p_dm.add_argument("--quick", action="store_true",
                      help="the quick demo (make demo): VKD and two baselines (grad_diff, npo) unless --methods, no "
                           "attack grid, no embedding attack; the default attack in both modes as in the full demo")
    p_dm.add_argument("--output-dir", default="demo_output", help="where report.json / .md / .png go")
    p_dm.add_argument("--config", default="demo", metavar="NAME_OR_PATH",
                      help="the demo profile -- which methods run, in order, and their settings: a shipped name "
                           "(default demo: vkd_fast/configs/demo.yaml) or a YAML file of that shape")
    p_dm.add_argument("--methods", help="comma-separated subset of the profile's methods (default: all of them)")
    p_dm.add_argument("--relearn-steps", type=int, default=40, help="the default attack's fine-tuning steps")
    p_dm.add_argument("--attack-seeds", default="0,1,2",
                      help="seeds of the default attack: the relearn columns are the mean over them (default 0,1,2)")
    p_dm.add_argument("--no-grid", action="store_true",
                      help="skip the attack grid whose worst case is shown for VKD, gold and the oracle (faster)")
    p_dm.add_argument("--no-embedding-attack", action="store_true",
                      help="skip the embedding attack (per forget image, the visual tokens the language model reads "
                           "optimised to answer two facts, the others tested)")
    p_dm.add_argument("--no-oracle", action="store_true",
                      help="skip the oracle reference row (the V+P-only limit: the vanilla LLM with a vision tower "
                           "and projector trained on retain people only; shipped for the default world, built on "
                           "first use and cached for another)")
    p_dm.add_argument("--threads", type=int, default=1,
                      help="CPU threads for the demo's numerics (default 1: float results move with the thread count, "
                           "one thread keeps the table the same whatever OMP_NUM_THREADS says; 0: torch's default)")
    p_dm.add_argument("--rebuild", action="store_true",
                      help="train the vanilla and gold models anew on this machine (into the cache) instead of "
                           "loading the shipped or cached ones")
    p_dm.add_argument("--strict", action="store_true", help="exit 1 when a VKD check fails")
    _device_args(p_dm, "unlearning, evaluation and the attacks (not the toy models' build, always on the CPU)")
    _task_args(p_dm, "demo")
    _plugin_arg(p_dm)  # a profile may name plug-in methods
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``{name: parser}`` of the subcommands of :func:`build_parser`'s parser, in their order."""
    return next(dict(a.choices) for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def parse_args(argv: list[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The command line as :func:`main` reads it: ``unlearn`` also takes ``key=value`` words (in
    ``.overrides``), anything else unknown is an error (argparse prints it and exits with 2)."""
    parser = build_parser() if parser is None else parser
    args, rest = parser.parse_known_args(argv)
    if args.command == "unlearn":
        # option overrides (key=value) may stand anywhere after the subcommand; they win over --config
        args.overrides = [a for a in rest if "=" in a and not a.startswith("-")]
        stray = [a for a in rest if a not in args.overrides]
        if stray:
            subcommands(parser)["unlearn"].error(f"unrecognized arguments: {' '.join(stray)}")
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        load_plugins(argv)  # before the parsers: plug-in methods appear in --method and --help
    except (ValueError, SyntaxError) as exc:
        print(f"vkd-fast: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parse_args(argv, parser)
    if args.command == "unlearn":
        from ..engine import NonFiniteLossError

        try:
            return run_unlearn(args)
        except (ValueError, TypeError, KeyError, FileNotFoundError, NonFiniteLossError) as exc:
            print(f"vkd-fast unlearn: error: {exc}", file=sys.stderr)
            return 2
    runners = {"eval": run_eval, "relearn": run_relearn, "demo": run_demo_cmd, "export": run_export}
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
