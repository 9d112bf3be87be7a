"""Benchmark of one unlearning step: vkd_fast VKD against the naive VKD and the output-level baselines.

Configurations (each in a fresh process, so peak memory is its own):
  vkd          vkd_fast VKD, projector tap (the projector's output, as before the default moved to
               vision:feature, which skips the projector), vision+projector, cached teacher, fused
               loss; the LLM never runs
  naive_vkd    what a user would write: a second, live teacher model, both models run a full forward
               with output_hidden_states every step, an eager MSE at the image-token positions
  grad_diff    GradDiff updating the language model (full), and grad_diff_lora (LoRA r=8)
  npo          NPO updating the language model (full), and npo_lora
  vkd_llm1/4   VKD with the llm:1 / llm:4 tap (the frozen LLM's first j layers run)
Model: a small LLaVA that keeps real proportions (the LLM far larger than the vision tower; printed
with the parameter and per-step FLOP split); ``--size 7b`` builds LLaVA-1.5-7B-sized configs for a
GPU machine. Per configuration: median and p10/p90 step time after warm-up (from the engine's own
step timer), peak resident memory (CUDA: max allocated), and the ratios against naive VKD and GradDiff.

    python benchmarks/bench_unlearn_step.py            # all configurations
    python benchmarks/bench_unlearn_step.py --quick    # vkd, naive_vkd, grad_diff (the targets)
    python benchmarks/bench_unlearn_step.py --sweep    # scaling in tokens and batch; cache memory with spill

Results are appended to benchmarks/results/unlearn_step.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

IMAGE_TOKEN = 1000
SIZES = {
    # vision: CLIP-like ViT; text: Llama-like. "small" runs on a 2-core CPU; the LLM is ~35x the ViT.
    "small": {"vision": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                             image_size=112, patch_size=14),
              "text": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
                           num_key_value_heads=12, vocab_size=1024)},
    "7b": {"vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                          image_size=336, patch_size=14),
           "text": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=32, vocab_size=32064)},
}
CONFIGS = ["vkd", "naive_vkd", "grad_diff", "grad_diff_lora", "npo", "npo_lora", "vkd_llm1", "vkd_llm4"]
QUICK = ["vkd", "naive_vkd", "grad_diff"]


def build(size: str, image_size: int | None = None):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    s = SIZES[size]
    vision = {**s["vision"], **({"image_size": image_size} if image_size else {})}
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**vision, projection_dim=vision["hidden_size"]),
                      text_config=LlamaConfig(**s["text"], max_position_embeddings=2048), image_token_id=IMAGE_TOKEN,
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration(cfg).eval()


def tokenizer(image_token: int = IMAGE_TOKEN):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "USER:", "ASSISTANT:", "what", "is", "the", "job", "of", "this", "person", "?", "baker", "pilot"]
    vocab = {w: i for i, w in enumerate(words)} | {"<image>": image_token}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", additional_special_tokens=["<image>"])


def items(n: int, side: int, base: float, answer: str, seed: int):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):  # each image a person of its own (VKD's default target groups images by person)
        pixels = (torch.rand(side, side, 3, generator=g) * 60 + base).clamp(0, 255).to(torch.uint8)
        out.append({"image": Image.fromarray(pixels.numpy()), "question": "what is the job of this person ?",
                    "answer": answer, "identity": i})
    return out


def param_split(model) -> dict:
    from vkd_fast.adapters import get_adapter

    ad = get_adapter(model)
    count = lambda mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
    vision, proj = count([ad.vision_tower]), count(ad.projector_modules)
    llm = count([ad.language_model, model.lm_head])
    return {"vision_params": vision, "projector_params": proj, "llm_params": llm, "llm_over_vision": llm / vision}


def flop_split(name: str, split: dict, batch: int, size: str, seq_len: int) -> dict:
    """Estimated FLOPs of one step, split vision (V+P) / LLM: a forward costs ~2 x params x tokens, a
    backward ~2x the forward where weights train (~1x where only activations' gradients pass)."""
    t_img = seq_len - 12 + 1  # tokens per image in the ViT (the patches and CLS)
    vp, llm = split["vision_params"] + split["projector_params"], split["llm_params"]
    depth = SIZES[size]["text"]["num_hidden_layers"]
    both, forget_only = 2 * batch, batch
    if name == "vkd":
        v, lf = 6 * vp * t_img * both, 0
    elif name.startswith("vkd_llm"):
        j = int(name[len("vkd_llm"):])
        v, lf = 6 * vp * t_img * both, 4 * llm * (j / depth) * seq_len * both
    elif name == "naive_vkd":  # teacher forward + student forward (+ backward of V, P): full LLM twice
        v, lf = 8 * vp * t_img * both, 4 * llm * seq_len * both
    else:
        images = forget_only if name.startswith("npo") else both
        llm_factor = 4 if name.endswith("_lora") else 6
        v, lf = 2 * vp * t_img * images, llm_factor * llm * seq_len * images
    return {"gflop_vision": v / 1e9, "gflop_llm": lf / 1e9}


def naive_vkd_steps(model, forget, retain, steps: int, batch: int) -> list[float]:
    """The naive VKD: a live teacher copy, full forwards with hidden states, an eager MSE."""
    import copy

    from vkd_fast.adapters import get_adapter

    ad = get_adapter(model)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    ad.set_trainable("vision+projector")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    tok = tokenizer()
    n = ad.num_image_tokens(pixel_values=torch.zeros(1, 3, 1, 1))[0]
    ids = tok(ad.prompt(tok, "what is the job of this person ?", n_image_tokens=n), return_tensors="pt").input_ids
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fi = torch.randint(0, len(forget), (batch,), generator=g).tolist()
        ri = torch.randint(0, len(retain), (batch,), generator=g).tolist()
        images = [forget[i]["image"] for i in fi] + [retain[i]["image"] for i in ri]
        inputs = ad.preprocess(images)
        input_ids = ids.expand(len(images), -1)
        mask = input_ids == IMAGE_TOKEN
        with torch.no_grad():
            t_hidden = teacher(input_ids=input_ids, output_hidden_states=True, **inputs).hidden_states[0][mask]
        s_hidden = model(input_ids=input_ids, output_hidden_states=True, **inputs).hidden_states[0][mask]
        rows = mask[:batch].sum()
        retain_loss = ((s_hidden[rows:] - t_hidden[rows:]) ** 2).mean()
        anchor = t_hidden[rows:].reshape(batch, -1, t_hidden.shape[-1]).mean(0).repeat(batch, 1)
        forget_loss = ((s_hidden[:rows] - anchor) ** 2).mean()
        (retain_loss + forget_loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def child(name: str, size: str, steps: int, warmup: int, batch: int, image_size: int | None = None) -> dict:
    import vkd_fast as vf

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    model = build(size, image_size)
    split = param_split(model)
    side = image_size or SIZES[size]["vision"]["image_size"]
    forget, retain = items(8, side, 200.0, "baker", 0), items(24, side, 20.0, "pilot", 1)
    total = warmup + steps
    if name == "naive_vkd":
        times = naive_vkd_steps(model, forget, retain, total, batch)
    else:
        kw, cfg, options = {}, {"steps": total, "batch_size": batch, "lr": 1e-4, "log_every": total}, {}
        method = "vkd"
        if name == "vkd":
            options["tap"] = "projector"
        if name.startswith("vkd_llm"):
            options["tap"] = f"llm:{name[len('vkd_llm'):]}"
            kw["tokenizer"] = tokenizer()
        elif name != "vkd":
            method = name.split("_lora")[0]
            kw["tokenizer"] = tokenizer()
            if name.endswith("_lora"):
                options["lora"] = {"r": 8, "lora_alpha": 16}
        result = vf.unlearn(model, forget, retain, method=method, config=vf.UnlearnConfig(**cfg), options=options,
                            **kw)
        times = [r["step_seconds"] for r in result.history]
    timed = sorted(t * 1e3 for t in times[warmup:])
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    q = statistics.quantiles(timed, n=10) if len(timed) > 1 else [timed[0]] * 9
    n_img = (side // SIZES[size]["vision"]["patch_size"]) ** 2
    seq_len = n_img + 12  # the prompt: image tokens plus the question and answer words
    return {"config": name, "median_ms": statistics.median(timed), "p10_ms": q[0], "p90_ms": q[-1],
            "steps": len(timed), "peak_bytes": peak, **split, **flop_split(name, split, batch, size, seq_len)}


def _run_child(name, args, batch, image_size=None) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--size", args.size, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(batch)]
    if image_size:
        cmd += ["--image-size", str(image_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def sweep(args) -> int:
    """Linear scaling of the VKD step in visual tokens and batch size, and host memory of the cache with
    and without spill (spilled entries live in the page cache, not in the process's anonymous memory)."""
    env = H.environment()
    rows = []
    print("VKD step vs visual tokens per image (batch 4 per side):")
    for side in (56, 112, 168):
        r = _run_child("vkd", args, 4, side)
        tokens = (side // 14) ** 2
        rows.append({"bench": "unlearn_step_sweep", "axis": "tokens", "tokens": tokens, "batch": 4, **r, **env})
        print(f"  {tokens:4d} tokens: {r['median_ms']:8.1f} ms, {r['median_ms'] / tokens:.3f} ms per token")
    print("VKD step vs batch size (64 tokens per image):")
    for batch in (2, 4, 8):
        r = _run_child("vkd", args, batch)
        rows.append({"bench": "unlearn_step_sweep", "axis": "batch", "tokens": 64, "batch": batch, **r, **env})
        print(f"  batch {batch}: {r['median_ms']:8.1f} ms, {r['median_ms'] / batch:.1f} ms per image pair")
    import tempfile

    from vkd_fast import ActivationCache

    print("teacher cache: anonymous memory held for 256 MiB of features (576 x 1024 bf16 per image):")
    feats = [torch.randn(576, 1024).to(torch.bfloat16) for _ in range(8)]
    for label, kw in (("in memory", {}), ("spilled", {"capacity_bytes": 0})):
        with tempfile.TemporaryDirectory() as spill:
            before = _rss_anon()
            cache = ActivationCache(torch.bfloat16, spill_dir=spill if kw else None, **kw)
            for start in range(0, 224, 8):
                cache.put_batch(range(start, start + 8), feats)
            held = _rss_anon() - before
            rows.append({"bench": "cache_memory", "mode": label, "entries": len(cache),
                         "feature_bytes": cache.stats()["bytes"], "anon_bytes": held, **env})
            print(f"  {label:<9}: {H.fmt_bytes(cache.stats()['bytes'])} of features, "
                  f"{H.fmt_bytes(held)} of anonymous process memory")
            del cache
    path = H.append_rows("unlearn_step_sweep", rows)
    print(f"wrote {len(rows)} rows to {path}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only vkd, naive_vkd and grad_diff")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4, help="images per side per step")
    ap.add_argument("--sweep", action="store_true",
                    help="scaling: VKD step vs visual tokens per image and vs batch size; cache memory with spill")
    ap.add_argument("--image-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.size, args.steps, args.warmup, args.batch, args.image_size)))
        return 0
    if args.sweep:
        return sweep(args)
    env = H.environment()
    print(f"environment: {env}")
    rows, results = [], {}
    for name in QUICK if args.quick else CONFIGS:
        r = _run_child(name, args, args.batch)
        results[name] = r
        rows.append({"bench": "unlearn_step", "size": args.size, "batch": args.batch, **r, **env})
        print(f"{name:>15}: {r['median_ms']:9.1f} ms [{r['p10_ms']:.1f}, {r['p90_ms']:.1f}]  "
              f"peak {H.fmt_bytes(r['peak_bytes']):>10}  ~{r['gflop_vision']:.1f} GFLOP vision + "
              f"{r['gflop_llm']:.1f} GFLOP LLM")
    split = next(iter(results.values()))
    print(f"\nmodel ({args.size}): vision {split['vision_params'] / 1e6:.1f}M, projector "
          f"{split['projector_params'] / 1e6:.2f}M, LLM {split['llm_params'] / 1e6:.1f}M "
          f"(LLM = {split['llm_over_vision']:.0f}x the vision tower)")
    path = H.append_rows("unlearn_step", rows)
    print(f"wrote {len(rows)} rows to {path}")
    v, n, g = results["vkd"], results["naive_vkd"], results["grad_diff"]
    checks = [("vkd vs naive VKD (speed)", n["median_ms"] / v["median_ms"], 3.0, ">="),
              ("vkd vs full GradDiff (speed)", g["median_ms"] / v["median_ms"], 4.0, ">="),
              ("vkd peak memory / naive VKD's", v["peak_bytes"] / n["peak_bytes"], 0.6, "<=")]
    print("\ntargets (same run, this machine):")
    ok = True
    for label, value, target, op in checks:
        met = value >= target if op == ">=" else value <= target
        ok &= met
        print(f"  {label:<32} {value:6.2f}x  (target {op} {target})  {'MET' if met else 'MISSED'}")
    print("  all targets met" if ok else "  SOME TARGETS MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
