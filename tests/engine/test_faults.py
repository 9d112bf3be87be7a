"""Faults a run must survive or refuse (vkd_fast.engine): non-finite options refused when made, a
non-finite loss mid-run stops with the last good checkpoint intact and nothing exported, checkpoints
verified by checksum (a flipped byte, an empty or stray folder: the previous good one is used), the
optimizer state in safetensors + JSON (an old pickled checkpoint refused), no pickle in the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _tiny_models as T
import pytest
import torch
from _items import FORGET, RETAIN

import vkd_fast as vf
from vkd_fast.engine import NonFiniteLossError
from vkd_fast.engine.run_folder import CheckpointDamaged, latest_checkpoint, verify_checkpoint

CFG = dict(steps=4, batch_size=2, lr=3e-3, save_every=1)
PACKAGE = Path(vf.__file__).parent


@pytest.mark.parametrize("field,value", [("lr", float("inf")), ("lr", float("nan")), ("grad_clip", float("nan")),
                                         ("weight_decay", float("inf")), ("warmup_steps", 2.5), ("save_every", 0.5),
                                         ("seed", "abc"), ("steps", True), ("device", "tpu"), ("amp", 1)])
def test_bad_trainer_options_are_refused_when_made(field, value):
    with pytest.raises(ValueError, match=field):
        vf.UnlearnConfig(**{field: value})


@pytest.mark.parametrize("field,value", [("lambda_forget", float("nan")), ("lambda_retain", float("inf")),
                                         ("trainable", "everything"), ("lora", "yes"), ("target_people", 1.5),
                                         ("mask", "no"), ("npo_beta", float("-inf"))])
def test_bad_vkd_options_are_refused_when_made(field, value):
    with pytest.raises(ValueError, match=field):
        vf.methods.VKDOptions(**{field: value})


def test_other_configs_are_checked_too():
    from vkd_fast.data import ToyModelConfig, ToyWorldConfig
    from vkd_fast.eval import RelearnConfig

    for make, field, value in ((ToyWorldConfig, "noise_std", float("nan")), (ToyWorldConfig, "seed", 1.5),
                               (ToyModelConfig, "lr", float("inf")), (RelearnConfig, "lr", float("nan")),
                               (RelearnConfig, "steps", 2.0), (vf.methods.NPOOptions, "beta", float("nan"))):
        with pytest.raises(ValueError, match=field):
            make(**{field: value})
    assert vf.UnlearnConfig(lr=1).lr == 1.0 and isinstance(vf.UnlearnConfig(lr=1).lr, float)  # an int is a number


class _NaNAtStep3(vf.methods.VKD):
    """VKD whose third step's loss is NaN (as an exploding run would give)."""

    def step(self, batch, *, upcoming=None, generator=None):
        loss, terms = super().step(batch, upcoming=upcoming, generator=generator)
        self.calls = getattr(self, "calls", 0) + 1
        return (loss * float("nan"), terms) if self.calls == 3 else (loss, terms)


def test_a_non_finite_loss_stops_the_run_with_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"step 3: the loss is not finite .*checkpoint-2"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, method=_NaNAtStep3(),
                   config=vf.UnlearnConfig(**CFG, output_dir=str(run)))
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    verify_checkpoint(run / "checkpoint-2")
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(run / "checkpoint-2" / "trainable.safetensors").values())
    # resuming with a healthy method continues from checkpoint-2 and ends like an uninterrupted run
    resumed = T.tiny_llava()
    vf.unlearn(resumed, FORGET, RETAIN, config=vf.UnlearnConfig(**CFG, output_dir=str(run)), resume=True)
    straight = T.tiny_llava()
    vf.unlearn(straight, FORGET, RETAIN, config=vf.UnlearnConfig(**CFG, output_dir=str(tmp_path / "straight")))
    ps = dict(straight.named_parameters())
    assert all(torch.equal(p, ps[n]) for n, p in resumed.named_parameters())


def _run(tmp_path, name="run", **kw):
    model = T.tiny_llava()
    vf.unlearn(model, FORGET, RETAIN, config=vf.UnlearnConfig(**{**CFG, **kw}, output_dir=str(tmp_path / name)))
    return model


