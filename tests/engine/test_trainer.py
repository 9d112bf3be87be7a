"""The trainer (vkd_fast.engine.trainer): seeding, logging, the first-step gradient check, validation
before any work, early stopping, gradient accumulation, interleaved batches, devices, LoRA."""

from __future__ import annotations

import json

import _tiny_models as T
import pytest
import torch
from _items import CFG, FORGET, RETAIN, _images, qa

import vkd_fast as vf


def test_seeded_runs_are_identical_on_cpu():
    a = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**CFG, seed=3)).model
    b = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**CFG, seed=3)).model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_llava_next_variable_token_counts_and_log(tmp_path):
    log = tmp_path / "steps.jsonl"
    model = T.tiny_llava_next()
    cfg = vf.UnlearnConfig(**{**CFG, "steps": 5}, log_path=str(log), log_every=2)
    # retain_mean: with per-image targets LLaVA-NeXT's image_newline rows equal their targets, so that
    # tensor gets no gradient and the first-step check stops the run (test_dead_trainable_tensor_is_named)
    vf.unlearn(model, FORGET, RETAIN, config=cfg,
               options={"trainable": "projector", "tap": "projector", "forget_target": "retain_mean"})
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 5]
    assert {"loss", "loss_retain", "loss_forget", "lr", "tokens_per_s", "peak_rss_bytes"} <= set(lines[0])


def test_dead_trainable_tensor_is_named():
    # all images 32x32: LLaVA-NeXT's image_newline rows are the same in every image, so the retain
    # mean anchor equals them and image_newline gets exactly zero gradient in the first step
    square = _images(4, [200.0, 0.0, 0.0], 2, sizes=((32, 32),))
    with pytest.raises(RuntimeError, match=r"1 trainable tensors got no gradient in the first step.*model.image_newline"):
        vf.unlearn(T.tiny_llava_next(), square, _images(4, [0.0, 0.0, 200.0], 3, sizes=((32, 32),)),
                   config=vf.UnlearnConfig(**CFG),
                   options={"trainable": "projector", "tap": "projector", "forget_target": "retain_mean"})


def test_bad_input_is_rejected_before_any_work():
    model = T.tiny_llava()
    cases = [
        (lambda: vf.unlearn(model, FORGET, RETAIN, method="dpo"), ValueError, "method must be one of 'ga'"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, method="ga"), ValueError, "needs tokenizer"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, method="npo", tokenizer=T.tiny_tokenizer()), ValueError,
         r"forget items \[0, 1, 2, 3\] carry no question/answer"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, eval_every=2), ValueError, "eval_every needs eval_fn"),
        (lambda: vf.unlearn(model, [], RETAIN), ValueError, "forget is empty"),
        (lambda: vf.unlearn(model, FORGET, [{"img": 1}]), ValueError, r"retain\[0\] must be a dict with an 'image'"),
        (lambda: vf.unlearn(model, FORGET, 3), TypeError, "retain must be a sequence"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, config={"steps": 1}), TypeError, "config must be a vkd_fast.UnlearnConfig"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, options={"teacher": "gpu"}), ValueError, "teacher must be one of"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, options={"stpes": 3}), ValueError, r"unknown vkd option\(s\) stpes"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, options=3), TypeError, "options of method 'vkd' must be a VKDOptions"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, method=vf.methods.VKD(), options={"tap": "projector"}), ValueError,
         "options= goes with a method name"),
        (lambda: vf.methods.VKDOptions(forget_target="away"), ValueError, "forget_target must be one of"),
        (lambda: vf.methods.VKDOptions(tap="text:1"), ValueError, "tap must be 'vision:feature', 'vision:<block>', 'projector' or 'llm:<layer>'"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, options={"tap": "llm:1"}), ValueError,
         "needs tokenizer"),
        (lambda: vf.UnlearnConfig(steps=0), ValueError, "steps must be a positive int"),
        (lambda: vf.UnlearnConfig(lr=-1.0), ValueError, "lr must be > 0"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, options={"tap": "vision:9"}), ValueError,
         "the vision tower has 4 blocks"),
    ]
    for fn, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fn()
    assert vf.available_methods() == ["ga", "grad_diff", "kl_min", "mmunlearner", "npo", "vkd", "vkd_robust"]


