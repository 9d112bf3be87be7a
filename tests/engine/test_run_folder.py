"""Run folders, checkpoints, exact resume and exports (vkd_fast.engine.run_folder)."""

from __future__ import annotations

import _tiny_models as T
import pytest
import torch
from _items import CFG, FORGET, RETAIN

import vkd_fast as vf


def test_checkpoint_resume_ends_with_the_uninterrupted_weights(tmp_path):
    # the default forget_augment draws each forget image's view from the run's step generator (its seed);
    # repel's resume, whose noise advances that generator, is tested in tests/experimental (issue 25)
    cfg, opts = CFG, {}
    whole = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**cfg), options=opts).model
    run = tmp_path / "run"
    first = vf.UnlearnConfig(**cfg, output_dir=str(run), save_every=5)
    # an "interrupted" run: the checkpoints of steps 5 and 10 exist; drop 10 and what came after
    vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=first, options=opts)
    import shutil

    shutil.rmtree(run / "checkpoint-10")
    shutil.rmtree(run / f"checkpoint-{cfg['steps']}")
    resumed = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=first, options=opts, resume=True)
    assert resumed.start_step == 5 and resumed.history[0]["step"] == 6
    for (n, p), q in zip(whole.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), n
    assert (run / "teacher.vkdc").exists()


def test_run_dir_guards(tmp_path):
    run = tmp_path / "run"
    cfg = vf.UnlearnConfig(**{**CFG, "steps": 2}, output_dir=str(run))
    vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=cfg)
    with pytest.raises(ValueError, match="already holds this run; pass resume=True"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=cfg)
    other = vf.UnlearnConfig(**{**CFG, "steps": 2, "lr": 1e-2}, output_dir=str(run))
    with pytest.raises(ValueError, match=r"holds a different run \(options differ: lr\)"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=other, resume=True)
    with pytest.raises(ValueError, match="holds no run"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**CFG, output_dir=str(tmp_path / "new")),
                   resume=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(ValueError, match="is not empty and holds no vkd_fast run"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**CFG, output_dir=str(tmp_path / "junk")))
    with pytest.raises(ValueError, match="resume=True needs config.output_dir"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, resume=True)


def test_exports_delta_and_full_model(tmp_path):
    result = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**{**CFG, "steps": 3}))
    result.save_delta(tmp_path / "delta.safetensors")
    fresh = T.tiny_llava()
    names = vf.engine.load_delta(fresh, tmp_path / "delta.safetensors")
    assert names == result.trainable["names"]
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), result.model.parameters()))
    result.save_pretrained(tmp_path / "full")
    loaded = type(result.model).from_pretrained(tmp_path / "full", attn_implementation="eager")
    assert all(torch.equal(p, q) for p, q in zip(loaded.parameters(), result.model.parameters()))
