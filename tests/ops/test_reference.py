"""The reference implementation against gradcheck (fp64) and against a naive per-row formula."""

import math

import pytest
import torch
from _cases import INDEX_MODES, METRICS, REDUCTIONS, make_case, to64

from vkd_fast.ops.reference import feature_distill_reference


def naive_loss(student, target, target_index, student_index, weight, metric, reduction):
    """Written from the definition with Python loops over rows and features (float64)."""
    s_rows = student_index.tolist() if student_index is not None else list(range(student.shape[0]))
    n = len(s_rows)
    t_rows = target_index.tolist() if target_index is not None else list(range(n))
    S, T = student.double().tolist(), target.double().tolist()
    losses = []
    for i in range(n):
        s, t = S[s_rows[i]], T[t_rows[i]]
        d = len(s)
        if metric == "mse":
            v = sum((a - b) ** 2 for a, b in zip(s, t)) / d
        elif metric == "smooth_l1":
            v = sum(0.5 * (a - b) ** 2 if abs(a - b) < 1 else abs(a - b) - 0.5 for a, b in zip(s, t)) / d
        else:
            ns = max(math.sqrt(sum(a * a for a in s)), 1e-8)
            nt = max(math.sqrt(sum(b * b for b in t)), 1e-8)
            v = 1 - sum(a * b for a, b in zip(s, t)) / (ns * nt)
        w = 1.0 if weight is None else float(weight[i])
        losses.append(w * v)
    if reduction == "none":
        return torch.tensor(losses, dtype=torch.float64)
    total = sum(losses)
    return torch.tensor(total / n if reduction == "mean" else total, dtype=torch.float64)


@pytest.mark.parametrize("mode", INDEX_MODES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("metric", METRICS)
def test_reference_matches_naive_formula(metric, reduction, mode):
    case = make_case(13, 9, mode)
    got = feature_distill_reference(**case, metric=metric, reduction=reduction)
    want = naive_loss(
        case["student"].detach(), case["target"], case.get("target_index"), case.get("student_index"),
        case.get("weight"), metric, reduction,
    )
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", INDEX_MODES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("metric", METRICS)
def test_reference_gradcheck_fp64(metric, reduction, mode):
    case = to64(make_case(6, 5, mode, scale=0.8))

    def f(student):
        return feature_distill_reference(**dict(case, student=student), metric=metric, reduction=reduction)

    assert torch.autograd.gradcheck(f, (case["student"],), eps=1e-6, atol=1e-7)


def test_reference_gradient_outside_student_index_is_zero():
    case = make_case(10, 4, "student_index")
    feature_distill_reference(**case).backward()
    used = torch.zeros(case["student"].shape[0], dtype=torch.bool)
    used[case["student_index"]] = True
    assert (case["student"].grad[~used] == 0).all()
    assert (case["student"].grad[used].abs().sum(1) > 0).all()


def test_reference_repeated_student_index_accumulates():
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, dtype=torch.float64)
    feature_distill_reference(s, t, student_index=torch.tensor([1, 1]), reduction="sum").backward()
    want = 2 * (s[1] - t[0]) / 4 + 2 * (s[1] - t[1]) / 4
    torch.testing.assert_close(s.grad[1], want.detach())
    assert (s.grad[[0, 2]] == 0).all()