def test_early_stopping_on_an_evaluation():
    calls = []

    def forget_acc(model):
        calls.append(1)
        return 1.0 / len(calls)  # 1.0, 0.5, 0.33, ...

    result = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**CFG), eval_fn=forget_acc,
                        eval_every=2, stop_at=0.4)
    assert [r["step"] for r in result.history if "eval" in r] == [2, 4, 6] and len(result.history) == 6


def test_gradient_accumulation_matches_the_whole_batch():
    whole = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**{**CFG, "batch_size": 4})).model
    accum = vf.unlearn(T.tiny_llava(), FORGET, RETAIN,
                       config=vf.UnlearnConfig(**{**CFG, "batch_size": 4, "grad_accum": 2})).model
    for (n, p), q in zip(whole.named_parameters(), accum.parameters()):
        if n.endswith("k_proj.bias"):
            # softmax is invariant to a key bias: its true gradient is 0 and AdamW turns the rounding
            # noise of either summation order into full +-lr steps, so it is not comparable
            continue
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")
    with pytest.raises(ValueError, match="batch_size=3 must be divisible by the 1 processes x grad_accum=2"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**{**CFG, "grad_accum": 2}))


@pytest.mark.parametrize("method", ["vkd", "grad_diff"])
def test_interleaved_batches_alternate_sides(method):
    kw = {} if method == "vkd" else {"tokenizer": T.tiny_tokenizer()}
    forget, retain = (FORGET, RETAIN) if method == "vkd" else (qa(FORGET, "baker"), qa(RETAIN, "pilot"))
    cfg = vf.UnlearnConfig(**{**CFG, "steps": 6}, batch_mode="interleaved")
    h = vf.unlearn(T.tiny_llava(), forget, retain, method=method, config=cfg, **kw).history
    if method == "vkd":
        assert all(r["loss_retain"] == 0.0 for r in h[0::2]) and all(r["loss_forget"] == 0.0 for r in h[1::2])
        assert h[2]["loss_forget"] < h[0]["loss_forget"]
    else:
        assert all("ce_retain" not in r for r in h[0::2]) and all("ce_forget" not in r for r in h[1::2])


def test_device_option_runs_in_place():
    result = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**{**CFG, "steps": 2}, device="cpu"))
    assert len(result.history) == 2


@pytest.mark.parametrize("method", ["vkd", "grad_diff"])
def test_lora_runs(method):
    # LoRA's B starts at zero, so A's first gradient is exactly zero: that must not count as dead
    kw = {} if method == "vkd" else {"tokenizer": T.tiny_tokenizer()}
    forget, retain = (FORGET, RETAIN) if method == "vkd" else (qa(FORGET, "baker"), qa(RETAIN, "pilot"))
    cfg = vf.UnlearnConfig(**{**CFG, "steps": 3})
    result = vf.unlearn(T.tiny_llava(), forget, retain, method=method, config=cfg, options={"lora": {"r": 4, "lora_alpha": 8}},
                        **kw)
    assert result.trainable["lora"] and all("lora_" in n for n in result.trainable["names"])
    a = [p for n, p in result.model.named_parameters() if ".lora_B." in n]
    assert a and any(torch.any(p != 0) for p in a)  # B moved off zero


def test_steps_default_to_the_methods_own():
    from vkd_fast.methods import VKD, create_method

    assert vf.UnlearnConfig().steps is None
    assert vf.UnlearnConfig().for_method(create_method("vkd")).steps == 600  # VKD.default_steps
    assert vf.UnlearnConfig().for_method(create_method("ga")).steps == 300
    assert vf.UnlearnConfig(steps=7).for_method(create_method("vkd")).steps == 7  # an explicit value wins
    with pytest.raises(ValueError, match="steps must be a positive int"):
        vf.UnlearnConfig(steps=0)

    class Short(VKD):
        default_steps = 3

    cfg = vf.UnlearnConfig(batch_size=2, lr=3e-3)
    result = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, method=Short(), config=cfg)
    assert len(result.history) == 3 and result.config["steps"] == 3  # trained and recorded: the resolved value


