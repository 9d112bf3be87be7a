"""`vkd-fast unlearn` end to end on a tiny model saved to a local directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _tiny_models as T
import pytest
import torch
from PIL import Image

EXE = str(Path(sys.executable).with_name("vkd-fast"))


def _image_dir(path: Path, n: int, base, seed: int, people: bool = False) -> Path:
    """``n`` images in ``path``: flat (no person named), or with ``people`` each in a person folder of
    its own (``path/person<i>/<i>.png``, the ImageFolder layout VKD's default target reads persons from)."""
    path.mkdir()
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        pixels = (torch.rand(32, 48, 3, generator=g) * 60 + torch.tensor(base)).clamp(0, 255).to(torch.uint8)
        folder = path / f"person{i}" if people else path
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels.numpy()).save(folder / f"{i:03d}.png")
    return path


def _run(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)


@pytest.mark.slow
def test_unlearn_cli_end_to_end(tmp_path):
    model = T.tiny_llava()
    model.save_pretrained(tmp_path / "model")
    forget = _image_dir(tmp_path / "forget", 3, [200.0, 0.0, 0.0], 0, people=True)
    retain = _image_dir(tmp_path / "retain", 6, [0.0, 0.0, 200.0], 1, people=True)
    # a flat folder names no person: VKD's default target refuses it in one line, before any work
    flat = _image_dir(tmp_path / "flat", 2, [0.0, 200.0, 0.0], 2)
    bad = _run("unlearn", str(tmp_path / "model"), "--forget", str(flat), "--retain", str(retain), "--output-dir",
               str(tmp_path / "run"), "steps=2", cwd=tmp_path)
    errors = [line for line in bad.stderr.splitlines() if "error" in line]
    assert bad.returncode == 2 and len(errors) == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert "2 of the 2 forget items have no person" in errors[0] and "--person-per-image" in errors[0]
    assert not (tmp_path / "run").exists()
    # trainer options at the top, the method's under its name (another method's section is ignored);
    # 3e-3 is text to YAML 1.1 and a float to the option
    (tmp_path / "cfg.yaml").write_text("steps: 20\nbatch_size: 2\nlr: 3e-3\nvkd:\n  trainable: projector+vision_last:1\n"
                                       "  metric: cosine\nnpo:\n  beta: 0.1\n")
    out = _run("unlearn", str(tmp_path / "model"), "--forget", str(forget), "--retain", str(retain), "--output-dir",
               str(tmp_path / "run"), "--config", str(tmp_path / "cfg.yaml"), "steps=6", "save_every=3",
               "vkd.metric=mse", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["steps_run"] == 6 and result["config"]["steps"] == 6  # the override wins over the YAML
    assert result["config"]["lr"] == 3e-3 and isinstance(result["config"]["lr"], float)
    assert result["options"]["trainable"] == "projector+vision_last:1" and result["options"]["metric"] == "mse"
    assert result["last"]["loss_forget"] < result["first"]["loss_forget"]
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    from transformers import AutoModelForImageTextToText

    unlearned = AutoModelForImageTextToText.from_pretrained(tmp_path / "run" / "model",
                                                            attn_implementation=model.config._attn_implementation)
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(unlearned(input_ids=ids).logits, model(input_ids=ids).logits)  # text knowledge intact
    changed = [n for (n, p), q in zip(unlearned.named_parameters(), model.parameters()) if not torch.equal(p, q)]
    assert changed and all("multi_modal_projector" in n or "layers.2." in n for n in changed)
    assert "unlearned in" in out.stdout
    # VKD with a vision tap never runs W: the CLI took the visual-only path and said so, and the export
    # rewrote the shard with the trained tensors from the base folder
    assert "loading only the vision tower and projector" in out.stdout and result["visual_only"] is True
    assert result["export"]["rewritten"] == ["model.safetensors"]
    # --full-model trains the same weights bit for bit
    full = _run("unlearn", str(tmp_path / "model"), "--forget", str(forget), "--retain", str(retain), "--output-dir",
                str(tmp_path / "run-full"), "--config", str(tmp_path / "cfg.yaml"), "steps=6", "vkd.metric=mse",
                "--full-model", "--save", "delta", cwd=tmp_path)
    assert full.returncode == 0 and "loading only" not in full.stdout, full.stderr
    from safetensors.torch import load_file

    delta = load_file(tmp_path / "run-full" / "delta.safetensors")
    trained = dict(unlearned.named_parameters())
    assert delta and all(torch.equal(trained[n], t) for n, t in delta.items())
    # `vkd-fast export` from a run folder (its delta.safetensors) gives the same model as --save full
    exported = _run("export", str(tmp_path / "model"), str(tmp_path / "run-full"), str(tmp_path / "exported"),
                    cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    again_model = AutoModelForImageTextToText.from_pretrained(tmp_path / "exported",
                                                              attn_implementation=model.config._attn_implementation)
    assert all(torch.equal(p, trained[n]) for n, p in again_model.named_parameters())


    again = _run("unlearn", str(tmp_path / "model"), "--forget", str(forget), "--retain", str(retain), "--output-dir",
                 str(tmp_path / "run"), "--config", str(tmp_path / "cfg.yaml"), "steps=6", "vkd.metric=mse", cwd=tmp_path)
    assert again.returncode == 2 and "already holds this run; pass resume=True" in again.stderr
    other = _run("unlearn", str(tmp_path / "model"), "--forget", str(forget), "--retain", str(retain), "--output-dir",
                 str(tmp_path / "run"), "--config", str(tmp_path / "cfg.yaml"), "steps=6", cwd=tmp_path)
    assert other.returncode == 2 and "holds a different run (options differ: vkd.metric)" in other.stderr
    before = (tmp_path / "run" / "result.json").read_bytes()
    done = _run("unlearn", str(tmp_path / "model"), "--forget", str(forget), "--retain", str(retain), "--output-dir",
                str(tmp_path / "run"), "--config", str(tmp_path / "cfg.yaml"), "steps=6", "vkd.metric=mse", "--resume",
                cwd=tmp_path)
    assert done.returncode == 0 and "already finished at step 6" in done.stdout, done.stderr
    assert (tmp_path / "run" / "result.json").read_bytes() == before  # the run's summary is kept


@pytest.mark.slow
def test_unlearn_cli_bf16_checkpoint_trains_in_fp32_on_both_paths(tmp_path):
    """A hub checkpoint is bf16: both loading paths train in float32 by default and agree bit for bit;
    --dtype auto loads the checkpoint's dtype, and the trained tensors are still float32
    (trained_dtype) unless trained_dtype=null keeps them as loaded."""
    T.tiny_llava().to(torch.bfloat16).save_pretrained(tmp_path / "model")
    forget = _image_dir(tmp_path / "forget", 2, [200.0, 0.0, 0.0], 0)
    retain = _image_dir(tmp_path / "retain", 2, [0.0, 0.0, 200.0], 1)
    from safetensors.torch import load_file

    deltas = {}
    for flag in ("--visual-only", "--full-model"):
        out = _run("unlearn", str(tmp_path / "model"), "--forget", str(forget), "--retain", str(retain),
                   "--output-dir", str(tmp_path / flag), flag, "--save", "delta", "steps=2", "batch_size=1",
                   "--person-per-image", cwd=tmp_path)  # flat folders: each image a person of its own
        assert out.returncode == 0, out.stderr
        deltas[flag] = load_file(tmp_path / flag / "delta.safetensors")
    a, b = deltas["--visual-only"], deltas["--full-model"]
    assert a.keys() == b.keys() and all(a[n].dtype == torch.float32 and torch.equal(a[n], b[n]) for n in a)
    for extra, dtype in (([], torch.float32), (["trained_dtype=null"], torch.bfloat16)):
        run = tmp_path / f"auto{len(extra)}"
        auto = _run("unlearn", str(tmp_path / "model"), "--forget", str(forget), "--retain", str(retain),
                    "--output-dir", str(run), "--dtype", "auto", "--save", "delta", "steps=1", "batch_size=1",
                    "--person-per-image", *extra, cwd=tmp_path)
        assert auto.returncode == 0, auto.stderr
        assert "a local model's weights: the checkpoint's dtype" in auto.stderr
        assert {t.dtype for t in load_file(run / "delta.safetensors").values()} == {dtype}, extra


@pytest.mark.slow
def test_unlearn_cli_errors_and_help(tmp_path):
    help_text = _run("unlearn", "--help", cwd=tmp_path).stdout
    import dataclasses

    import vkd_fast as vf

    for f in dataclasses.fields(vf.UnlearnConfig):
        assert f"  {f.name} " in help_text  # every option is documented
    for name in vf.available_methods():  # and every method's, with its default
        for f in dataclasses.fields(vf.methods.get_method(name).Options):
            assert f"  {name}.{f.name} " in help_text, (name, f.name)
    assert "  vkd.forget_target" in help_text and "[default: 'retain_person']" in help_text
    images = _image_dir(tmp_path / "imgs", 2, [0.0, 0.0, 0.0], 0)
    bad = _run("unlearn", str(tmp_path), "--forget", str(images), "--retain", str(images), "--output-dir",
               str(tmp_path / "run"), "stpes=3", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown option(s) stpes" in bad.stderr
    for word, message in (("vkd.stpes=3", "unknown vkd option(s) stpes"),
                          ("npo.beta=0.1", "option npo.beta: addresses method 'npo', but the method run is 'vkd'"),
                          ("lr=fast", "option lr: expected float, got 'fast'"),
                          ("vkd.metric=l3", "metric must be one of 'mse', 'cosine', 'smooth_l1', got 'l3'")):
        bad = _run("unlearn", str(tmp_path), "--forget", str(images), "--retain", str(images), "--output-dir",
                   str(tmp_path / "run"), word, cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr, (word, bad.stderr)
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = _run("unlearn", str(tmp_path), "--forget", str(empty), "--retain", str(images), "--output-dir", str(tmp_path / "r2"),
               cwd=tmp_path)
    assert bad.returncode == 2 and "holds no image files" in bad.stderr
    # checked before any model is loaded (the model path does not even exist) or any work is done
    (tmp_path / "a-file").write_text("x")
    missing = str(tmp_path / "no-such-model")
    for extra, message in ((["--method", "foo"], "invalid choice: 'foo'"),
                           (["lr=nan"], "UnlearnConfig.lr must be a finite number"),
                           (["vkd.lambda_forget=inf"], "VKDOptions.lambda_forget must be a finite number"),
                           (["vkd.trainable=everything"], "trainable must be"),
                           (["warmup_steps=2.5"], "warmup_steps"),
                           (["device=tpu"], "device must be 'auto', a torch device"),
                           ([f"log_path={tmp_path}"], "is a folder; give a file name"),
                           ([f"log_path={tmp_path / 'a-file' / 'log.jsonl'}"], "is a file, not a folder")):
        bad = _run("unlearn", missing, "--forget", str(images), "--retain", str(images), "--output-dir",
                   str(tmp_path / "r3"), *extra, cwd=tmp_path)
        last = bad.stderr.strip().splitlines()[-1]  # argparse's own errors come after its usage line
        assert bad.returncode == 2 and message in last and "Traceback" not in bad.stderr, (extra, bad.stderr)
    bad = _run("unlearn", missing, "--forget", str(images), "--retain", str(images), "--output-dir",
               str(tmp_path / "a-file"), cwd=tmp_path)
    assert bad.returncode == 2 and "is a file; choose a folder" in bad.stderr
    for extra, message in ((["--batch-size", "0"], "--batch-size must be >= 1"),
                           (["--output", str(tmp_path)], "is a folder; give a file name")):
        bad = _run("eval", missing, *extra, cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr and bad.stderr.count("\n") == 1, (extra, bad.stderr)


@pytest.mark.slow
def test_unlearn_cli_baseline_from_jsonl(tmp_path):
    model = T.tiny_llava()
    model.save_pretrained(tmp_path / "model")
    T.tiny_tokenizer().save_pretrained(tmp_path / "model")
    images = _image_dir(tmp_path / "imgs", 4, [100.0, 50.0, 0.0], 2)
    for name, answer in (("forget", "baker"), ("retain", "pilot")):
        rows = [json.dumps({"image": f"imgs/{p.name}", "question": "what is the job of this person ?",
                            "answer": answer}) for p in sorted(images.iterdir())]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
    out = _run("unlearn", str(tmp_path / "model"), "--forget", str(tmp_path / "forget.jsonl"), "--retain",
               str(tmp_path / "retain.jsonl"), "--output-dir", str(tmp_path / "run"), "--method", "grad_diff",
               "--save", "delta", "steps=4", "batch_size=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["method"] == "grad_diff" and result["steps_run"] == 4
    assert result["last"]["ce_forget"] > result["first"]["ce_forget"]
    assert (tmp_path / "run" / "delta.safetensors").exists()
    assert "unlearned in" in out.stdout and "nan" not in out.stdout  # a baseline's summary line has no NaNs
