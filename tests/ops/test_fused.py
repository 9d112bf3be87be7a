"""The fused backends (C++ ``cpu``; ``triton`` under the interpreter) against the reference."""

import pytest
import torch
from _cases import DTYPES, INDEX_MODES, METRICS, REDUCTIONS, check_against_oracle, make_case, run, to64

import vkd_fast as vf
from vkd_fast.ops.cext_launch import feature_distill_fwd_cext
from vkd_fast.ops.reference import feature_distill_reference
from vkd_fast.ops.triton_launch import feature_distill_fwd_triton

FUSED = ("cext", "triton")


def _ref(**kw):
    return vf.feature_distill_loss(**kw, backend="reference")


def _compare(backend, case, metric, reduction, dtype):
    fast_loss, fast_grad, go = run(vf.feature_distill_loss, case, metric=metric, reduction=reduction,
                                   backend=backend)
    ref_loss, ref_grad, _ = run(_ref, case, go=go, metric=metric, reduction=reduction)
    o_loss, o_grad, _ = run(_ref, to64(case), go=go.double(), metric=metric, reduction=reduction)
    assert fast_loss.dtype == torch.float32 and fast_loss.shape == ref_loss.shape
    assert fast_grad.dtype == dtype and fast_grad.shape == case["student"].shape
    if dtype == torch.float32:
        torch.testing.assert_close(fast_loss, ref_loss, rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(fast_grad, ref_grad, rtol=2e-5, atol=1e-7)
    check_against_oracle(fast_loss, ref_loss, o_loss, 2, f"{backend} loss")
    check_against_oracle(fast_grad, ref_grad, o_grad, 3, f"{backend} grad")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", INDEX_MODES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend", FUSED)
def test_fused_matches_reference_odd_shape(backend, metric, reduction, mode, dtype):
    case = make_case(41, 1271, mode, dtype=dtype)
    _compare(backend, case, metric, reduction, dtype)


@pytest.mark.parametrize("weight", ["zeros", "ones", None])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend", FUSED)
def test_fused_special_weights(backend, metric, weight):
    case = make_case(17, 130, "both", weight=weight)
    _compare(backend, case, metric, "mean", torch.float32)
    if weight == "zeros":
        loss, grad, _ = run(vf.feature_distill_loss, case, metric=metric, backend=backend)
        assert loss.item() == 0.0 and (grad == 0).all()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend", FUSED)
def test_fused_non_contiguous_inputs(backend, metric):
    big = torch.randn(30, 2 * 97)
    student = big[:, ::2].detach().requires_grad_()           # column stride 2
    target = torch.randn(97, 30).t()                           # column-major
    weight = torch.rand(60)[::2]                               # strided weight
    index = torch.arange(60)[::2] % 30                         # strided index
    assert not (student.is_contiguous() or target.is_contiguous() or weight.is_contiguous())
    case = {"student": student, "target": target, "weight": weight, "target_index": index.flip(0)}
    _compare(backend, case, metric, "none", torch.float32)


@pytest.mark.parametrize("backend", FUSED)
def test_fused_row_strided_student_is_not_copied_and_matches(backend):
    hidden = torch.randn(4, 9, 48)                  # [batch, seq, D] hidden states
    flat = hidden.view(-1, 48).requires_grad_()
    rows = torch.tensor([1, 2, 3, 10, 11, 12, 19, 20, 21, 28, 29, 30])  # visual-token positions
    case = {"student": flat, "target": torch.randn(12, 48), "student_index": rows}
    _compare(backend, case, "mse", "mean", torch.float32)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend", FUSED)
def test_fused_wide_rows_tile_over_d(backend, metric):
    # D = 8193 needs 9 tiles of 1024 in the Triton kernel; the last one is 1 wide.
    case = make_case(5, 8193, "target_index")
    _compare(backend, case, metric, "sum", torch.float32)


@pytest.mark.parametrize("backend", FUSED)
def test_fused_repeated_student_index_accumulates(backend):
    case = make_case(12, 33, "student_index")
    case["student_index"] = torch.tensor([3, 3, 0, 5, 3, 1, 1, 2, 9, 9, 4, 0])
    _compare(backend, case, "mse", "mean", torch.float32)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend", FUSED)
def test_fused_zero_rows(backend, metric):
    case = make_case(6, 40, "plain")
    with torch.no_grad():
        case["student"][1].zero_()
        case["target"][2].zero_()
        case["student"][3] = case["target"][3]
    _compare(backend, case, metric, "none", torch.float32)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("backend", FUSED)
