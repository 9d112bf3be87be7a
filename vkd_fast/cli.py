"""``vkd-fast`` command line. Subcommands: ``doctor``, ``unlearn``."""

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


def load_items(spec: str) -> list[dict]:
    """A dataset spec -> items: a folder of images (sorted by name), or a ``.jsonl`` file of objects
    with an ``image`` path (relative to the file) and optional ``question`` / ``answer``."""
    from pathlib import Path

    from PIL import Image

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
    raise ValueError(f"dataset {spec!r} must be a folder of images or a .jsonl file of {{\"image\": path, ...}} rows")


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
    forget, retain = load_items(args.forget), load_items(args.retain)
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(args.model, local_files_only=True)
    tokenizer = None
    if args.method != "vkd":  # output-level methods score answer tokens
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
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
    tmp = out / ".result.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "result.json")
    last = summary["last"] or {}
    print(f"unlearned in {summary['wall_seconds']:.1f} s: loss {last.get('loss', float('nan')):.4g} "
          f"(retain {last.get('loss_retain', float('nan')):.4g}, forget {last.get('loss_forget', float('nan')):.4g}); "
          f"wrote {out / 'result.json'}")
    return 0


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
    p_un.add_argument("model", help="local model directory (save_pretrained layout); nothing is downloaded")
    p_un.add_argument("--forget", required=True, help="forget images: a folder of images or a .jsonl of {image: path}")
    p_un.add_argument("--retain", required=True, help="retain images: a folder of images or a .jsonl of {image: path}")
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
