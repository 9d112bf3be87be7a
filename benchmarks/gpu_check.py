"""The GPU check: one script to run on a CUDA machine (under 8 minutes) that writes one JSON.

1. ``loss``: the Triton feature-distillation loss against the pure-torch reference (fp32, bf16) at
   the benchmark shape (N=9216 rows, D=1024): loss and gradient differences, the full step's median
   time, and the bandwidth it achieves (it reads student and target and writes the gradient) as a
   share of a device copy measured in the same run.
2. ``cache``: the activation cache's gather into device memory from pinned host memory, and how much
   of a prefetch's copy hides behind compute of about the same length (16 images x 576 tokens x 1024,
   bf16, per batch).
3. ``vkd_step``: VKD on the LLaVA-1.5-7B-shaped checkpoint of bench_visual_only.py (written on first
   use, cached), loaded with ``vf.load_visual_model`` (no language model in memory), trained with
   bf16 autocast: peak CUDA memory and median step time.

4. ``recipe``: the paper's recipe as shipped (vkd_fast/configs/mllmu_llava15_vkd.sh: unlearn, export, MLLMU-Bench
   protocol evaluation of the unlearned and the vanilla model) on the GPU at tiny size -- a tiny LLaVA
   saved in the hub's folder layout and MLLMU-Bench-format folders (tests/_recipe_fixture.py), only the
   sizes changed -- each command's exit code and wall time, the device each said it ran on, and the
   scores. It needs pyarrow, rouge-score and nltk; where they are missing it says so and is skipped.

5. ``roofline``: the fused kernel alone (no autograd, no host overhead in its GPU time) as a share of the
   copy bandwidth, and the training step -- plain ``loss.backward()`` and a scaled loss -- against the
   eager reference, at N=9216, D=1024 and at N=65536, D=4096, fp32 and bf16.

The checks run in the order loss, roofline, cache, recipe, vkd_step (``--checks`` picks and orders them): the
7B-shaped checkpoint's first write is the longest step, so it comes last. A check that raises is
reported in the JSON (its error and traceback) and the others still run; the JSON is rewritten after
each check, so what finished is on disk even when the run is cut short.

On an image that has torch, transformers (>= 5.17), triton, peft, pybind11 and ninja but reaches no
package index::

    pip install --no-deps --no-build-isolation -e . && python benchmarks/gpu_check.py --out gpu_check.json

Without CUDA, ``--dry-run`` runs the same code paths on tiny CPU shapes (the Triton kernel under
the interpreter, the cache unpinned, the small-shaped checkpoint), so the script is known to start
before a GPU is rented; the JSON then says ``"dry_run": true`` and its timings mean nothing.

    python benchmarks/gpu_check.py --out gpu_check.json          # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/gc.json  # anywhere (tested)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

DRY = "--dry-run" in sys.argv
if DRY:  # before anything imports triton: its kernels run on CPU tensors under the interpreter
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

SHAPES = {  # (real, dry run)
    "loss": ({"n": 9216, "d": 1024}, {"n": 64, "d": 32}),
    "cache": ({"images": 64, "batch": 16, "tokens": 576, "d": 1024}, {"images": 8, "batch": 2, "tokens": 16, "d": 32}),
    "vkd": ({"size": "7b", "steps": 8, "batch": 4}, {"size": "small", "steps": 2, "batch": 1}),
    "roofline": ([(9216, 1024), (65536, 4096)], [(64, 32)]),
}


def check_loss(device, dry: bool) -> list[dict]:
    from bench_feature_distill import copy_bandwidth

    import vkd_fast as vf

    shape = SHAPES["loss"][dry]
    n, d = shape["n"], shape["d"]
    bandwidth = copy_bandwidth(device, n * d * 4)
    rows = []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        g = torch.Generator().manual_seed(0)
        s0 = torch.randn(n, d, generator=g).to(device=device, dtype=dtype)
        t = torch.randn(n, d, generator=g).to(device=device, dtype=dtype)
        results = {}
        for backend in ("triton", "reference"):
            s = s0.clone().requires_grad_()
            loss = vf.feature_distill_loss(s, t, backend=backend)
            loss.backward()
            results[backend] = (loss.detach().float(), s.grad.float())
        (lt, gt), (lr, gr) = results["triton"], results["reference"]
        tol = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-5}
        close = bool(torch.allclose(lt, lr, **tol) and torch.allclose(gt, gr, **tol))
        s = s0.clone().requires_grad_()

        def step(s=s, t=t):
            vf.feature_distill_loss(s, t, backend="triton").backward()
            s.grad = None

        timing = H.time_fn(step, device=device, warmup=2 if dry else 5, reps=3 if dry else 30)
        moved = 3 * n * d * s0.element_size()  # read student and target, write the gradient
        gbps = moved / (timing["median_ms"] * 1e-3) / 1e9
        rows.append({"dtype": name, "n": n, "d": d, "matches_reference": close,
                     "loss_abs_diff": float((lt - lr).abs().max()), "grad_max_abs_diff": float((gt - gr).abs().max()),
                     **timing, "GBps": gbps, "copy_GBps": bandwidth, "share_of_copy": gbps / bandwidth})
    return rows


def check_roofline(device, dry: bool) -> list[dict]:
    """The fused kernel alone against the device's copy bandwidth, and the whole training step (forward +
    backward through ``vf.feature_distill_loss``, with ``loss.backward()`` and with a scaled loss, which
    makes the backward scale the gradient buffer) against the eager reference, at the benchmark shape
    and at one 16x larger. Timed with ``triton.testing.do_bench`` on CUDA (GPU time of back-to-back
    calls), with the harness's synchronising timer on the dry run."""
    from bench_feature_distill import copy_bandwidth

    if dry:
        def bench(fn):
            return H.time_fn(fn, device=device, warmup=1, reps=3)["median_ms"]
    else:
        from triton.testing import do_bench

        def bench(fn):
            return do_bench(fn, warmup=10, rep=100)

    rows = []
    for n, d in SHAPES["roofline"][dry]:
        bandwidth = copy_bandwidth(device, n * d * 4)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            rows.append({"n": n, "d": d, "dtype": name, "copy_GBps": bandwidth,
                         **_roofline_case(n, d, dtype, device, bench, bandwidth)})
    return rows