def test_checkpoints_are_verified_and_a_damaged_one_is_skipped(tmp_path):
    final = _run(tmp_path, steps=3)
    run = tmp_path / "run"
    state = json.loads((run / "checkpoint-3" / "state.json").read_text())
    assert state["format"] == 2 and set(state["files"]) == {"trainable.safetensors", "optimizer.safetensors",
                                                             "rng.safetensors"}
    assert not list(run.rglob("*.pt"))  # no pickled optimizer state
    # one flipped byte in the newest checkpoint: detected, reported, the previous one is used
    path = run / "checkpoint-3" / "trainable.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointDamaged, match="does not match its checksum"):
        verify_checkpoint(run / "checkpoint-3")
    (run / "checkpoint-99").mkdir()  # empty: incomplete
    (run / "checkpoint-foo").mkdir()  # stray: ignored
    reports = []
    with pytest.warns(UserWarning, match="checkpoint-99: incomplete"):
        assert latest_checkpoint(run, report=reports.append) == run / "checkpoint-2"
    assert len(reports) == 2 and "checkpoint-3" in reports[1]
    # resuming from checkpoint-2 redoes step 3 and ends with the uninterrupted run's weights
    resumed = T.tiny_llava()
    with pytest.warns(UserWarning):
        vf.unlearn(resumed, FORGET, RETAIN, config=vf.UnlearnConfig(**{**CFG, "steps": 3}, output_dir=str(run)),
                   resume=True)
    pf = dict(final.named_parameters())
    assert all(torch.equal(p, pf[n]) for n, p in resumed.named_parameters())


def test_an_old_pickled_checkpoint_is_refused(tmp_path):
    import shutil

    _run(tmp_path, steps=2)
    shutil.rmtree(tmp_path / "run" / "checkpoint-2")
    ckpt = tmp_path / "run" / "checkpoint-1"
    (ckpt / "optimizer.pt").write_bytes(b"\x80\x04N.")  # what torch.save wrote before (never unpickled)
    with pytest.raises(ValueError, match="older vkd_fast .* never loads"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**{**CFG, "steps": 2},
                                                                         output_dir=str(tmp_path / "run")), resume=True)


def test_the_package_never_pickles():
    out = subprocess.run(["git", "grep", "-n", "-E", r"torch\.load|torch\.save|import pickle", "--", "vkd_fast"],
                         cwd=PACKAGE.parent, capture_output=True, text=True, check=False)
    if out.returncode == 128:  # not a git checkout (an installed copy): scan the files directly
        hits = [f"{p}:{i}" for p in PACKAGE.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
                if any(s in line for s in ("torch.load", "torch.save", "import pickle"))]
    else:
        hits = out.stdout.splitlines()
    assert hits == []


@pytest.mark.slow
def test_the_cli_exports_nothing_after_a_non_finite_loss(tmp_path):
    T.tiny_llava().save_pretrained(tmp_path / "model")
    plugin = tmp_path / "nan_method.py"
    plugin.write_text("import vkd_fast as vf\n"
                      "class NaNVKD(vf.methods.VKD):\n"
                      "    def step(self, batch, **kw):\n"
                      "        loss, terms = super().step(batch, **kw)\n"
                      "        self.calls = getattr(self, 'calls', 0) + 1\n"
                      "        return (loss * float('nan'), terms) if self.calls == 2 else (loss, terms)\n"
                      "vf.register_method('nanvkd', NaNVKD)\n")
    from PIL import Image

    for side in ("forget", "retain"):
        (tmp_path / side).mkdir()
        for i in range(2):
            Image.new("RGB", (32, 32), (200 * (side == "forget"), 50 * i, 90)).save(tmp_path / side / f"{i}.png")
    exe = str(Path(sys.executable).with_name("vkd-fast"))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([exe, "unlearn", str(tmp_path / "model"), "--plugin", str(plugin), "--method", "nanvkd",
                          "--forget", str(tmp_path / "forget"), "--retain", str(tmp_path / "retain"),
                          "--output-dir", str(tmp_path / "run"), "steps=3", "batch_size=1", "save_every=1",
                          "--person-per-image"],  # flat folders: each image a person of its own
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    errors = [line for line in out.stderr.splitlines() if "error" in line]  # besides the progress lines
    assert out.returncode == 2 and len(errors) == 1 and errors[0].startswith("vkd-fast unlearn: error: "), out.stderr
    assert "step 2: the loss is not finite" in errors[0] and "checkpoint-1" in errors[0]
    left = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert "model" not in left and "delta.safetensors" not in left and "result.json" not in left
    assert "checkpoint-1" in left and "checkpoint-2" not in left


def test_resume_refuses_another_model_or_other_data(tmp_path):
    run = tmp_path / "run"
    cfg = vf.UnlearnConfig(**{**CFG, "steps": 3}, output_dir=str(run))
    with pytest.raises(NonFiniteLossError):  # an interrupted run: checkpoints 1 and 2
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, method=_NaNAtStep3(), config=cfg)
    other = T.tiny_llava()
    with torch.no_grad():
        other.lm_head.weight.mul_(1.5)  # another language model, the same vision side (toy:gold for toy:vanilla)
    with pytest.raises(ValueError, match="resume refused: the model's language model weights differ"):
        vf.unlearn(other, FORGET, RETAIN, config=cfg, resume=True)
    unlearned = T.tiny_llava()
    vf.unlearn(unlearned, FORGET, RETAIN, config=vf.UnlearnConfig(steps=1, batch_size=2))
    with pytest.raises(ValueError, match="vision tower / projector weights differ"):  # not the original model
        vf.unlearn(unlearned, FORGET, RETAIN, config=cfg, resume=True)
    with pytest.raises(ValueError, match="resume refused: the retain data differ"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN[::-1], config=cfg, resume=True)
    with pytest.raises(ValueError, match="the forget data differ"):
        vf.unlearn(T.tiny_llava(), [{**FORGET[0], "question": "other?"}, *FORGET[1:]], RETAIN, config=cfg,
                   resume=True)
    vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=cfg, resume=True)  # the right ones: it completes
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(vf.engine.RunFinished, match="already finished at step 3"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=cfg, resume=True)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing changed


