"""The unlearning engine (VKD so far) on tiny models."""

from __future__ import annotations

import json

import _tiny_models as T
import pytest
import torch
from PIL import Image

import vkd_fast as vf
import vkd_fast.adapters as A


def _images(n, base, seed, sizes=((32, 32), (32, 64), (64, 32))):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        h, w = sizes[int(torch.randint(0, len(sizes), (1,), generator=g))]
        pixels = (torch.rand(h, w, 3, generator=g) * 60 + torch.tensor(base)).clamp(0, 255).to(torch.uint8)
        out.append({"image": Image.fromarray(pixels.numpy())})
    return out


FORGET = _images(4, [200.0, 0.0, 0.0], 0)
RETAIN = _images(10, [0.0, 0.0, 200.0], 1)
CFG = {"steps": 12, "batch_size": 3, "lr": 3e-3}


@pytest.mark.parametrize("build", [T.tiny_llava, T.tiny_qwen2_vl], ids=["llava", "qwen2_vl"])
def test_vkd_lowers_its_objective_and_leaves_text_exactly_alone(build):
    model = build()
    ad = A.get_adapter(model)
    llm = {n: p.detach().clone() for n, p in model.named_parameters()
           if n.startswith("lm_head") or ".language_model." in n or n.startswith("language_model")}
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        text_before = ad.text_logits(ids)
    with A.count_calls(ad.llm_layers) as llm_calls:
        result = vf.unlearn(model, FORGET, RETAIN, config=vf.UnlearnConfig(**CFG))
    assert llm_calls == []  # the projector-tap VKD step never runs the language model
    h = result.history
    assert len(h) == CFG["steps"] and h[0]["loss_retain"] == 0.0  # the student starts as the teacher
    first_forget = sum(r["loss_forget"] for r in h[:3]) / 3
    last_forget = sum(r["loss_forget"] for r in h[-3:]) / 3
    assert last_forget < 0.5 * first_forget
    with torch.no_grad():
        assert torch.equal(ad.text_logits(ids), text_before)
    for n, p in model.named_parameters():
        if n in llm:
            assert torch.equal(p, llm[n]), n
    assert not any(p.requires_grad for p in model.parameters())
    assert result.trainable["trainable"] > 0 and result.teacher_cache["entries"] == len(FORGET) + len(RETAIN)


def test_cached_teacher_gives_the_live_teacher_loss_curve():
    runs = {}
    for teacher in ("cache", "live"):
        model = T.tiny_llava()
        runs[teacher] = vf.unlearn(model, FORGET, RETAIN, config=vf.UnlearnConfig(**CFG), teacher=teacher)
    for a, b in zip(runs["cache"].history, runs["live"].history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-9)
    pa = dict(runs["cache"].model.named_parameters())
    for n, p in runs["live"].model.named_parameters():
        torch.testing.assert_close(p, pa[n], rtol=1e-5, atol=1e-7)


def test_seeded_runs_are_identical_on_cpu():
    a = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**CFG, seed=3)).model
    b = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**CFG, seed=3)).model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("target", ["misdirect", "repel"])
def test_other_forget_targets(target):
    model = T.tiny_llava()
    cfg = vf.UnlearnConfig(**CFG, forget_target=target, metric="cosine" if target == "misdirect" else "mse")
    h = vf.unlearn(model, FORGET, RETAIN, config=cfg).history
    first, last = h[0]["loss_forget"], h[-1]["loss_forget"]
    assert last < first  # misdirect: closer to the anchor; repel: hinge shrinks as rows move away


def test_llava_next_variable_token_counts_and_log(tmp_path):
    log = tmp_path / "steps.jsonl"
    model = T.tiny_llava_next()
    cfg = vf.UnlearnConfig(**{**CFG, "steps": 5}, log_path=str(log), log_every=2, trainable="projector",
                           tap="projector")
    vf.unlearn(model, FORGET, RETAIN, config=cfg)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 5]
    assert {"loss", "loss_retain", "loss_forget", "lr", "tokens_per_s", "peak_rss_bytes"} <= set(lines[0])