def _roofline_case(n: int, d: int, dtype, device, bench, bandwidth: float) -> dict:
    import vkd_fast as vf
    from vkd_fast.ops.triton_launch import feature_distill_fwd_triton

    g = torch.Generator().manual_seed(0)
    s = torch.randn(n, d, generator=g).to(device=device, dtype=dtype).requires_grad_()
    t = torch.randn(n, d, generator=g).to(device=device, dtype=dtype)
    moved = 3 * n * d * s.element_size()  # read student and target, write the gradient
    row = {"kernel_ms": bench(lambda: feature_distill_fwd_triton(s, t, None, None, None, "mse", "mean"))}
    for key, backend, factor in (("step_ms", "triton", None), ("scaled_step_ms", "triton", 0.5),
                                 ("eager_step_ms", "reference", None)):
        def step(backend=backend, factor=factor):
            loss = vf.feature_distill_loss(s, t, backend=backend)
            (loss if factor is None else loss * factor).backward()
            s.grad = None

        row[key] = bench(step)
    row["kernel_share_of_copy"] = moved / (row["kernel_ms"] * 1e-3) / 1e9 / bandwidth
    row["step_vs_eager"] = row["eager_step_ms"] / row["step_ms"]
    return row


def check_cache(device, dry: bool) -> dict:
    from bench_cache import prefetch_overlap

    from vkd_fast import ActivationCache

    shape = SHAPES["cache"][dry]
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(shape["tokens"], shape["d"], generator=g).to(torch.bfloat16) for _ in range(shape["images"])]
    cache = ActivationCache(torch.bfloat16)  # pinned on a CUDA machine, pageable elsewhere
    cache.put_batch(range(len(feats)), feats)
    perm = torch.randperm(shape["images"], generator=g).tolist()
    batches = [perm[:shape["batch"]], perm[shape["batch"]:2 * shape["batch"]]]
    reps = 3 if dry else 20
    nbytes = shape["batch"] * shape["tokens"] * shape["d"] * 2
    o = prefetch_overlap(cache, batches, device, reps, matmul_side=64 if dry else 4096)
    got, _ = o.pop("result")
    expected = torch.cat([feats[k] for k in batches[1]]).to(device)
    out = {"pinned": cache.pinned, "backend": cache.backend, "batch_bytes": nbytes, **o,
           "gather_GBps": nbytes / (o["gather_ms"] * 1e-3) / 1e9,
           "prefetch_matches": bool(torch.equal(got.reshape(expected.shape), expected))}
    cache.close()
    return out