def test_fused_empty_batch(backend, reduction):
    student = torch.randn(0, 8, requires_grad=True)
    loss = vf.feature_distill_loss(student, torch.randn(0, 8), reduction=reduction, backend=backend)
    ref = feature_distill_reference(student, torch.randn(0, 8), reduction=reduction)
    torch.testing.assert_close(loss, ref, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("metric", METRICS)
def test_launchers_write_every_element_of_poisoned_buffers(metric, dtype):
    case = make_case(37, 300, "both", dtype=dtype)
    args = (case["student"].detach(), case["target"], case["target_index"], case["student_index"],
            case["weight"], metric, "none")
    ref = feature_distill_reference(*args[:5], metric=metric, reduction="none")
    g_cpu = torch.full((37, 300), float("nan"), dtype=dtype)
    loss_cpu, grad_cpu = feature_distill_fwd_cext(*args, grad_out=g_cpu)
    assert grad_cpu.data_ptr() == g_cpu.data_ptr() and not grad_cpu.isnan().any()
    g_tr = torch.full((37, 300), float("nan"), dtype=dtype)
    l_tr = torch.full((37,), float("nan"))
    # small blocks: several programs along N and several tiles along D, partial at both ends
    loss_tr, grad_tr = feature_distill_fwd_triton(*args, grad_out=g_tr, loss_rows_out=l_tr, block_n=8, block_d=64)
    assert grad_tr.data_ptr() == g_tr.data_ptr() and loss_tr.data_ptr() == l_tr.data_ptr()
    assert not grad_tr.isnan().any() and not loss_tr.isnan().any()
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-4}
    torch.testing.assert_close(loss_cpu, ref, **tol)
    torch.testing.assert_close(loss_tr, ref, **tol)
    torch.testing.assert_close(grad_tr.float(), grad_cpu.float(), **tol)


def test_triton_kernel_masks_bad_indices_to_nan():
    # With index checks off (VKD_FAST_CHECK_INDICES=0 on CUDA), a bad row must not read out of bounds.
    s, t = torch.randn(4, 16), torch.randn(3, 16)
    ti = torch.tensor([0, 7, 2, -1])
    loss, grad = feature_distill_fwd_triton(s, t, ti, None, None, "mse", "none")
    assert loss[[1, 3]].isnan().all() and grad[[1, 3]].isnan().all()
    ref = feature_distill_reference(s, t, ti[[0, 2]].clone(), torch.tensor([0, 2]), reduction="none")
    torch.testing.assert_close(loss[[0, 2]], ref)


@pytest.mark.parametrize("backend", FUSED)
def test_fused_second_backward_raises_clearly(backend):
    s = torch.randn(5, 8, requires_grad=True)
    loss = vf.feature_distill_loss(s, torch.randn(5, 8), backend=backend)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already backpropagated"):
        loss.backward()


@pytest.mark.parametrize("backend", FUSED)
def test_fused_without_grad_and_module_form(backend):
    s, t = torch.randn(9, 20), torch.randn(9, 20)
    mod = vf.FeatureDistillLoss(metric="cosine", reduction="sum", backend=backend)
    assert "cosine" in repr(mod)
    with torch.no_grad():
        got = mod(s, t)
    torch.testing.assert_close(got, feature_distill_reference(s, t, metric="cosine", reduction="sum"))


def test_cpu_kernel_is_deterministic_and_thread_count_independent():
    case = make_case(2000, 256, "both")
    outs = []
    for threads in (1, 2, 1):
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            outs.append(run(vf.feature_distill_loss, case, backend="cext")[:2])
        finally:
            torch.set_num_threads(prev)
    for loss, grad in outs[1:]:
        assert torch.equal(loss, outs[0][0]) and torch.equal(grad, outs[0][1])


def test_cpu_gradient_buffer_is_reused_across_steps_and_not_shared_while_alive():
    from vkd_fast import _ext

    ext = _ext.load()
    ext.pool_trim()
    t = torch.randn(600, 512)
    s = torch.randn(600, 512, requires_grad=True)  # 1.2 MB gradient: pooled
    vf.feature_distill_loss(s, t, backend="cext").backward()
    first = s.grad.data_ptr()
    free0, blocks0, live0, hits0, misses0 = ext.pool_stats()
    assert live0 >= 600 * 512 * 4 and misses0 >= 1
    s2 = s.detach().clone().requires_grad_()
    vf.feature_distill_loss(s2, t, backend="cext").backward()
    assert s2.grad.data_ptr() != first  # s.grad is alive: its buffer must not be handed out again
    want = 2 * (s2.detach() - t) / (600 * 512)
    torch.testing.assert_close(s.grad, want)
    del s, s2
    s3 = torch.randn(600, 512, requires_grad=True)
    vf.feature_distill_loss(s3, t, backend="cext").backward()
    free1, blocks1, live1, hits1, misses1 = ext.pool_stats()
    assert hits1 > hits0  # a freed buffer was reused
    torch.testing.assert_close(s3.grad, 2 * (s3.detach() - t) / (600 * 512))
    del s3
    ext.pool_trim()
    assert ext.pool_stats()[0] == 0


@pytest.mark.slow
def test_cpu_pool_can_be_disabled():
    import os
    import subprocess
    import sys

    code = (
        "import torch, vkd_fast as vf\nfrom vkd_fast import _ext\n"
        "s = torch.randn(600, 512, requires_grad=True)\n"
        "vf.feature_distill_loss(s, torch.zeros(600, 512), backend='cext').backward()\n"
        "print(_ext.load().pool_stats())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                         env={**os.environ, "VKD_FAST_CPU_POOL": "0"})
    assert out.stdout.strip() == "(0, 0, 0, 0, 0)"