def test_dead_trainable_tensor_is_named():
    # all images 32x32: LLaVA-NeXT's image_newline rows are the same in every image, so the retain
    # mean anchor equals them and image_newline gets exactly zero gradient in the first step
    square = _images(4, [200.0, 0.0, 0.0], 2, sizes=((32, 32),))
    with pytest.raises(RuntimeError, match=r"1 trainable tensors got no gradient in the first step.*model.image_newline"):
        vf.unlearn(T.tiny_llava_next(), square, _images(4, [0.0, 0.0, 200.0], 3, sizes=((32, 32),)),
                   config=vf.UnlearnConfig(**CFG, trainable="projector", tap="projector"))


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
        (lambda: vf.unlearn(model, FORGET, RETAIN, teacher="gpu"), ValueError, "teacher must be one of"),
        (lambda: vf.UnlearnConfig(forget_target="away"), ValueError, "forget_target must be one of"),
        (lambda: vf.UnlearnConfig(tap="text:1"), ValueError, "tap must be 'vision:feature', 'vision:<block>', 'projector' or 'llm:<layer>'"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, config=vf.UnlearnConfig(tap="llm:1")), ValueError,
         "needs tokenizer"),
        (lambda: vf.UnlearnConfig(steps=0), ValueError, "steps must be a positive int"),
        (lambda: vf.UnlearnConfig(lr=-1.0), ValueError, "lr must be > 0"),
        (lambda: vf.unlearn(model, FORGET, RETAIN, config=vf.UnlearnConfig(tap="vision:9")), ValueError,
         "the vision tower has 4 blocks"),
    ]
    for fn, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fn()
    assert vf.available_methods() == ["ga", "grad_diff", "kl_min", "mmunlearner", "npo", "vkd"]


def _qa(items, answer):
    return [{**it, "question": "what is the job of this person ?", "answer": answer} for it in items]


@pytest.mark.parametrize("method", ["ga", "grad_diff", "kl_min", "npo", "mmunlearner"])
def test_output_level_methods_lower_their_objective(method):
    model = T.tiny_llava()
    tok = T.tiny_tokenizer()
    cfg = vf.UnlearnConfig(steps=8, batch_size=2, lr=3e-3, mask_ratio=0.5, mask_batches=2)
    result = vf.unlearn(model, _qa(FORGET, "baker"), _qa(RETAIN, "pilot"), method=method, config=cfg, tokenizer=tok)
    h = result.history
    assert h[-1]["loss"] < h[0]["loss"], [r["loss"] for r in h]
    if method in ("ga", "grad_diff", "npo"):
        assert h[-1]["ce_forget"] > h[0]["ce_forget"]  # the forget answers become less likely
    if method == "kl_min":
        assert h[0]["kl_retain"] == pytest.approx(0.0, abs=1e-6)  # the student starts as the teacher
    if method == "mmunlearner":
        trainable = result.trainable
        assert 0 < trainable["masked_trainable"] < sum(p.numel() for p in model.parameters())
    names = set(result.trainable["names"])
    lm = {n for n, _ in model.named_parameters() if ".language_model." in n or n.startswith("lm_head")}
    assert names & lm  # output-level baselines update the language model


def test_early_stopping_on_an_evaluation():
    calls = []

    def forget_acc(model):
        calls.append(1)
        return 1.0 / len(calls)  # 1.0, 0.5, 0.33, ...

    result = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**CFG), eval_fn=forget_acc,
                        eval_every=2, stop_at=0.4)
    assert [r["step"] for r in result.history if "eval" in r] == [2, 4, 6] and len(result.history) == 6


def test_checkpoint_resume_ends_with_the_uninterrupted_weights(tmp_path):
    cfg = {**CFG, "forget_target": "repel", "metric": "mse"}  # repel also draws noise from the run's generator
    whole = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**cfg)).model
    run = tmp_path / "run"
    first = vf.UnlearnConfig(**cfg, output_dir=str(run), save_every=5)
    # an "interrupted" run: the checkpoints of steps 5 and 10 exist; drop 10 and what came after
    vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=first)
    import shutil

    shutil.rmtree(run / "checkpoint-10")
    shutil.rmtree(run / f"checkpoint-{cfg['steps']}")
    resumed = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=first, resume=True)
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