def check_vkd_step(device, dry: bool, cache_dir: Path) -> dict:
    import bench_visual_only as B

    import vkd_fast as vf
    from vkd_fast.utils import measure

    shape = SHAPES["vkd"][dry]
    size = shape["size"]
    ckpt = B.checkpoint_folder(size, cache_dir)
    wrote = None if ckpt.is_dir() else B.write_cached(size, ckpt)["seconds"]
    t0 = time.perf_counter()
    model = vf.load_visual_model(ckpt)
    load_s = time.perf_counter() - t0
    side = B.SHAPES[size]["vision"]["image_size"]
    from PIL import Image

    g = torch.Generator().manual_seed(0)

    def images(n, base):  # each image a person of its own (VKD's default target groups images by person)
        return [{"image": Image.fromarray((torch.rand(side, side, 3, generator=g) * 60 + base).clamp(0, 255)
                                          .to(torch.uint8).numpy()), "identity": i} for i in range(n)]

    forget, retain = images(2 * shape["batch"], 200.0), images(2 * shape["batch"], 20.0)
    config = vf.UnlearnConfig(steps=shape["steps"], batch_size=shape["batch"], lr=1e-4, log_every=1,
                              device=str(device), amp="bf16")
    with measure(device) as m:
        result = vf.unlearn(model, forget, retain, config=config)
    steps = [r["step_seconds"] for r in result.history if "step_seconds" in r]
    last = result.history[-1]
    return {"checkpoint": str(ckpt), "checkpoint_write_seconds": wrote, "load_seconds": load_s,
            "visual_params": sum(p.numel() for p in model.parameters() if not p.is_meta),
            "steps": len(steps), "images_per_side": shape["batch"], "amp": "bf16" if device.type == "cuda" else "off",
            "step_seconds_median": statistics.median(steps[1:] or steps), "first_step_seconds": steps[0],
            "peak_memory_bytes": m["peak_extra_bytes"], "memory_kind": m["memory_kind"],
            "loss_finite": all(v == v and abs(v) != float("inf") for k, v in last.items() if k.startswith("loss")),
            "seconds": m["seconds"]}


def check_recipe(device, dry: bool, workdir: Path) -> dict:
    """The shipped recipe's commands at tiny size on ``device`` (see the module docstring)."""
    import importlib.util
    import shutil
    import subprocess

    missing = [m for m in ("pyarrow", "rouge_score", "nltk", "yaml") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"missing packages: {', '.join(missing)}", "ok": None}
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tests"))
    from _recipe_fixture import RECIPE_SIZES, hub_folder, mllmu_fixture

    if workdir.exists():
        shutil.rmtree(workdir)
    vanilla = hub_folder(workdir / "vanilla")
    bench, train = mllmu_fixture(workdir)
    out = workdir / "run"
    exe = shutil.which("vkd-fast", path=str(Path(sys.executable).parent)) or "vkd-fast"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(VANILLA=str(vanilla), BENCH=str(bench), TRAIN=str(train), OUT=str(out), SEEDS="0",
               DEVICE=str(device), VKD_FAST=exe, **RECIPE_SIZES)
    t0 = time.perf_counter()
    script = root / "vkd_fast" / "configs" / "mllmu_llava15_vkd.sh"
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=420, check=False)
    said = [line for line in run.stderr.splitlines() if ": device " in line]
    report = {"returncode": run.returncode, "seconds": time.perf_counter() - t0, "device_lines": said,
              "stderr_tail": run.stderr[-1500:] if run.returncode else ""}
    if run.returncode == 0:
        result = json.loads((out / "run" / "result.json").read_text())
        report["unlearn"] = {"steps": result["steps_run"], "wall_seconds": result["wall_seconds"],
                             "visual_only": result["visual_only"], "last": result["last"]}
        report["eval"] = {who: json.loads((out / "eval" / f"{who}-seed0.json").read_text())["Forget Set Results"]
                          ["classification"] for who in ("vkd", "vanilla")}
    report["ok"] = run.returncode == 0 and len(said) == 3 and all(f"device {device.type}" in line for line in said)
    return report


