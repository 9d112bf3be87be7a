"""``vkd-fast`` command line: the parsers and the dispatch. Subcommands: ``doctor``, ``unlearn``,
``eval``, ``relearn``, ``demo``."""

from __future__ import annotations

import argparse
import json
import sys

from .commands import run_demo_cmd, run_eval, run_export, run_relearn, run_unlearn
from .doctor import _print_report, doctor_report
from .options import load_plugins, options_help


def _world_args(p) -> None:
    p.add_argument("--world-seed", type=int, default=0, help="toy world: seed (default 0)")
    p.add_argument("--identities", type=int, default=24, help="toy world: number of people (default 24)")
    p.add_argument("--forget-fraction", type=float, default=0.1,
                   help="toy world: share of the people forgotten (default 0.1, at least 2)")
    p.add_argument("--build-max-steps", type=int, default=600,
                   help="toy models: the training schedule's length for up to 24 people (default 600; longer for "
                        "more people; a model below its bar at the end goes on up to twice as long)")
    p.add_argument("--build-lr", type=float, default=2e-3, help="toy models: peak learning rate (default 2e-3)")


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


def _eval_args(p, protocols: bool = False) -> None:
    data = ("toy", "mllmu", "clear") if protocols else ("toy", "mllmu")
    p.add_argument("--data", choices=data, default="toy", help="benchmark (default: the toy world)")
    p.add_argument("--root", help="--data mllmu: the local MLLMU-Bench folder (forget_5/, retain_95/, Test_Set/, "
                                  "Full_Set/, Retain_Set/)" + ("; --data clear: the local CLEAR folder (one folder "
                                                               "per configuration)" if protocols else ""))
    p.add_argument("--forget-split", help="forget split folder (default: forget_5 for mllmu"
                                          + (", forget10_perturbed for clear)" if protocols else ")"))
    p.add_argument("--retain-split", help="retain split folder (default: retain_95 for mllmu"
                                          + (", retain_perturbed for clear)" if protocols else ")"))
    p.add_argument("--limit", type=int, help="--data mllmu: rows per file (quick runs)"
                                             + ("; --data clear: rows per configuration (default 300, as CLEAR)"
                                                if protocols else ""))
    if protocols:
        p.add_argument("--protocol", choices=("likelihood", "mllmu", "clear"),
                       help="scoring protocol (docs/method.md §4.3): likelihood = option log-likelihood (default; "
                            "the toy world's only one); mllmu = MLLMU-Bench's eval.py (generated letter, fill-in-the-"
                            "blank, ROUGE/BLEU; --data mllmu); clear = CLEAR's (probabilities, truth ratio, ROUGE-L "
                            "recall, forget quality; --data clear, its default)")
        p.add_argument("--seed", type=int, default=0,
                       help="--protocol mllmu/clear: the seed of every random draw (demonstration people, test poses, "
                            "caption questions); recorded in the output")
        p.add_argument("--shots", type=int, choices=(0, 1, 2),
                       help="--protocol mllmu: demonstration people for classification and fill-in-the-blank "
                            "(default: the original's 1 and 2)")
        p.add_argument("--audit", help="--protocol mllmu/clear: the per-question JSON-lines file (default: beside "
                                       "--output, <output stem>.questions.jsonl)")
        p.add_argument("--reference", help="--protocol clear: a gold model's CLEAR result (--output of this command) "
                                           "for the forget-quality KS test")
        p.add_argument("--generation-image", action="store_true",
                       help="--protocol clear: show the image to the ROUGE generation (CLEAR's own code does not; "
                            "a deviation, recorded in the output)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory's, or the toy world's)")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per evaluation forward")
    p.add_argument("--max-new-tokens", type=int, default=32,
                   help="--data mllmu, likelihood protocol: generation length of free-form answers (ROUGE-L) and "
                        "cloze fills; 0 = skip them (the benchmark protocols use their own lengths: 50 mllmu, 300 "
                        "clear)")
    p.add_argument("--output", help="write the results as JSON (with the environment) to this file")
    _world_args(p)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        load_plugins(argv)  # before the parsers: plug-in methods appear in --method and --help
    except (ValueError, SyntaxError) as exc:
        print(f"vkd-fast: error: {exc}", file=sys.stderr)
        return 2
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
    p_un.add_argument("model", help="local model directory (save_pretrained layout), or toy:vanilla; nothing is "
                                    "downloaded")
    data_help = ("a folder of images with one subfolder per person (FOLDER/<person>/<image>), a flat folder of "
                 "images (no person; see --person-per-image), a .jsonl of "
                 "{image: path, identity, question, answer} rows (image paths relative to the file; identity names "
                 "the person pictured), toy:forget / toy:retain, mllmu:PATH (MLLMU-Bench rows with metadata) or "
                 "clear:PATH")
    p_un.add_argument("--forget", required=True, help=f"forget data: {data_help}")
    p_un.add_argument("--retain", required=True, help=f"retain data: {data_help}")
    p_un.add_argument("--person-per-image", action="store_true",
                      help="count every image without a person (identity / name / id) as a person of its own; "
                           "methods that group images by person (VKD's default retain_person target) refuse such "
                           "data otherwise")
    p_un.add_argument("--tokenizer", help="tokenizer directory (default: the model directory's, or the toy world's)")
    _world_args(p_un)
    p_un.add_argument("--output-dir", required=True, help="run folder (new, or the same run with --resume)")
    p_un.add_argument("--config", help="YAML file of options (see below)")
    p_un.add_argument("--method", default="vkd", choices=available_methods(),
                      help="unlearning method (default vkd); the output-level baselines need .jsonl data with "
                           "question and answer, and a tokenizer in the model directory")
    p_un.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                      help="import a module (dotted name or .py file) that registers methods (repeatable; also "
                           "VKD_FAST_PLUGINS=a,b)")
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
    p_ev.add_argument("model", help="toy:vanilla, toy:gold or a local model directory")
    _eval_args(p_ev, protocols=True)
    _device_args(p_ev, "evaluation")
    _dtype_args(p_ev)
    p_rl = sub.add_parser("relearn", help="relearning attack on an unlearned model (llm and visual modes)",
                          description="Fine-tune the model on image questions about part of the forget knowledge "
                                      "(some attributes, or a fraction of the pairs), then measure forget VQA on the "
                                      "rest; recovery = (after relearn - after unlearn) / (before - after unlearn).")
    p_rl.add_argument("model", help="the unlearned model: a local model directory (or toy:gold)")
    p_rl.add_argument("--before", help="the model before unlearning (default for --data toy: toy:vanilla)")
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
    _eval_args(p_rl)
    _device_args(p_rl, "the attack and its evaluation")
    _dtype_args(p_rl)
    p_dm = sub.add_parser("demo", help="the toy-world demo: vanilla and gold, VKD and every baseline, all metrics, "
                                       "relearning attack, table + JSON + Markdown + PNG",
                          description="Builds (first run, cached) or loads the toy world's vanilla and gold tiny "
                                      "LLaVA models, unlearns the forget people with each method, evaluates, attacks "
                                      "and reports. Nothing is downloaded.")
    p_dm.add_argument("--output-dir", default="demo_output", help="where report.json / .md / .png go")
    p_dm.add_argument("--config", default="demo", metavar="NAME_OR_PATH",
                      help="the demo profile -- which methods run, in order, and their settings: a shipped name "
                           "(default demo: vkd_fast/configs/demo.yaml) or a YAML file of that shape")
    p_dm.add_argument("--methods", help="comma-separated subset of the profile's methods (default: all of them)")
    p_dm.add_argument("--relearn-steps", type=int, default=40, help="the default attack's fine-tuning steps")
    p_dm.add_argument("--attack-seeds", default="0,1,2",
                      help="seeds of the default attack: the relearn columns are the mean over them (default 0,1,2)")
    p_dm.add_argument("--no-grid", action="store_true",
                      help="skip the attack grid whose worst case is shown for VKD and gold (faster)")
    p_dm.add_argument("--rebuild", action="store_true", help="retrain the vanilla and gold models")
    p_dm.add_argument("--strict", action="store_true", help="exit 1 when a VKD check fails")
    _device_args(p_dm, "unlearning, evaluation and the attacks (not the toy models' build, always on the CPU)")
    _world_args(p_dm)
    args, rest = parser.parse_known_args(argv)
    if args.command == "unlearn":
        # option overrides (key=value) may stand anywhere after the subcommand; they win over --config
        args.overrides = [a for a in rest if "=" in a and not a.startswith("-")]
        stray = [a for a in rest if a not in args.overrides]
        if stray:
            p_un.error(f"unrecognized arguments: {' '.join(stray)}")
        from ..engine import NonFiniteLossError

        try:
            return run_unlearn(args)
        except (ValueError, TypeError, KeyError, FileNotFoundError, NonFiniteLossError) as exc:
            print(f"vkd-fast unlearn: error: {exc}", file=sys.stderr)
            return 2
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
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
