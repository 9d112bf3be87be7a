"""Backend selection: auto, by name, through VKD_FAST_BACKEND, fallback and clear refusals."""

import pytest
import torch

import vkd_fast as vf
from vkd_fast import _backend


def test_auto_on_cpu_picks_the_cpp_kernel():
    assert _backend.resolve("auto", torch.device("cpu"), torch.float32) == "cext"


def test_auto_on_cpu_falls_back_to_reference_for_float64():
    assert _backend.resolve("auto", torch.device("cpu"), torch.float64) == "reference"
    s = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    vf.feature_distill_loss(s, torch.randn(4, 3, dtype=torch.float64)).backward()
    assert s.grad.dtype == torch.float64


def test_named_backend_that_cannot_run_raises_with_reason():
    with pytest.raises(RuntimeError, match=r"backend 'cext' \(from argument backend\) cannot run: .*float64"):
        vf.feature_distill_loss(torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64),
                                backend="cext")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "needs CUDA tensors" in _backend.unavailable_reason("triton", torch.device("cpu"), torch.float32)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        _backend.resolve("triton", torch.device("cpu"), torch.float32)


def test_env_override_applies_to_auto_only(monkeypatch):
    monkeypatch.setenv("VKD_FAST_BACKEND", "reference")
    assert _backend.resolve("auto", torch.device("cpu"), torch.float32) == "reference"
    assert _backend.resolve("cext", torch.device("cpu"), torch.float32) == "cext"
    monkeypatch.setenv("VKD_FAST_BACKEND", "bogus")
    with pytest.raises(ValueError, match="VKD_FAST_BACKEND must be one of"):
        _backend.resolve("auto", torch.device("cpu"), torch.float32)


def test_env_override_names_a_backend_that_must_run(monkeypatch):
    monkeypatch.setenv("VKD_FAST_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match=r"backend 'triton' \(from VKD_FAST_BACKEND\) cannot run"):
        vf.feature_distill_loss(torch.randn(2, 3), torch.randn(2, 3))


def test_auto_falls_back_when_extension_unavailable(monkeypatch):
    from vkd_fast import _ext

    monkeypatch.setitem(_ext._state, "loaded", True)
    monkeypatch.setitem(_ext._state, "module", None)
    monkeypatch.setitem(_ext._state, "error", "disabled for this test")
    assert _backend.resolve("auto", torch.device("cpu"), torch.float32) == "reference"
    with pytest.raises(RuntimeError, match="C\\+\\+ extension is unavailable: disabled for this test"):
        _backend.resolve("cext", torch.device("cpu"), torch.float32)
    s = torch.randn(3, 4, requires_grad=True)
    loss = vf.feature_distill_loss(s, torch.randn(3, 4))
    assert loss.grad_fn is not None and "vkd_fast" not in type(loss.grad_fn).__name__


def test_cuda_index_checks_can_be_disabled(monkeypatch):
    from vkd_fast.functional import _index_checks_enabled

    assert _index_checks_enabled(torch.device("cpu"))
    assert _index_checks_enabled(torch.device("cuda"))
    monkeypatch.setenv("VKD_FAST_CHECK_INDICES", "0")
    assert not _index_checks_enabled(torch.device("cuda"))
    assert _index_checks_enabled(torch.device("cpu"))  # free on CPU: always on


def test_the_former_name_cpu_still_works_with_a_warning(monkeypatch):
    """The C++ loss backend is "cext" (the activation cache's name for the same extension); "cpu", its
    former name, is accepted as an argument and in VKD_FAST_BACKEND, with a FutureWarning."""
    with pytest.warns(FutureWarning, match="backend 'cpu' is now named 'cext'"):
        assert _backend.resolve("cpu", torch.device("cpu"), torch.float32) == "cext"
    monkeypatch.setenv("VKD_FAST_BACKEND", "cpu")
    with pytest.warns(FutureWarning, match="VKD_FAST_BACKEND: backend 'cpu' is now named 'cext'"):
        assert _backend.resolve("auto", torch.device("cpu"), torch.float32) == "cext"
    s = torch.randn(5, 8, requires_grad=True)
    t = torch.randn(5, 8)
    monkeypatch.delenv("VKD_FAST_BACKEND")
    with pytest.warns(FutureWarning):
        old = vf.feature_distill_loss(s, t, backend="cpu")
    assert torch.equal(old, vf.feature_distill_loss(s, t, backend="cext"))
