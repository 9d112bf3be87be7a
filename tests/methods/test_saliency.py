"""The saliency mask (vkd_fast.methods.saliency): Fisher estimates, threshold and top-ratio masks,
gradient gating, against hand computations."""

import pytest
import torch

from vkd_fast.methods.saliency import MaskOptions, apply_mask, fisher, saliency_mask


def test_fisher_is_the_mean_squared_gradient():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    named = [("w", w)]
    fns = [lambda: (w * torch.tensor([1.0, 0.0, 2.0])).sum(), lambda: (w ** 2).sum()]
    got = fisher(named, fns)["w"]
    want = (torch.tensor([1.0, 0.0, 2.0]) ** 2 + (2 * w.detach()) ** 2) / 2
    torch.testing.assert_close(got, want)
    assert w.grad is None  # gradients are cleared afterwards


def test_threshold_and_ratio_masks():
    f = {"a": torch.tensor([4.0, 1.0]), "b": torch.tensor([0.0, 9.0, 2.0])}
    r = {"a": torch.tensor([2.0, 2.0]), "b": torch.tensor([1.0, 1.0, 1.0])}
    by_threshold = saliency_mask(f, r, threshold=1.5)  # ratios a: [2, 0.5], b: [0, 9, 2]
    assert by_threshold["a"].tolist() == [True, False] and by_threshold["b"].tolist() == [False, True, True]
    top = saliency_mask(f, r, ratio=0.4)  # the 2 largest of 5 ratios: 9 and 2 (a tie: both 2s kept)
    assert top["a"].tolist() == [True, False] and top["b"].tolist() == [False, True, True]


def test_apply_mask_gates_gradients_until_removed():
    w = torch.nn.Parameter(torch.ones(3))
    handles = apply_mask([("w", w)], {"w": torch.tensor([True, False, True])})
    (w * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert w.grad.tolist() == [1.0, 0.0, 3.0]
    for h in handles:
        h.remove()
    w.grad = None
    (w * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert w.grad.tolist() == [1.0, 2.0, 3.0]


def test_mask_options():
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        MaskOptions(mask_ratio=1.5)
    with pytest.raises(ValueError, match="mask_batches must be a positive int"):
        MaskOptions(mask_batches=0)
