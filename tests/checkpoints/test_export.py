"""export_unlearned (vkd_fast.checkpoints.export): a complete checkpoint folder written without the
language model in memory -- W bit-identical, V / P the trained ones, unchanged shards copied byte for
byte or hard-linked, atomic (a kill leaves no out_dir), bad deltas refused with nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import _tiny_models as T
import pytest
import torch
from _items import FORGET, RETAIN

import vkd_fast as vf
from vkd_fast.checkpoints import CheckpointError, read_header

FAMILIES = {"llava": T.tiny_llava, "llava_next": T.tiny_llava_next, "qwen2_vl": T.tiny_qwen2_vl,
            "qwen2_5_vl": T.tiny_qwen2_5_vl}


def _base(path, build=T.tiny_llava, sharded=True):
    build().save_pretrained(path, max_shard_size="100KB" if sharded else "10GB")
    T.tiny_tokenizer().save_pretrained(path)
    return path


def _from_pretrained(path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("sharded,link", [(True, False), (True, True), (False, False)],
                         ids=["sharded-copy", "sharded-link", "single"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_export_from_a_visual_only_model(tmp_path, family, sharded, link):
    base = _base(tmp_path / "base", FAMILIES[family], sharded)
    vis = vf.load_visual_model(base)
    result = vf.unlearn(vis, FORGET, RETAIN, config=vf.UnlearnConfig(steps=3, batch_size=2, lr=3e-3))
    report = result.save_pretrained(tmp_path / "out", base=base, link=link)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in base.iterdir())  # config, tokenizer, index
    exported, original = _from_pretrained(out), _from_pretrained(base)
    pe, po, pv = dict(exported.named_parameters()), dict(original.named_parameters()), dict(vis.named_parameters())
    trained = set(result.trainable["names"])
    for n, p in pe.items():
        if n in trained:
            assert torch.equal(p, pv[n]), n  # the unlearned tensors
        else:
            assert torch.equal(p, po[n]), n  # the language model (and untrained V / P), bit for bit
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(exported(input_ids=ids).logits, original(input_ids=ids).logits)
    # shards without a changed tensor are the base's bytes (or the same file); the others were rewritten
    for f in sorted(base.glob("*.safetensors")):
        names = set(read_header(f)[0]) - {"__metadata__"}
        if f.name in report["rewritten"]:
            assert names & set(report["changed"])
        elif link:
            assert f.name in report["linked"] and os.path.samefile(f, out / f.name)
        else:
            assert f.name in report["copied"] and (out / f.name).read_bytes() == f.read_bytes()
    shards = len(list(base.glob("*.safetensors")))
    assert report["rewritten"] and (len(report["rewritten"]) < shards if sharded else shards == 1)
    assert not [p for p in tmp_path.iterdir() if ".vkd-export-" in p.name]  # nothing left beside out_dir


def test_export_from_a_delta_file_and_the_cli(tmp_path):
    base = _base(tmp_path / "base")
    full = _from_pretrained(base)
    result = vf.unlearn(full, FORGET, RETAIN, config=vf.UnlearnConfig(steps=2, batch_size=2, lr=3e-3))
    result.save_delta(tmp_path / "delta.safetensors")
    report = vf.export_unlearned(base, tmp_path / "delta.safetensors", tmp_path / "out")
    assert set(report["changed"]) and _same_params(_from_pretrained(tmp_path / "out"), full)
    with pytest.raises(CheckpointError, match="exists; choose a new folder or pass overwrite=True"):
        vf.export_unlearned(base, tmp_path / "delta.safetensors", tmp_path / "out")
    vf.export_unlearned(base, tmp_path / "delta.safetensors", tmp_path / "out", overwrite=True)
    exe = str(Path(sys.executable).with_name("vkd-fast"))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cli = subprocess.run([exe, "export", str(base), str(tmp_path / "delta.safetensors"), str(tmp_path / "cli")],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    assert cli.returncode == 0, cli.stderr
    assert "tensors changed" in cli.stdout and _same_params(_from_pretrained(tmp_path / "cli"), full)
    bad = subprocess.run([exe, "export", str(base), str(tmp_path / "delta.safetensors"), str(tmp_path / "cli")],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "exists" in bad.stderr


def _same_params(a, b) -> bool:
    pb = dict(b.named_parameters())
    return all(torch.equal(p, pb[n]) for n, p in a.named_parameters())


def test_bad_deltas_write_nothing(tmp_path):
    base = _base(tmp_path / "base")
    name = next(n for n, _ in T.tiny_llava().named_parameters() if "multi_modal_projector" in n and "weight" in n)
    shape = dict(T.tiny_llava().named_parameters())[name].shape
    cases = [({"model.not_a_tensor": torch.zeros(2)}, "has no tensor for 1 of the model's parameters"),
             ({name: torch.zeros(shape[0] + 1, shape[1])}, "does not match the base's")]
    for delta, message in cases:
        with pytest.raises(CheckpointError, match=message):
            vf.export_unlearned(base, delta, tmp_path / "out")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]
    with pytest.raises(CheckpointError, match="hold LoRA adapter weights"):
        vf.export_unlearned(base, {name.replace(".weight", ".lora_A.default.weight"): torch.zeros(2, 2)},
                            tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]
    with pytest.raises(CheckpointError, match="out_dir is the base folder"):
        vf.export_unlearned(base, {name: torch.zeros(shape)}, base, overwrite=True)


def test_a_kill_during_export_leaves_no_out_dir_and_the_base_untouched(tmp_path):
    base = _base(tmp_path / "base")
    before = {p.name: p.read_bytes() for p in base.iterdir()}
    name = next(n for n, _ in T.tiny_llava().named_parameters() if "multi_modal_projector" in n)
    shape = tuple(dict(T.tiny_llava().named_parameters())[name].shape)
    code = f"""
import os, sys, time, torch
import vkd_fast as vf
import vkd_fast.checkpoints.safetensors_io as S
real = S.write_safetensors
def stall(path, entries, metadata=None):  # the new shard is half done: report, then wait to be killed
    real(path, entries, metadata)
    print("writing", flush=True)
    time.sleep(120)
import vkd_fast.checkpoints.export as E
E.write_safetensors = stall
vf.export_unlearned({str(base)!r}, {{{name!r}: torch.ones{shape}}}, {str(tmp_path / 'out')!r})
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "out" not in left and all(n == "base" or n.startswith(".out.vkd-export-") for n in left)
    assert {p.name: p.read_bytes() for p in base.iterdir()} == before
    vf.export_unlearned(base, {name: torch.ones(shape)}, tmp_path / "out")  # the next export cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "out"]