@pytest.mark.parametrize("build", [T.tiny_llava, T.tiny_qwen2_vl], ids=["llava", "qwen2_vl"])
def test_vkd_with_an_llm_tap_runs_j_frozen_layers(build):
    model = build()
    ad = A.get_adapter(model)
    specials = None if build is T.tiny_llava else T.QWEN_SPECIAL_TOKENS
    tok = T.tiny_tokenizer(specials)
    llm = {n: p.detach().clone() for n, p in model.named_parameters() if ".language_model." in n}
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        text_before = ad.text_logits(ids)
    with A.count_calls(ad.llm_layers) as calls:
        result = vf.unlearn(model, _qa(FORGET, "baker"), RETAIN, config=vf.UnlearnConfig(**CFG, tap="llm:1"),
                            tokenizer=tok)
    assert set(calls) == {0}  # only the first decoder layer ever runs
    h = result.history
    assert h[0]["loss_retain"] == 0.0 and h[-1]["loss_forget"] < 0.5 * h[0]["loss_forget"]
    assert all(torch.equal(p, llm[n]) for n, p in model.named_parameters() if n in llm)
    with torch.no_grad():
        assert torch.equal(ad.text_logits(ids), text_before)


def test_vkd_optional_output_terms():
    model = T.tiny_llava()
    cfg = vf.UnlearnConfig(**CFG, lambda_npo=0.5, lambda_ce=0.5)
    result = vf.unlearn(model, _qa(FORGET, "baker"), _qa(RETAIN, "pilot"), config=cfg, tokenizer=T.tiny_tokenizer())
    h = result.history
    assert {"loss_npo", "loss_ce"} <= set(h[0]) and h[-1]["loss"] < h[0]["loss"]
    assert not set(result.trainable["names"]) & {n for n, _ in model.named_parameters() if ".language_model." in n}
    with pytest.raises(ValueError, match="vkd with lambda_npo / lambda_ce / mask trains on answer tokens and needs tokenizer"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=cfg)
    with pytest.raises(ValueError, match=r"retain items \[0, 1, .*carry no question/answer"):
        vf.unlearn(T.tiny_llava(), _qa(FORGET, "baker"), RETAIN, config=vf.UnlearnConfig(**CFG, lambda_ce=1.0),
                   tokenizer=T.tiny_tokenizer())


@pytest.mark.parametrize("method", ["vkd", "grad_diff"])
def test_interleaved_batches_alternate_sides(method):
    kw = {} if method == "vkd" else {"tokenizer": T.tiny_tokenizer()}
    forget, retain = (FORGET, RETAIN) if method == "vkd" else (_qa(FORGET, "baker"), _qa(RETAIN, "pilot"))
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


def test_vkd_with_a_saliency_mask_updates_only_salient_weights():
    model = T.tiny_llava()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = vf.UnlearnConfig(**CFG, mask=True, mask_ratio=0.3, mask_batches=2)
    result = vf.unlearn(model, _qa(FORGET, "baker"), _qa(RETAIN, "pilot"), config=cfg, tokenizer=T.tiny_tokenizer())
    trained = result.trainable["names"]
    changed = sum(int((p != before[n]).sum()) for n, p in model.named_parameters() if n in trained)
    total = sum(p.numel() for n, p in model.named_parameters() if n in trained)
    assert 0 < changed <= result.trainable["masked_trainable"] < total
    assert not any(".language_model." in n for n in trained)
    with pytest.raises(ValueError, match="vkd with lambda_npo / lambda_ce / mask trains on answer tokens"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=cfg)


@pytest.mark.parametrize("method", ["vkd", "grad_diff"])
def test_lora_runs(method):
    # LoRA's B starts at zero, so A's first gradient is exactly zero: that must not count as dead
    kw = {} if method == "vkd" else {"tokenizer": T.tiny_tokenizer()}
    forget, retain = (FORGET, RETAIN) if method == "vkd" else (_qa(FORGET, "baker"), _qa(RETAIN, "pilot"))
    cfg = vf.UnlearnConfig(**{**CFG, "steps": 3}, lora={"r": 4, "lora_alpha": 8})
    result = vf.unlearn(T.tiny_llava(), forget, retain, method=method, config=cfg, **kw)
    assert result.trainable["lora"] and all("lora_" in n for n in result.trainable["names"])
    a = [p for n, p in result.model.named_parameters() if ".lora_B." in n]
    assert a and any(torch.any(p != 0) for p in a)  # B moved off zero
