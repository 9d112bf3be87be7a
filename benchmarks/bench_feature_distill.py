"""Benchmark of the feature-distillation loss: providers x modes x shapes x dtypes.

Providers: ``eager`` (the pure-torch reference), ``compile`` (torch.compile of the reference),
``cext`` (the fused C++ kernel of the extension; "cpu" in rows written before it was renamed; its
gradient buffer comes from a reused host pool, as in a training loop), ``cext-fresh`` (the same
kernel with the pool emptied before every call: a fresh, page-faulting buffer each time) and
``triton`` (CUDA only: reported as skipped elsewhere).
Modes: ``forward`` (loss with a graph), ``backward`` (backward of that graph), ``full`` (both).
Each case is checked against the reference before it is timed. Per case: median and p10/p90 time,
the bytes a fused kernel must move (forward: read student and target; backward: write the
gradient; full: both) and the GB/s that implies, the machine's copy bandwidth measured in the same
run, and (full mode) the peak resident memory one step adds, as a multiple of the gradient buffer.

    python benchmarks/bench_feature_distill.py            # every shape and dtype
    python benchmarks/bench_feature_distill.py --quick    # N=9216, D=1024 (the target case)

Results are appended to benchmarks/results/feature_distill.csv; plot with benchmarks/plot.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

import vkd_fast as vf  # noqa: E402
from vkd_fast import _ext  # noqa: E402
from vkd_fast.ops.reference import feature_distill_reference  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def make_providers(device: torch.device, quiet: bool = False) -> dict:
    providers = {"eager": lambda s, t: feature_distill_reference(s, t)}
    providers["compile"] = torch.compile(lambda s, t: feature_distill_reference(s, t), dynamic=False)
    if device.type == "cpu":
        if _ext.load() is None:
            if not quiet:
                print(f"cpu: skipped (C++ extension unavailable: {_ext.CEXT_ERROR})")
        else:
            providers["cext"] = lambda s, t: vf.feature_distill_loss(s, t, backend="cext")

            def fresh(s, t):
                _ext.load().pool_trim()
                return vf.feature_distill_loss(s, t, backend="cext")

            providers["cext-fresh"] = fresh
        if not quiet:
            print("triton: skipped (needs a CUDA device; this machine has none)")
    else:
        providers["triton"] = lambda s, t: vf.feature_distill_loss(s, t, backend="triton")
    return providers


def copy_bandwidth(device, nbytes: int) -> float:
    """GB/s of one large copy_ (read + write), the practical memory roofline of this machine."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src).fill_(0.0)
    t = H.time_fn(lambda: dst.copy_(src), device=device, warmup=3, reps=20)
    return 2 * nbytes / (t["median_ms"] * 1e-3) / 1e9


def check(fn, s0, t) -> None:
    s = s0.detach().clone().requires_grad_()
    loss = fn(s, t)
    loss.backward()
    r = s0.detach().clone().requires_grad_()
    ref = feature_distill_reference(r, t)
    ref.backward()
    tol = {"rtol": 1e-4, "atol": 1e-6} if s0.dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-5}
    torch.testing.assert_close(loss.float(), ref.float(), **tol)
    torch.testing.assert_close(s.grad.float(), r.grad.float(), **tol)


