"""The Triton kernel compiles for a real GPU target, on this CPU machine.

Every other kernel test runs under ``TRITON_INTERPRET=1``, which executes the Python body and checks
none of what the compiler enforces: a non-constexpr global read inside ``@triton.jit`` ran fine under
the interpreter and failed the first compile on an H200 (benchmarks/gpu_check.py, 2026-12-04). Here
the kernel goes through Triton's real front end and code generation for a CUDA target (sm_90, the
H100/H200) for each metric, element type and optional operand, and the backward's scale kernel -- no GPU needed, only the compiler.
The compiles run in a subprocess without ``TRITON_INTERPRET`` (under it ``@triton.jit`` gives an
interpreted function that cannot be compiled).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from vkd_fast.ops import METRIC_CODE  # noqa: E402

DTYPES = ("fp32", "bf16", "fp16")
OPERANDS = list(itertools.product((False, True), repeat=3))  # HAS_TI, HAS_SI, HAS_W
CASES = ([(metric, dtype, True, False, True) for metric in sorted(METRIC_CODE) for dtype in DTYPES]
         + [("cosine", "bf16", *flags) for flags in OPERANDS])

COMPILE = r'''
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from vkd_fast.kernels import feature_distill as K
from vkd_fast.ops import METRIC_CODE

fn = K.feature_distill_fwd_kernel
out = {"codes": {m: getattr(c, "value", c) for m, c in (("mse", K.MSE), ("cosine", K.COSINE), ("smooth_l1", K.SMOOTH_L1))},
       "cases": {}}
for metric, dtype, has_ti, has_si, has_w in json.loads(sys.argv[1]):
    signature = {
        "p_s": f"*{dtype}", "p_t": f"*{dtype}", "p_ti": "*i64", "p_si": "*i64", "p_w": "*fp32",
        "p_loss": "*fp32", "p_g": f"*{dtype}", "N": "i32", "D": "i32", "M": "i32", "R": "i32",
        "stride_s0": "i64", "stride_s1": "i64", "stride_t0": "i64", "stride_t1": "i64", "stride_g0": "i64",
        "grad_scale": "fp32", "eps": "fp32"}
    constants = {"METRIC": METRIC_CODE[metric], "HAS_TI": has_ti, "HAS_SI": has_si, "HAS_W": has_w,
                 "BLOCK_N": 8, "BLOCK_D": 1024, "SOFT_BF16_RTNE": False}
    key = f"{metric}-{dtype}-{int(has_ti)}{int(has_si)}{int(has_w)}"
    if set(fn.arg_names) != set(signature) | set(constants):
        out["cases"][key] = f"the kernel's arguments changed: {fn.arg_names}"
        continue
    signature.update({name: "constexpr" for name in constants})
    source = ASTSource(fn=fn, signature=signature,
                       constexprs={(fn.arg_names.index(n),): v for n, v in constants.items()})
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
        out["cases"][key] = "ok" if ".target sm_90" in compiled.asm.get("ptx", "") else "no sm_90 PTX"
    except Exception as exc:  # reported per case
        out["cases"][key] = f"{type(exc).__name__}: {exc}"[:2000]
scale = K.feature_distill_bwd_scale_kernel
for dtype in ("fp32", "bf16", "fp16"):
    for per_row in (False, True):
        signature = {"p_g": f"*{dtype}", "p_scale": "*fp32", "NUMEL": "i64", "D": "i32", "stride_scale": "i64",
                     "PER_ROW": "constexpr", "BLOCK": "constexpr", "SOFT_BF16_RTNE": "constexpr"}
        constants = {"PER_ROW": per_row, "BLOCK": 4096, "SOFT_BF16_RTNE": False}
        key = f"scale-{dtype}-{int(per_row)}"
        if list(scale.arg_names) != list(signature):
            out["cases"][key] = f"the kernel's arguments changed: {scale.arg_names}"
            continue
        source = ASTSource(fn=scale, signature=signature,
                           constexprs={(scale.arg_names.index(n),): v for n, v in constants.items()})
        try:
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
            out["cases"][key] = "ok" if ".target sm_90" in compiled.asm.get("ptx", "") else "no sm_90 PTX"
        except Exception as exc:
            out["cases"][key] = f"{type(exc).__name__}: {exc}"[:2000]
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", COMPILE, json.dumps(CASES)], capture_output=True, text=True,
                         env=env, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_metric_codes_agree_with_the_launcher(compiled):
    assert compiled["codes"] == METRIC_CODE


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{int(c[2])}{int(c[3])}{int(c[4])}")
def test_kernel_compiles_for_sm90(compiled, case):
    metric, dtype, has_ti, has_si, has_w = case
    assert compiled["cases"][f"{metric}-{dtype}-{int(has_ti)}{int(has_si)}{int(has_w)}"] == "ok"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_row", [False, True])
def test_backward_scale_kernel_compiles_for_sm90(compiled, dtype, per_row):
    assert compiled["cases"][f"scale-{dtype}-{int(per_row)}"] == "ok"
