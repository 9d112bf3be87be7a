"""Fuzz over the public surface: random and hostile values for every config field, the loss's
arguments, data files and the CLI's options and data specs. Each must either work or raise one clear
``ValueError`` / ``TypeError`` (the CLI: exit 2, one line) -- never another exception, a traceback, a
hang or a silently non-finite setting. (The cache file's byte-flip fuzz is in tests/cache.)"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vkd_fast as vf
from vkd_fast.data import ToyModelConfig, ToyWorldConfig
from vkd_fast.demo import DemoConfig
from vkd_fast.eval import RelearnConfig

HOSTILE = [None, True, False, 0, -1, 2**70, 0.5, -0.0, float("nan"), float("inf"), float("-inf"), "", "x", "1e-3",
           [], [1], {}, {"a": 1}, (), object(), b"\x00"]
CONFIGS = [vf.UnlearnConfig, vf.methods.VKDOptions, vf.methods.QAOptions, vf.methods.NPOOptions,
           vf.methods.MMUnlearnerOptions, ToyWorldConfig, ToyModelConfig, RelearnConfig, DemoConfig]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_field_takes_hostile_values_cleanly(cls):
    for f in dataclasses.fields(cls):
        for value in HOSTILE:
            try:
                made = cls(**{f.name: value})
            except (ValueError, TypeError) as exc:
                assert f.name in str(exc) or "must" in str(exc), (cls.__name__, f.name, value, exc)
                continue
            stored = getattr(made, f.name)
            if isinstance(stored, float):
                assert math.isfinite(stored), (cls.__name__, f.name, value)


def test_the_loss_refuses_malformed_arguments_cleanly():
    rng = random.Random(0)
    shapes = [(4, 8), (4,), (0, 8), (4, 8, 2), (3, 8), (4, 7)]
    dtypes = [torch.float32, torch.bfloat16, torch.float64, torch.int64]
    for _ in range(150):
        s_shape, t_shape = rng.choice(shapes), rng.choice(shapes)
        s_dt, t_dt = rng.choice(dtypes), rng.choice(dtypes)
        student = (torch.randn(s_shape) * 10).to(s_dt) if s_dt != torch.int64 else torch.ones(s_shape, dtype=s_dt)
        target = (torch.randn(t_shape) * 10).to(t_dt) if t_dt != torch.int64 else torch.ones(t_shape, dtype=t_dt)
        kwargs = rng.choice([{}, {"metric": rng.choice(["mse", "cosine", "l7", None])},
                             {"reduction": rng.choice(["mean", "sum", "none", "avg"])},
                             {"target_index": torch.tensor(rng.choice([[0, 1, 2, 3], [0, 9, 1, 2], [-1, 0, 0, 0]]))},
                             {"weight": rng.choice([torch.ones(4), torch.ones(3), "w"])}])
        try:
            vf.feature_distill_loss(student, target, backend="reference", **kwargs)
        except (ValueError, TypeError, IndexError):
            continue


@pytest.mark.parametrize("loader", ["load_mllmu_train", "load_mllmu_eval", "load_clear_train", "load_clear_eval"])
def test_loaders_on_garbage_files_raise_data_format_errors(tmp_path, loader):
    import vkd_fast.data as D

    rng = random.Random(1)
    for i, payload in enumerate([b"", b"PAR1", b"PAR1" + bytes(rng.randrange(256) for _ in range(300)) + b"PAR1",
                                 b'{"image": 1}\n', bytes(range(256))]):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        (folder / "train-00000.parquet").write_bytes(payload)
        with pytest.raises(ValueError):  # DataFormatError (a ValueError) naming the file
            getattr(D, loader)(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        getattr(D, loader)(tmp_path / "does-not-exist")


EXE = str(Path(sys.executable).with_name("vkd-fast"))


@pytest.mark.slow
def test_cli_options_and_data_specs_fail_in_one_line(tmp_path):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (8, 8)).save(imgs / "a.png")
    (tmp_path / "fake.png").write_bytes(b"not an image")
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    (fake_dir / "x.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "bad.jsonl").write_text('{"image": "missing.png"}\n')
    (tmp_path / "url.jsonl").write_text('{"image": "http://127.0.0.1:9/x.png"}\n')
    rng = random.Random(2)
    words = ["lr=", "lr=[1", "steps=-3", "steps=1e400", "batch_size=0", "seed=x", "grad_clip=nan", "vkd.tap=llm:x",
             "vkd.metric=", "vkd.lora=yes", "=3", "vkd.=1", "amp=fp8", "device=tpu", "save_every=0.5"]
    specs = [str(tmp_path / "nope"), "mllmu:/nonexistent", "clear:/nonexistent", "toy:nothing", str(fake_dir),
             str(tmp_path / "bad.jsonl"), str(tmp_path / "url.jsonl"), str(tmp_path / "fake.png")]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cases = [(["--forget", str(imgs), "--retain", str(imgs), w], w) for w in words]
    cases += [(["--forget", s, "--retain", str(imgs)], s) for s in specs]
    cases += [(["--forget", str(imgs), "--retain", str(imgs), rng.choice(words), rng.choice(words)], "pair")
              for _ in range(4)]
    (tmp_path / "bad.yaml").write_text("steps: [1\n")
    cases += [(["--forget", str(imgs), "--retain", str(imgs), "--config", str(tmp_path / "bad.yaml")], "bad yaml"),
              (["--forget", str(imgs), "--retain", str(imgs), "--config", str(tmp_path / "none.yaml")], "no yaml")]
    for extra, what in cases:
        out = subprocess.run([EXE, "unlearn", "toy:vanilla", "--output-dir", str(tmp_path / "run"), *extra],
                             capture_output=True, text=True, env=env, timeout=300, check=False)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and "Traceback" not in out.stderr, (what, out.stderr[-2000:])
        assert lines and "error:" in lines[-1], (what, out.stderr)
    assert not (tmp_path / "run").exists()  # nothing was started
    bad_model = tmp_path / "bad-model"
    bad_model.mkdir()
    (bad_model / "config.json").write_text("{not json")
    for args in (["eval", str(bad_model)], ["unlearn", str(bad_model), "--full-model", "--forget", str(imgs), "--retain",
                                           str(imgs), "--output-dir", str(tmp_path / "run2"), "--person-per-image"]):
        out = subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300, check=False)
        assert out.returncode == 2 and "Traceback" not in out.stderr and "cannot be loaded" in out.stderr, out.stderr
