"""The Triton backend's backward scale (``grad *= grad_output`` in place, vkd_fast/kernels/feature_distill.py):
the fp32 product of the gradient and the fp32 scale, rounded once to the gradient's type, for every
element type, scalar and per-row scales (any stride), NaN rows and sizes that are not a multiple of
the block; a scale of exactly 1 leaves the buffer alone. Runs the kernel under the Triton interpreter
(tests/conftest.py); the same comparison passed on an H200 (2026-12-04).

The reference is ``(grad.float() * scale).to(dtype)``, not ``grad.mul_(scale)``: on CUDA, ``mul_`` of a
16-bit tensor by a 0-dim fp32 tensor first rounds the scale to 16 bits (the H200 run showed the
difference), one rounding more than the kernel makes."""

from __future__ import annotations

import pytest
import torch

import vkd_fast as vf
from vkd_fast.ops.reference import feature_distill_reference
from vkd_fast.ops.triton_launch import feature_distill_bwd_scale_triton

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _grad(n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    grad = (torch.randn(n, d, generator=g) * 3).to(dtype)
    grad[1, :] = float("nan")  # rows the forward marks invalid stay NaN
    return grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [1.0, 0.37, 65536.0, -2.5, 0.0, 1.0000001])
def test_scalar_scale_is_the_fp32_product_rounded_once(dtype, value):
    grad = _grad(7, 333, dtype)  # 2331 elements: not a multiple of any block
    scale = torch.tensor(value, dtype=torch.float32)
    want = (grad.float() * scale).to(dtype)
    got = feature_distill_bwd_scale_triton(grad, scale)
    assert got.data_ptr() == grad.data_ptr()  # in place
    assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0)) and torch.equal(got.isnan(), want.isnan())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("expanded", [False, True])
def test_per_row_scale_is_the_fp32_product_rounded_once(dtype, expanded):
    grad = _grad(9, 70, dtype, seed=1)
    if expanded:  # what the backward of sum() hands a reduction="none" loss: one value, stride 0
        scale = torch.tensor(0.3, dtype=torch.float32).expand(9)
    else:
        scale = torch.linspace(-2, 3, 9, dtype=torch.float32)
    want = (grad.float() * scale.unsqueeze(1)).to(dtype)
    got = feature_distill_bwd_scale_triton(grad, scale)
    assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0)) and torch.equal(got.isnan(), want.isnan())


def test_a_scale_of_one_does_not_touch_the_buffer():
    # the kernel neither reads nor writes when the scale is exactly 1: a signalling pattern survives bit for bit
    grad = torch.arange(4 * 64, dtype=torch.int32).view(torch.float32).reshape(4, 64).clone()  # denormals
    before = grad.clone()
    feature_distill_bwd_scale_triton(grad, torch.tensor(1.0))
    assert torch.equal(grad.view(torch.int32), before.view(torch.int32))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_backward_with_a_scaled_loss_matches_the_reference(reduction, dtype):
    g = torch.Generator().manual_seed(2)
    s0 = torch.randn(6, 48, generator=g).to(dtype)
    t = torch.randn(6, 48, generator=g).to(dtype)
    weights = torch.rand(6, generator=g)
    grads = {}
    for backend in ("triton", "reference"):
        s = s0.clone().requires_grad_()
        loss = vf.feature_distill_loss(s, t, reduction=reduction, backend=backend) \
            if backend == "triton" else feature_distill_reference(s, t, reduction=reduction)
        (loss * weights).sum().backward() if reduction == "none" else (loss * 0.37).backward()
        grads[backend] = s.grad.float()
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-3}
    torch.testing.assert_close(grads["triton"], grads["reference"], **tol)
