"""The command line's surface, in process: --version, --device on every command (default auto), plain
help with effective defaults, options given once, and option combinations that could only fail after
the work refused before any model loads (the model path does not even exist)."""

from __future__ import annotations

import re

import pytest

import vkd_fast as vf
from vkd_fast.cli.main import main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"vkd-fast {vf.__version__}\n"


@pytest.mark.parametrize("command", ["unlearn", "eval", "relearn", "demo"])
def test_every_command_has_device_auto(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--device DEVICE" in text and "auto (the default: the GPU when torch sees one, else the CPU" in text
    if command != "demo":
        assert "--dtype {default,float32,bfloat16,float16,auto}" in text
        assert "on an accelerator bfloat16 for the frozen parts" in text


def test_help_is_plain_words_with_effective_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["unlearn", "--help"])
    text = capsys.readouterr().out
    assert not re.search(r":(class|func|meth|data):|``", text)
    line = " ".join(text[text.index("vkd.forget_augment"):].split("\n  vkd.")[0].split())
    assert line.endswith("[default: 0.6]"), line  # the value a run uses, not the None that stands for it
    assert "600 steps unless steps= is given" in text and "300 steps unless steps= is given" in text


def _unlearn(tmp_path, *extra):
    images = tmp_path / "imgs" / "person"
    images.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(images / "a.png")
    return main(["unlearn", str(tmp_path / "no-such-model"), "--forget", str(tmp_path / "imgs"), "--retain",
                 str(tmp_path / "imgs"), "--output-dir", str(tmp_path / "run"), *extra])


@pytest.mark.parametrize("extra, message", [
    (["device=cpu", "--device", "cuda"], "option device='cpu' (from --config or key=value) conflicts with --device cuda"),
    (["output_dir=elsewhere"], "option output_dir='elsewhere' (from --config or key=value) conflicts with --output-dir"),
    (["--device", "cuda"], "--device='cuda', but torch sees no CUDA device here"),
    (["--method", "ga", "ga.lora={r: 4}"], "--save full: method 'ga' trains LoRA adapters"),
    (["vkd.lora={r: 4}"], "--save full: method 'vkd' trains LoRA adapters"),
    (["--save", "delta", "--link"], "--link applies to --save full only"),
    (["--method", "npo", "--save", "delta"], "forget items [0] carry no question/answer"),  # images alone
])
def test_refused_before_the_model_loads(tmp_path, capsys, extra, message):
    assert _unlearn(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_same_value_given_twice_is_fine(tmp_path, capsys):
    # both ways with the same value: accepted (the run then fails on the missing model, after the options)
    assert _unlearn(tmp_path, "device=cpu", "--device", "cpu", f"output_dir={tmp_path / 'run'}") == 2
    assert "no-such-model" in capsys.readouterr().err


def test_images_without_persons_are_refused_before_the_model_loads(tmp_path, capsys):
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    code = main(["unlearn", str(tmp_path / "no-such-model"), "--forget", str(flat), "--retain", str(flat),
                 "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "have no person" in err[0] and "--person-per-image" in err[0], err
    # asked for explicitly: each image its own person; the run then stops at the missing model
    code = main(["unlearn", str(tmp_path / "no-such-model"), "--forget", str(flat), "--retain", str(flat),
                 "--output-dir", str(tmp_path / "run"), "--person-per-image"])
    assert code == 2 and "no-such-model" in capsys.readouterr().err
