"""Bad input raises a ValueError / TypeError that names the argument, what was expected and got."""

import pytest
import torch

import vkd_fast as vf

S = torch.randn(6, 8, requires_grad=True)
T = torch.randn(6, 8)


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"student": [[1.0]]}, TypeError, r"student must be a torch.Tensor, got list"),
        ({"student": torch.randn(6)}, ValueError, r"student must be 2-D .*got shape \(6,\)"),
        ({"student": torch.ones(6, 8, dtype=torch.int64)}, TypeError, r"student must be float32.*got torch.int64"),
        ({"target": torch.randn(6, 8, 1)}, ValueError, r"target must be 2-D"),
        ({"target": torch.randn(6, 9)}, ValueError, r"target must have student's feature size D=8, got D=9"),
        ({"target": torch.randn(6, 8, dtype=torch.float64)}, TypeError, r"target must have student's dtype torch.float32, got torch.float64"),
        ({"target": torch.randn(5, 8)}, ValueError, r"target has 5 rows but there are N=6 student rows; pass target_index"),
        ({"target": torch.randn(6, 8, requires_grad=True)}, ValueError, r"target requires grad.*target.detach\(\)"),
        ({"target_index": torch.zeros(6)}, TypeError, r"target_index must be int64 or int32, got torch.float32"),
        ({"target_index": torch.zeros(5, dtype=torch.long)}, ValueError, r"target_index must have shape \[6\], got \(5,\)"),
        ({"target_index": torch.zeros(6, 1, dtype=torch.long)}, ValueError, r"target_index must have shape \[6\], got \(6, 1\)"),
        ({"target_index": torch.tensor([0, 1, 2, 3, 4, 6])}, ValueError, r"target_index must hold row numbers in \[0, 6\), got target_index\[5\] = 6"),
        ({"target_index": torch.tensor([0, -1, 2, 3, 4, 5])}, ValueError, r"target_index\[1\] = -1"),
        ({"target_index": [0, 1, 2, 3, 4, 5]}, TypeError, r"target_index must be a torch.Tensor or None, got list"),
        ({"student_index": torch.tensor([0, 1, 9]), "target": T[:3]}, ValueError, r"student_index must hold row numbers in \[0, 6\), got student_index\[2\] = 9"),
        ({"student_index": torch.tensor([0.0, 1.0])}, TypeError, r"student_index must be int64 or int32, got torch.float32"),
        ({"student_index": torch.zeros(6, 1, dtype=torch.long)}, ValueError, r"student_index must have shape \[N\], got \(6, 1\)"),
        ({"weight": torch.ones(5)}, ValueError, r"weight must have shape \[6\], got \(5,\)"),
        ({"weight": torch.ones(6, dtype=torch.long)}, TypeError, r"weight must be a floating-point tensor, got torch.int64"),
        ({"weight": torch.ones(6, requires_grad=True)}, ValueError, r"weight requires grad"),
        ({"metric": "l2"}, ValueError, r"metric must be one of 'mse', 'cosine', 'smooth_l1', got 'l2'"),
        ({"reduction": "avg"}, ValueError, r"reduction must be one of 'mean', 'sum', 'none', got 'avg'"),
        ({"backend": "cuda"}, ValueError, r"backend must be one of 'auto', 'triton', 'cext', 'reference', got 'cuda'"),
    ],
)
@pytest.mark.parametrize("backend", ["auto", "cext", "reference"])
def test_bad_input_is_rejected_with_a_clear_message(kwargs, exc, pattern, backend):
    args = {"student": S, "target": T, "backend": backend}
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        vf.feature_distill_loss(**args)


def test_student_index_changes_n_for_target_checks():
    # with student_index, N is its length; target then needs N rows or a target_index of length N
    with pytest.raises(ValueError, match=r"target has 6 rows but there are N=2 student rows"):
        vf.feature_distill_loss(S, T, student_index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"target_index must have shape \[2\], got \(3,\)"):
        vf.feature_distill_loss(S, T, student_index=torch.tensor([0, 1]), target_index=torch.tensor([0, 1, 2]))


def test_device_mismatch_is_named():
    meta = torch.empty(6, 8, device="meta")
    with pytest.raises(ValueError, match=r"target must be on student's device cpu, got meta"):
        vf.feature_distill_loss(S, meta)
    with pytest.raises(ValueError, match=r"weight must be on cpu like student, got meta"):
        vf.feature_distill_loss(S, T, weight=torch.empty(6, device="meta"))


def test_module_validates_at_construction():
    with pytest.raises(ValueError, match="metric must be one of"):
        vf.FeatureDistillLoss(metric="huber")
    with pytest.raises(ValueError, match="reduction must be one of"):
        vf.FeatureDistillLoss(reduction="max")
    with pytest.raises(ValueError, match="backend must be one of"):
        vf.FeatureDistillLoss(backend="gpu")


def test_cpp_kernel_checks_its_own_inputs():
    # the extension is callable directly; it must not trust its caller with memory safety
    from vkd_fast import _ext

    ext = _ext.load()
    with pytest.raises(RuntimeError, match=r"target_index\[1\] = 9 is out of range \[0, 6\)"):
        ext.feature_distill_fwd(S.detach(), T, torch.tensor([0, 9, 0, 0, 0, 0]), None, None, 0, 0, 1e-8)
    with pytest.raises(RuntimeError, match="dtypes differ"):
        ext.feature_distill_fwd(S.detach(), T.double(), None, None, None, 0, 0, 1e-8)


def test_index_range_checks_can_be_skipped_for_trusted_indices():
    # check_indices=False: the caller vouches for the values (the VKD step, which must not sync a GPU)
    ok = vf.feature_distill_loss(S, T, target_index=torch.arange(6), check_indices=False)
    torch.testing.assert_close(ok, vf.feature_distill_loss(S, T))
    with pytest.raises(ValueError, match=r"target_index must hold row numbers in \[0, 6\)"):
        vf.feature_distill_loss(S, T, target_index=torch.tensor([0, 1, 2, 3, 4, 6]), check_indices=True)