def test_images_are_pil_or_local_paths_and_urls_are_refused(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("vkd_fast tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    items = [dict(it) for it in FORGET]
    items[1]["image"] = "http://127.0.0.1:9/x.png"
    with pytest.raises(ValueError, match=r"forget\[1\]\['image'\] is a URL .*never reads the network"):
        vf.unlearn(T.tiny_llava(), items, RETAIN, config=vf.UnlearnConfig(steps=1, batch_size=2))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    items[1]["image"] = str(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"forget\[1\]\['image'\]: cannot read the image file"):
        vf.unlearn(T.tiny_llava(), items, RETAIN, config=vf.UnlearnConfig(steps=1, batch_size=2))
    items[1]["image"] = 7
    with pytest.raises(ValueError, match="must be a PIL image or a local image path"):
        vf.unlearn(T.tiny_llava(), items, RETAIN, config=vf.UnlearnConfig(steps=1, batch_size=2))
    # a local path trains exactly as the PIL image it holds
    paths = []
    for i, it in enumerate(FORGET):
        it["image"].save(tmp_path / f"{i}.png")
        paths.append({**it, "image": tmp_path / f"{i}.png"})
    a, b = T.tiny_llava(), T.tiny_llava()
    vf.unlearn(a, paths, RETAIN, config=vf.UnlearnConfig(steps=2, batch_size=2))
    vf.unlearn(b, [{**it, "image": it["image"].convert("RGB")} for it in FORGET], RETAIN,
               config=vf.UnlearnConfig(steps=2, batch_size=2))
    pb = dict(b.named_parameters())
    assert all(torch.equal(p, pb[n]) for n, p in a.named_parameters())


def test_a_batch_that_cannot_fit_is_refused_before_the_first_step(tmp_path):
    model = T.tiny_llava()
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"batch_size=10000000: a micro-batch .* needs about [\d.]+ GiB of activations "
                                         r"\([\d.]+ MiB per pair, measured\), more than the [\d.]+ GiB available"):
        vf.unlearn(model, FORGET, RETAIN, config=vf.UnlearnConfig(steps=1, batch_size=10**7))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # no step was taken
    # the output-level baselines measure theirs too (a forward through the whole model)
    from _items import qa

    tok = T.tiny_tokenizer()
    for name in ("grad_diff", "npo"):
        with pytest.raises(ValueError, match=r"batch_size=10000000: .* GiB of activations"):
            vf.unlearn(T.tiny_llava(), qa(FORGET, "baker"), qa(RETAIN, "pilot"), method=name, tokenizer=tok,
                       config=vf.UnlearnConfig(steps=1, batch_size=10**7))
    # the measurement is what a forward keeps: twice the pairs, twice the bytes (within the shared parts)
    m = vf.methods.VKD()
    m.prepare(T.tiny_llava(), FORGET, RETAIN)
    one, two = m.activation_bytes(vf.methods.Batch([0], [0])), m.activation_bytes(vf.methods.Batch([0, 1], [0, 1]))
    assert one > 0 and 1.5 * one < two <= 2 * one + 4096