def make_inputs(n: int, d: int, dname: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded student (requires grad) and target of one benchmark case."""
    g = torch.Generator().manual_seed(0)
    s0 = torch.randn(n, d, generator=g).to(device=device, dtype=DTYPES[dname]).requires_grad_()
    t = torch.randn(n, d, generator=g).to(device=device, dtype=DTYPES[dname])
    return s0, t


def bench_case(fn, s0, t, mode, device, reps):
    if mode == "forward":
        def step():
            fn(s0, t)
        return H.time_fn(step, device=device, reps=reps)
    if mode == "full":
        def step():
            fn(s0, t).backward()
            s0.grad = None
        return H.time_fn(step, device=device, reps=reps)
    # backward only: a fresh graph per repetition, built outside the timed region
    import time

    times = []
    for i in range(reps + 3):
        loss = fn(s0, t)
        H.sync(device)
        t0 = time.perf_counter()
        loss.backward()
        H.sync(device)
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1e3)
        s0.grad = None
    return H.summarize(times)


def peak_extra(provider: str, n: int, d: int, dname: str, device: torch.device) -> int | None:
    """Peak memory one full step adds, measured in a fresh process for this configuration alone.

    CPU: resident-set high-water mark over the step, after a warm-up step of the same shape (so
    torch.compile has compiled) and with vkd_fast's buffer pool emptied (so the step allocates its
    gradient buffer). glibc's mmap threshold is pinned at 1 MiB so that freed large buffers leave
    the process instead of being recycled from the heap, which would hide them from RSS.
    CUDA: the max_memory_allocated delta, in the same kind of fresh process.
    """
    import json
    import subprocess

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576")
    cmd = [sys.executable, __file__, "--peak-child", provider, str(n), str(d), dname, "--device", str(device)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    if out.returncode != 0:
        print(f"peak memory of {provider} failed: {out.stderr.strip()[-500:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_bytes"]


def _peak_child(provider: str, n: int, d: int, dname: str, device: torch.device) -> None:
    import json

    fn = make_providers(device, quiet=True)[provider]
    s0, t = make_inputs(n, d, dname, device)

    def step():
        fn(s0, t).backward()

    step()  # warm-up: compiles, loads the extension
    s0.grad = None
    if device.type == "cuda":
        extra = H.peak_extra_cuda(step, device)
    else:
        if _ext.load() is not None:
            _ext.load().pool_trim()
        extra = H.peak_extra_rss(step)
    print(json.dumps({"peak_extra_bytes": extra}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the target case N=9216, D=1024")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-child", nargs=4, metavar=("PROVIDER", "N", "D", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.peak_child:
        p, n, d, dname = args.peak_child
        _peak_child(p, int(n), int(d), dname, device)
        return 0
    env = H.environment()
    print(f"environment: {env}")
    shapes = [(9216, 1024)] if args.quick else [(2304, 1024), (2304, 4096), (9216, 1024), (9216, 4096)]
    dtypes = ["fp32", "bf16"]
    modes = ["forward", "backward", "full"]
    providers = make_providers(device)
    bw = copy_bandwidth(device, 9216 * 1024 * 4)
    print(f"copy bandwidth ({device}): {bw:.1f} GB/s")
    rows, results = [], {}
    for n, d in shapes:
        for dname in dtypes:
            s0, t = make_inputs(n, d, dname, device)
            elt = s0.element_size()
            grad_bytes = n * d * elt
            for pname, fn in providers.items():
                check(fn, s0, t)
                for mode in modes:
                    r = bench_case(fn, s0, t, mode, device, args.reps)
                    moved = {"forward": 2, "backward": 1, "full": 3}[mode] * n * d * elt
                    row = {
                        "bench": "feature_distill", "provider": pname, "mode": mode, "N": n, "D": d,
                        "dtype": dname, **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()},
                        "bytes": moved, "GBps": round(moved / (r["median_ms"] * 1e-3) / 1e9, 2),
                        "copy_GBps": round(bw, 2),
                    }
                    if mode == "full":
                        extra = peak_extra(pname, n, d, dname, device)
                        row["peak_extra_bytes"] = extra
                        row["peak_extra_x_grad"] = round(extra / grad_bytes, 3) if extra is not None else ""
                    rows.append({**row, **env})
                    results[(pname, mode, n, d, dname)] = row
                    mem = (f"  peak +{H.fmt_bytes(row.get('peak_extra_bytes'))} "
                           f"({row.get('peak_extra_x_grad')}x grad)") if mode == "full" else ""
                    print(f"{pname:>10} {mode:>8} N={n:<5} D={d:<5} {dname}: {r['median_ms']:8.2f} ms "
                          f"[{r['p10_ms']:.2f}, {r['p90_ms']:.2f}]  {row['GBps']:7.1f} GB/s{mem}")
            del s0, t
    path = H.append_rows("feature_distill", rows)
    print(f"wrote {len(rows)} rows to {path}")

    # Targets (this 2-core CPU): cext full fwd+bwd at N=9216, D=1024, fp32
    key = ("full", 9216, 1024, "fp32")
    fast = "triton" if device.type == "cuda" else "cext"
    if (fast, *key) in results:
        f = results[(fast, *key)]
        e, c = results[("eager", *key)], results[("compile", *key)]
        ok = True
        print(f"\nratios at N=9216, D=1024, fp32, full fwd+bwd ({fast}):")
        for label, other, target in (("eager", e, 6.0), ("torch.compile", c, 1.5)):
            ratio = other["median_ms"] / f["median_ms"]
            ok &= ratio >= target
            print(f"  {fast} vs {label:<14} {ratio:5.2f}x faster  (target >= {target}x)  "
                  f"{'MET' if ratio >= target else 'MISSED'}")
        if ("cext-fresh", *key) in results:
            fr = results[("cext-fresh", *key)]
            print(f"  cext-fresh (no buffer reuse) vs eager {e['median_ms'] / fr['median_ms']:5.2f}x, "
                  f"vs torch.compile {c['median_ms'] / fr['median_ms']:5.2f}x")
        px = f.get("peak_extra_x_grad")
        if px != "":
            ok &= px <= 1.1
            print(f"  {fast} peak extra memory {px}x the gradient buffer (target <= 1.1x)  "
                  f"{'MET' if px <= 1.1 else 'MISSED'}")
        if device.type == "cuda":
            print(f"  triton achieved {f['GBps']:.0f} GB/s = {f['GBps'] / bw:.0%} of the measured copy roofline "
                  f"({bw:.0f} GB/s); target >= 85%")
        print("  all targets met" if ok else "  SOME TARGETS MISSED")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    raise SystemExit(main())
