"""VKD without the language model in memory, on a LLaVA-1.5-7B-shaped checkpoint.

1. ``write``: a checkpoint shaped like llava-hf/llava-1.5-7b-hf (CLIP ViT-L/14-336, the 2-layer
   projector, a 32-layer 4096-wide Llama, vocabulary 32064; the hub's tensor names and ~5 GB shards)
   with random bf16 weights, written tensor by tensor from the config -- never more than one tensor
   in memory. Cached under --cache-dir and reused (the key is the shape and this format's revision).
2. ``train``: ``vkd-fast unlearn CKPT --visual-only`` (one image per side per step, the default VKD
   options) -- only the vision tower and projector are read.
3. ``export``: ``vf.export_unlearned(CKPT, delta, OUT)``: the shard holding the projector / vision
   tensors rewritten, every other shard copied byte for byte (``--link``: hard-linked).
4. ``full`` (only where it fits in memory): the same ``vkd-fast unlearn`` with ``--full-model``;
   where it does not fit, its memory is computed from the parameter counts (fp32 weights of the whole
   model plus the visual run's own training state and activations).

Each phase runs in its own process and reports its peak resident memory (VmHWM), so no phase's
memory hides another's. ``--size small`` keeps the proportions (LLM ~20x the vision tower, 4 shards)
at a size that runs in about a minute (``make bench``).

    python benchmarks/bench_visual_only.py               # 7B-shaped (~14 GB on disk, ~10 min here)
    python benchmarks/bench_visual_only.py --size small  # the same at a small size

Results: benchmarks/results/visual_only.csv (one row per phase and run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402
from bench_unlearn_step import SIZES  # noqa: E402
from bench_unlearn_step import tokenizer as bench_tokenizer  # noqa: E402

GiB = 2**30
FORMAT = 1  # bump when the written checkpoint changes (invalidates the cache)
SHAPES = {
    # llava-hf/llava-1.5-7b-hf: vocabulary 32064 (image token 32000), ~5 GB shards
    "7b": dict(SIZES["7b"], image_token=32000, shard_bytes=5 * 10**9, steps=3),
    # the bench_unlearn_step "small" model (LLM ~20x the vision tower), in 4 shards
    "small": dict(SIZES["small"], image_token=1000, shard_bytes=40 * 10**6, steps=4),
}


def llava_config(size: str):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    s = SHAPES[size]
    text = dict(s["text"])
    return LlavaConfig(vision_config=CLIPVisionConfig(**s["vision"], projection_dim=768),
                       text_config=LlamaConfig(**text, max_position_embeddings=4096, rms_norm_eps=1e-5),
                       image_token_id=s["image_token"], vision_feature_layer=-2,
                       vision_feature_select_strategy="default", projector_hidden_act="gelu")


def hub_name(name: str) -> str:
    """The model's (transformers 5.x) parameter name -> the name on the hub's llava-1.5 checkpoint."""
    for prefix, hub in (("model.vision_tower.", "vision_tower.vision_model."),
                        ("model.multi_modal_projector.", "multi_modal_projector."),
                        ("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")):
        if name.startswith(prefix):
            return hub + name[len(prefix):]
    raise ValueError(f"unexpected LLaVA parameter {name!r}")


def cache_key(size: str) -> str:
    blob = json.dumps({"format": FORMAT, **{k: v for k, v in SHAPES[size].items() if k != "steps"}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _value(name: str, shape, g: torch.Generator) -> torch.Tensor:
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=torch.bfloat16)
    if len(shape) == 1 and name.endswith(".weight"):  # norms
        return torch.ones(shape, dtype=torch.bfloat16)
    return (torch.randn(shape, generator=g, dtype=torch.float32) * 0.02).to(torch.bfloat16)


def write_checkpoint(size: str, folder: Path) -> dict:
    """Write the checkpoint into ``folder`` (a fresh temporary folder), one tensor in memory at a time."""
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration

    config = llava_config(size)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    tensors = [(hub_name(n), tuple(p.shape)) for n, p in model.named_parameters()]
    del model
    shards, current, used = [], [], 0
    for name, shape in tensors:
        nbytes = 2 * int(torch.Size(shape).numel())
        if current and used + nbytes > SHAPES[size]["shard_bytes"]:
            shards.append(current)
            current, used = [], 0
        current.append((name, shape))
        used += nbytes
    shards.append(current)
    g = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    folder.mkdir(parents=True)
    for i, group in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {}, 0
        for name, shape in group:
            nbytes = 2 * int(torch.Size(shape).numel())
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = file
        header["__metadata__"] = {"format": "pt"}
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        with open(folder / file, "wb") as out:
            out.write(struct.pack("<Q", len(blob)) + blob)
            for name, shape in group:  # generated and written one tensor at a time
                out.write(_value(name, shape, g).view(torch.uint8).reshape(-1).numpy().tobytes())
        total += offset
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    config.save_pretrained(folder)
    bench_tokenizer(SHAPES[size]["image_token"]).save_pretrained(folder)
    side = SHAPES[size]["vision"]["image_size"]
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(folder)
    return {"shards": len(shards), "bytes": total, "tensors": len(tensors)}


def _images(folder: Path, n: int, side: int, base: float, seed: int) -> Path:
    from PIL import Image

    if folder.is_dir():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        pixels = (torch.rand(side, side, 3, generator=g) * 60 + base).clamp(0, 255).to(torch.uint8)
        Image.fromarray(pixels.numpy()).save(tmp / f"{i:03d}.png")
    os.replace(tmp, folder)
    return folder


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def param_counts(size: str) -> dict:
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(llava_config(size))
    count = {"vision": 0, "projector": 0, "llm": 0}
    for n, p in model.named_parameters():
        key = "vision" if "vision_tower" in n else "projector" if "multi_modal_projector" in n else "llm"
        count[key] += p.numel()
    return count


# ---- phases (each in its own process) ------------------------------------------------------------------


def checkpoint_folder(size: str, cache_dir) -> Path:
    """Where the checkpoint of ``size`` is cached."""
    return Path(cache_dir) / f"llava-1.5-{size}-shaped-{cache_key(size)}"


def write_cached(size: str, folder: Path) -> dict:
    """Write the checkpoint into a temporary folder beside ``folder``, then rename it into place (what an
    earlier, killed write left is removed first)."""
    t0 = time.perf_counter()
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    info = write_checkpoint(size, tmp)
    os.replace(tmp, folder)
    return {**info, "seconds": time.perf_counter() - t0}


def phase_write(args) -> dict:
    return {**write_cached(args.size, Path(args.ckpt)), "peak_rss": _status("VmHWM")}


def _unlearn(args, run: Path, load: str) -> dict:
    from vkd_fast.cli.main import main

    side = SHAPES[args.size]["vision"]["image_size"]
    data = Path(args.ckpt).parent / f"images-{side}"
    forget = _images(data / "forget", 2, side, 200.0, 0)
    retain = _images(data / "retain", 2, side, 20.0, 1)
    shutil.rmtree(run, ignore_errors=True)
    import transformers  # noqa: F401  (imported before the baseline: the breakdown is the run's own memory)

    import vkd_fast.adapters  # noqa: F401
    import vkd_fast.cli.commands  # noqa: F401

    base_rss = _status("VmRSS")
    t0 = time.perf_counter()
    code = main(["unlearn", args.ckpt, "--forget", str(forget), "--retain", str(retain), "--output-dir", str(run),
                 load, "--save", "delta", f"steps={args.steps}", "batch_size=1", "log_every=1", "lr=1e-4",
                 f"log_path={run / 'log.jsonl'}", "--person-per-image"])  # flat folders: a person per image
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"vkd-fast unlearn exited {code}")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r["step_seconds"] for r in log if "step_seconds" in r]
    result = json.loads((run / "result.json").read_text())
    return {"peak_rss": _status("VmHWM"), "rss_after_imports": base_rss, "seconds": seconds,
            "step_seconds": statistics.median(steps[1:] or steps), "first_step_seconds": steps[0],
            "trainable_params": result["trainable"].get("trainable"), "visual_only": result["visual_only"],
            "teacher_cache_bytes": (result.get("method_stats") or {}).get("bytes")}


def phase_train(args) -> dict:
    return _unlearn(args, Path(args.work) / "run", "--visual-only")


def phase_full(args) -> dict:
    return _unlearn(args, Path(args.work) / "run-full", "--full-model")


def phase_export(args) -> dict:
    import vkd_fast as vf

    out = Path(args.work) / "export"
    shutil.rmtree(out, ignore_errors=True)
    base_rss = _status("VmRSS")
    report = vf.export_unlearned(args.ckpt, Path(args.work) / "run" / "delta.safetensors", out, link=args.link)
    largest = max(p.stat().st_size for p in Path(args.ckpt).glob("*.safetensors"))
    row = {"peak_rss": _status("VmHWM"), "rss_before": base_rss, "seconds": report["seconds"],
           "bytes_written": report["bytes_written"], "rewritten": len(report["rewritten"]),
           "copied": len(report["copied"]), "linked": len(report["linked"]), "changed": len(report["changed"]),
           "largest_shard": largest}
    if not args.keep_export:
        shutil.rmtree(out)
    return row


PHASES = {"write": phase_write, "train": phase_train, "export": phase_export, "full": phase_full}


def run_phase(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--size", args.size, "--ckpt", str(args.ckpt),
           "--work", str(args.work), "--steps", str(args.steps)] + (["--link"] if args.link else []) + \
          (["--keep-export"] if args.keep_export else [])
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"phase {name} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--steps", type=int, help="VKD steps (default: 3 for 7b, 4 for small)")
    ap.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/vkd_fast/bench"),
                    help="where the checkpoint is written once and reused")
    ap.add_argument("--link", action="store_true", help="export: hard-link the unchanged shards instead of copying")
    ap.add_argument("--keep-export", action="store_true", help="keep the exported folder (deleted by default)")
    ap.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.steps = args.steps or SHAPES[args.size]["steps"]
    if args.phase:
        torch.manual_seed(0)
        print("RESULT " + json.dumps(PHASES[args.phase](args)), flush=True)
        return 0

    root = Path(args.cache_dir)
    args.ckpt = checkpoint_folder(args.size, root)
    args.work = root / f"work-{args.size}"
    args.work.mkdir(parents=True, exist_ok=True)
    counts = param_counts(args.size)
    total = sum(counts.values())
    print(f"{args.size}: vision {counts['vision'] / 1e6:.1f} M, projector {counts['projector'] / 1e6:.1f} M, "
          f"language model {counts['llm'] / 1e6:.1f} M parameters ({counts['llm'] / counts['vision']:.1f}x the "
          "vision tower)", flush=True)
    rows = []
    if args.ckpt.is_dir():
        print(f"checkpoint: reusing {args.ckpt}", flush=True)
    else:
        w = run_phase("write", args)
        print(f"checkpoint: wrote {w['bytes'] / GiB:.2f} GiB in {w['shards']} shards in {w['seconds']:.0f} s "
              f"(writer peak RSS {H.fmt_bytes(w.get('peak_rss'))})", flush=True)
    t = run_phase("train", args)
    vp = counts["vision"] + counts["projector"]
    trained = t["trainable_params"] or vp
    state = {"weights_fp32": 4 * vp, "grads": 4 * trained, "adam": 8 * trained}
    rest = t["peak_rss"] - t["rss_after_imports"] - sum(state.values())
    print(f"visual-only VKD, {args.steps} steps of 1+1 images: peak RSS {H.fmt_bytes(t['peak_rss'])} = imports "
          f"{H.fmt_bytes(t['rss_after_imports'])} + V+P fp32 weights {H.fmt_bytes(state['weights_fp32'])} + grads "
          f"{H.fmt_bytes(state['grads'])} + AdamW state {H.fmt_bytes(state['adam'])} + activations, teacher cache and "
          f"allocator and lazily imported libraries {H.fmt_bytes(rest)}; {t['step_seconds']:.2f} s/step "
          f"(first {t['first_step_seconds']:.2f} s), "
          f"{t['seconds']:.0f} s in all", flush=True)
    e = run_phase("export", args)
    mode = "link" if args.link else "copy"
    print(f"export ({mode}): {e['seconds']:.1f} s, {e['bytes_written'] / GiB:.2f} GiB written "
          f"({e['rewritten']} shard rewritten, {e['copied']} copied, {e['linked']} linked), peak RSS "
          f"{H.fmt_bytes(e['peak_rss'])} vs largest shard {H.fmt_bytes(e['largest_shard'])}", flush=True)
    # the full-model path: measured where it fits, else its fp32 weights on top of the visual run
    full_estimate = t["peak_rss"] + 4 * counts["llm"]
    from vkd_fast.utils.memory import available_bytes

    if full_estimate < 0.8 * (available_bytes("cpu") or 0):
        f = run_phase("full", args)
        full, how = f["peak_rss"], "measured"
    else:
        f, full, how = None, full_estimate, "computed: the visual run + the LLM's fp32 weights"
    print(f"full-model path: peak RSS {H.fmt_bytes(full)} ({how}); visual-only / full = {t['peak_rss'] / full:.3f}",
          flush=True)
    bars = {"train_peak_le_10GiB": t["peak_rss"] <= 10 * GiB,
            "export_peak_le_largest_shard_plus_2GiB": e["peak_rss"] <= e["largest_shard"] + 2 * GiB}
    env = H.environment()
    common = {**env, "size": args.size, "vision_params": counts["vision"], "projector_params": counts["projector"],
              "llm_params": counts["llm"], "total_params": total, "steps": args.steps}
    rows.append({**common, "phase": "train_visual_only", "peak_rss": t["peak_rss"],
                 "rss_after_imports": t["rss_after_imports"], "step_seconds": t["step_seconds"],
                 "seconds": t["seconds"], "bar_ok": bars["train_peak_le_10GiB"]})
    rows.append({**common, "phase": f"export_{'link' if args.link else 'copy'}", "peak_rss": e["peak_rss"],
                 "seconds": e["seconds"], "bytes_written": e["bytes_written"], "largest_shard": e["largest_shard"],
                 "bar_ok": bars["export_peak_le_largest_shard_plus_2GiB"]})
    rows.append({**common, "phase": "train_full_model", "peak_rss": full, "how": how,
                 **({"step_seconds": f["step_seconds"], "seconds": f["seconds"]} if f else {})})
    path = H.append_rows("visual_only", rows)
    if args.size == "7b":
        print(f"bars: training peak <= 10 GiB: {'PASS' if bars['train_peak_le_10GiB'] else 'FAIL'}; export peak <= "
              f"largest shard + 2 GiB: {'PASS' if bars['export_peak_le_largest_shard_plus_2GiB'] else 'FAIL'}")
    print(f"appended {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
