"""Shared builders for the loss tests: random cases in every index mode, and the oracle rule."""

from __future__ import annotations

import torch

INDEX_MODES = ("plain", "target_index", "student_index", "both")
METRICS = ("mse", "cosine", "smooth_l1")
REDUCTIONS = ("mean", "sum", "none")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def make_case(n, d, mode, dtype=torch.float32, weight="random", scale=1.5, seed=0):
    """Returns kwargs for feature_distill_loss with a leaf ``student`` that requires grad."""
    g = torch.Generator().manual_seed(seed)
    r = n + 7 if mode in ("student_index", "both") else n
    m = n // 2 + 3 if mode in ("target_index", "both") else n
    student = (torch.randn(r, d, generator=g) * scale).to(dtype).requires_grad_()
    # targets near the student rows so that smooth_l1 sees both of its branches
    target = (torch.randn(m, d, generator=g) * scale).to(dtype)
    case = {"student": student, "target": target}
    if mode in ("target_index", "both"):
        case["target_index"] = torch.randint(0, m, (n,), generator=g)  # repeats on purpose
    if mode in ("student_index", "both"):
        case["student_index"] = torch.randperm(r, generator=g)[:n]
    if weight == "random":
        case["weight"] = torch.rand(n, generator=g) * 2
    elif weight == "zeros":
        case["weight"] = torch.zeros(n)
    elif weight == "ones":
        case["weight"] = torch.ones(n)
    return case


def grad_output_for(loss, seed=1):
    g = torch.Generator().manual_seed(seed)
    if loss.dim() == 0:
        return torch.tensor(-1.7, dtype=loss.dtype)
    return torch.randn(loss.shape, generator=g, dtype=loss.dtype)


def run(fn, case, go=None, **kw):
    """Loss and student gradient of ``fn(**case, **kw)`` with grad_output ``go``."""
    student = case["student"].detach().clone().requires_grad_()
    args = dict(case, student=student)
    loss = fn(**args, **kw)
    if go is None:
        go = grad_output_for(loss)
    loss.backward(go.to(loss.dtype))
    return loss.detach(), student.grad, go


def to64(case):
    out = {}
    for k, v in case.items():
        out[k] = v.detach().double() if v.is_floating_point() else v
    out["student"].requires_grad_()
    return out


def check_against_oracle(fast, ref_same, oracle, factor, what):
    """Fast path's max error vs the fp64 oracle <= factor x the same-dtype reference's error,
    with a floor at fp32 rounding level (both paths accumulate in fp32)."""
    oracle = oracle.double()
    err_fast = (fast.double() - oracle).abs().max().item() if oracle.numel() else 0.0
    err_ref = (ref_same.double() - oracle).abs().max().item() if oracle.numel() else 0.0
    floor = 2e-6 * (oracle.abs().max().item() if oracle.numel() else 0.0) + 1e-12
    assert err_fast <= factor * err_ref + floor, (
        f"{what}: fast error {err_fast:.3e} > {factor} x reference error {err_ref:.3e} + {floor:.1e}"
    )
    assert torch.isfinite(fast).all(), f"{what}: non-finite values"