def test_frozen_parts_in_bf16_train_in_fp32(capsys):
    # the accelerator default: a model loaded in bf16 keeps bf16 where it is frozen, and the tensors
    # that train become float32 (AdamW state and updates in full precision)
    forget = [{**it, "identity": f"f{i}"} for i, it in enumerate(FORGET)]
    retain = [{**it, "identity": f"r{i % 3}"} for i, it in enumerate(RETAIN)]
    model = T.tiny_llava().to(torch.bfloat16)
    result = vf.unlearn(model, forget, retain, config=vf.UnlearnConfig(**{**CFG, "steps": 2}), progress=True)
    trained = set(result.trainable["names"])
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert trained and {dtypes[n] for n in trained} == {torch.float32}
    assert {d for n, d in dtypes.items() if n not in trained} == {torch.bfloat16}
    assert "vkd_fast: training vkd on cpu (" in capsys.readouterr().err
    kept = T.tiny_llava().to(torch.bfloat16)
    vf.unlearn(kept, forget, retain, config=vf.UnlearnConfig(**{**CFG, "steps": 1}, trained_dtype=None))
    assert {p.dtype for p in kept.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("method", ["vkd", "mmunlearner"])
def test_phases_driven_by_hand_give_unlearns_result(method, tmp_path):
    """prepare / build / train / finish one by one: the same weights, history and statistics as unlearn()
    (mmunlearner: saliency masks in build), with the run's parts readable between the phases."""
    from vkd_fast.engine import Trainer

    qa_method = method != "vkd"
    forget, retain = (qa(FORGET, "baker"), qa(RETAIN, "pilot")) if qa_method else (FORGET, RETAIN)
    kw = {"tokenizer": T.tiny_tokenizer(), "options": {"mask_ratio": 0.5, "mask_batches": 2}} if qa_method else {}
    cfg = vf.UnlearnConfig(**{**CFG, "steps": 6}, grad_accum=3, save_every=2)
    whole = vf.unlearn(T.tiny_llava(), forget, retain, method=method,
                       config=vf.UnlearnConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "a")}), **kw)
    trainer = Trainer(T.tiny_llava(), forget, retain, method,
                      vf.UnlearnConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "b")}), **kw)
    trainer.prepare()
    assert trainer.method.name == method and trainer.run_dir == tmp_path / "b" and trainer.world_size == 1
    trainer.build()
    assert len(trainer.plan) == 6 * 3 and trainer.start_step == 0
    assert {n for n, _ in trainer.named} == set(trainer.trainable["names"])
    trainer.train()
    assert [r["step"] for r in trainer.history.done] == list(range(1, 7))
    result = trainer.finish()
    assert [n for n, _ in whole.model.named_parameters()] == [n for n, _ in result.model.named_parameters()]
    assert all(torch.equal(p, q) for p, q in zip(whole.model.parameters(), result.model.parameters()))
    timing = ("step_seconds", "tokens_per_s", "peak_rss_bytes")
    assert ([{k: v for k, v in r.items() if k not in timing} for r in whole.history]
            == [{k: v for k, v in r.items() if k not in timing} for r in result.history])
    assert whole.trainable == result.trainable and whole.method_stats.keys() == result.method_stats.keys()
    assert not any(p.requires_grad for p in result.model.parameters())
    if method == "vkd":  # the method reports its own statistics (VKD: its teacher cache)
        assert result.method_stats["entries"] == len(FORGET) + len(RETAIN)


def test_phases_run_once_and_in_order():
    from vkd_fast.engine import Trainer

    trainer = Trainer(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**{**CFG, "steps": 1}))
    with pytest.raises(RuntimeError, match=r"Trainer.build\(\) needs prepare\(\) first"):
        trainer.build()
    trainer.prepare()
    with pytest.raises(RuntimeError, match=r"Trainer.prepare\(\) ran already"):
        trainer.prepare()
    with pytest.raises(RuntimeError, match=r"Trainer.train\(\) needs build\(\) first"):
        trainer.train()
    with pytest.raises(RuntimeError, match=r"Trainer.finish\(\) needs build\(\) first"):
        trainer.finish()
    trainer.build()
    trainer.train()
    assert len(trainer.finish().history) == 1
    with pytest.raises(RuntimeError, match=r"Trainer.finish\(\) ran already"):
        trainer.finish()
