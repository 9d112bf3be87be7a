"""Device resolution ("auto" = the accelerator when torch sees one, else the CPU), the precision that
goes with it, and every command's --device: on this CPU-only machine the CUDA answers come from a
stand-in torch.cuda (monkeypatched), the moves from the meta device."""

from __future__ import annotations

import argparse

import pytest
import torch

from vkd_fast.utils import devices as D


@pytest.fixture
def two_gpus(monkeypatch):
    class Props:
        name, total_memory = "Stand-in GPU", 80 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def test_auto_is_the_cpu_without_an_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert D.resolve_device("auto") == torch.device("cpu")
    assert D.resolve_device(None) is None  # leave the model where it is
    assert D.resolve_device("cpu") == torch.device("cpu")
    n = torch.get_num_threads()
    assert D.describe_device(torch.device("cpu")) == f"cpu ({n} thread{'s' if n != 1 else ''})"
    assert D.describe_device(torch.device("cpu"), threads=1) == "cpu (1 thread)"
    assert D.describe_device(torch.device("cpu"), threads=3) == "cpu (3 threads)"
    with pytest.raises(ValueError, match=r"^--device='cuda', but torch sees no CUDA device here \(use 'auto' or 'cpu'\)$"):
        D.resolve_device("cuda", "--device")
    with pytest.raises(ValueError, match=r"^device must be 'auto', a torch device such as .* got 'tpu'$"):
        D.resolve_device("tpu")


def test_auto_is_the_gpu_when_one_is_visible(two_gpus, monkeypatch):
    assert D.resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a torchrun process takes its own GPU
    assert D.resolve_device("auto") == torch.device("cuda", 1)
    assert D.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="torch sees 2 CUDA device"):
        D.resolve_device("cuda:2")
    assert D.describe_device(torch.device("cuda", 1)) == "cuda:1 (Stand-in GPU, 80.0 GiB)"


def test_mps_when_it_is_the_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert D.resolve_device("auto") == torch.device("mps")


def test_unlearn_config_defaults_to_auto():
    import vkd_fast as vf

    assert vf.UnlearnConfig().device == "auto"
    assert vf.UnlearnConfig(device=None).device is None
    with pytest.raises(ValueError, match="trained_dtype must be one of"):
        vf.UnlearnConfig(trained_dtype="int8")


def test_placement_of_the_commands(two_gpus, capsys):
    from vkd_fast.cli.commands import _placement

    device, dtype = _placement(argparse.Namespace(device=None, dtype="default"), "eval")
    assert (device, dtype) == (torch.device("cuda", 0), "16bit")  # bf16 frozen weights on an accelerator
    assert capsys.readouterr().err == ("vkd-fast eval: device cuda:0 (Stand-in GPU, 80.0 GiB); a local model's "
                                       "weights: 16-bit (bfloat16 unless the checkpoint is float16)\n")
    assert _placement(argparse.Namespace(device="cpu", dtype="default"), "eval") == (torch.device("cpu"), torch.float32)
    assert _placement(argparse.Namespace(device="cuda:1", dtype="auto"), "eval") == (torch.device("cuda", 1), None)
    assert _placement(argparse.Namespace(device="auto", dtype="float16"), "x")[1] == torch.float16


def test_load_model_places_and_casts(tmp_path):
    import _tiny_models as T

    from vkd_fast.cli.specs import load_model

    T.saved_tiny_llava(tmp_path / "fp32")
    T.tiny_llava().half().save_pretrained(tmp_path / "fp16")
    model, tok = load_model(str(tmp_path / "fp32"), None, "16bit")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and tok is not None
    model, _ = load_model(str(tmp_path / "fp16"), None, "16bit")  # a 16-bit checkpoint keeps its dtype
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    model, _ = load_model(str(tmp_path / "fp16"), None, torch.float32, device="meta")  # a stand-in device
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