# the 7B-shaped checkpoint's first write is the longest step: last
CHECKS = ("loss", "roofline", "cache", "recipe", "vkd_step")


def _passed(name: str, section) -> bool | None:
    """Whether one section passed (None: skipped, and said so)."""
    if isinstance(section, dict) and "error" in section:
        return False
    if name == "loss":
        return all(r["matches_reference"] for r in section)
    if name == "cache":
        return section["prefetch_matches"]
    if name == "roofline":  # a measurement: passes when every figure is a finite time
        return all(v > 0 and v != float("inf") for r in section for k, v in r.items() if k.endswith("_ms"))
    if name == "vkd_step":
        return section["loss_finite"]
    return section["ok"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_check.json", help="the JSON report (rewritten after each check)")
    ap.add_argument("--dry-run", action="store_true", help="tiny CPU shapes (no CUDA needed): the code paths only")
    ap.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/vkd_fast/bench"),
                    help="where the 7B-shaped checkpoint is (written on first use, ~14 GB)")
    ap.add_argument("--checks", default=",".join(CHECKS),
                    help=f"comma-separated checks to run, in this order (default: {','.join(CHECKS)})")
    args = ap.parse_args(argv)
    if args.dry_run != DRY:
        raise SystemExit("--dry-run must be given on the command line")
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown or not checks:
        raise SystemExit(f"--checks must name some of {', '.join(CHECKS)}; got {args.checks!r}")
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; run with --dry-run to check the code paths on CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    from vkd_fast.utils.files import atomic_write

    t0 = time.perf_counter()
    report = {"dry_run": args.dry_run, "environment": H.environment(), "checks": checks}
    run = {"loss": lambda: check_loss(device, args.dry_run), "roofline": lambda: check_roofline(device, args.dry_run),
           "cache": lambda: check_cache(device, args.dry_run),
           "vkd_step": lambda: check_vkd_step(device, args.dry_run, Path(args.cache_dir)),
           "recipe": lambda: check_recipe(device, args.dry_run, Path(args.cache_dir) / "recipe")}
    for name in checks:
        # one check's failure is reported and the others still run: a rented GPU's minutes are not spent twice
        started = time.perf_counter()
        try:
            report[name] = run[name]()
        except Exception as exc:  # noqa: BLE001 - reported in the JSON, and the run fails at the end
            import traceback

            report[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        print(f"== {name} ({time.perf_counter() - started:.1f} s)", json.dumps(report[name], indent=1), flush=True)
        report["seconds"] = time.perf_counter() - t0
        atomic_write(Path(args.out), json.dumps(report, indent=1))  # what finished is on disk if time runs out
    passed = {name: _passed(name, report[name]) for name in checks}
    report["passed"] = passed
    report["ok"] = all(v is not False for v in passed.values())
    report["seconds"] = time.perf_counter() - t0
    atomic_write(Path(args.out), json.dumps(report, indent=1))
    print(f"gpu_check {'(dry run) ' if args.dry_run else ''}{'OK' if report['ok'] else 'FAILED'} in "
          f"{report['seconds']:.0f} s: wrote {args.out}" + ("" if report["ok"] else
          f" (failed: {', '.join(k for k, v in passed.items() if v is False)})"))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
