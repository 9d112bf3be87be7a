"""VKD (vkd_fast.methods.vkd): its objective against an independent computation, and its behaviour
through vf.unlearn on tiny models of real families."""

from __future__ import annotations

import _tiny_models as T
import pytest
import torch
from _items import CFG, FORGET, RETAIN, qa

import vkd_fast as vf
import vkd_fast.adapters as A


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
    # the student starts as the teacher: exactly, up to the rounding of batched float matmuls, which are
    # not batch-invariant on every CPU (the teacher cache is built over all 14 images in one batch, the
    # step's batch has 6; measured 4e-15 on an AMD EPYC, 0.0 on other machines)
    assert len(h) == CFG["steps"] and h[0]["loss_retain"] < 1e-9
    first_forget = sum(r["loss_forget"] for r in h[:3]) / 3
    last_forget = sum(r["loss_forget"] for r in h[-3:]) / 3
    assert last_forget < 0.5 * first_forget
    with torch.no_grad():
        assert torch.equal(ad.text_logits(ids), text_before)
    for n, p in model.named_parameters():
        if n in llm:
            assert torch.equal(p, llm[n]), n
    assert not any(p.requires_grad for p in model.parameters())
    assert result.trainable["trainable"] > 0 and result.method_stats["entries"] == len(FORGET) + len(RETAIN)


def test_cached_teacher_gives_the_live_teacher_loss_curve():
    runs = {}
    for teacher in ("cache", "live"):
        model = T.tiny_llava()
        runs[teacher] = vf.unlearn(model, FORGET, RETAIN, config=vf.UnlearnConfig(**CFG), options={"teacher": teacher})
    for a, b in zip(runs["cache"].history, runs["live"].history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-9)
    pa = dict(runs["cache"].model.named_parameters())
    for n, p in runs["live"].model.named_parameters():
        if n.endswith("k_proj.bias"):
            # softmax is invariant to a key bias: its true gradient is 0 and AdamW turns the rounding
            # noise of either teacher's batching into full +-lr steps, so it is not comparable (the same
            # exclusion as the gradient-accumulation test; measured failing here on an AMD EPYC before
            # and after the methods moved into plug-ins)
            continue
        # the live teacher batches its images differently from the cache build, so targets differ in the
        # last bits and Adam amplifies that on near-zero gradients: the gradient-accumulation test's
        # tolerance (1e-5 absolute is ~3000x finer than the run's weight change); rtol=1e-5, atol=1e-7
        # failed by 8e-7 here on an AMD EPYC, for the code before the plug-in redesign too
        torch.testing.assert_close(p, pa[n], rtol=1e-4, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


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
        result = vf.unlearn(model, qa(FORGET, "baker"), RETAIN, config=vf.UnlearnConfig(**CFG),
                            options={"tap": "llm:1"}, tokenizer=tok)
    assert set(calls) == {0}  # only the first decoder layer ever runs
    h = result.history
    assert h[0]["loss_retain"] < 1e-9 and h[-1]["loss_forget"] < 0.5 * h[0]["loss_forget"]  # as above
    assert all(torch.equal(p, llm[n]) for n, p in model.named_parameters() if n in llm)
    with torch.no_grad():
        assert torch.equal(ad.text_logits(ids), text_before)


def test_vkd_optional_output_terms():
    model = T.tiny_llava()
    cfg, opts = vf.UnlearnConfig(**CFG), vf.methods.VKDOptions(lambda_npo=0.5, lambda_ce=0.5)
    result = vf.unlearn(model, qa(FORGET, "baker"), qa(RETAIN, "pilot"), config=cfg, options=opts,
                        tokenizer=T.tiny_tokenizer())
    h = result.history
    assert {"loss_npo", "loss_ce"} <= set(h[0]) and h[-1]["loss"] < h[0]["loss"]
    assert not set(result.trainable["names"]) & {n for n, _ in model.named_parameters() if ".language_model." in n}
    with pytest.raises(ValueError, match="vkd with lambda_npo / lambda_ce / mask trains on answer tokens and needs tokenizer"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=cfg, options=opts)
    with pytest.raises(ValueError, match=r"retain items \[0, 1, .*carry no question/answer"):
        vf.unlearn(T.tiny_llava(), qa(FORGET, "baker"), RETAIN, config=cfg, options={"lambda_ce": 1.0},
                   tokenizer=T.tiny_tokenizer())


def test_vkd_with_a_saliency_mask_updates_only_salient_weights():
    model = T.tiny_llava()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg, opts = vf.UnlearnConfig(**CFG), {"mask": True, "mask_ratio": 0.3, "mask_batches": 2}
    result = vf.unlearn(model, qa(FORGET, "baker"), qa(RETAIN, "pilot"), config=cfg, options=opts,
                        tokenizer=T.tiny_tokenizer())
    trained = result.trainable["names"]
    changed = sum(int((p != before[n]).sum()) for n, p in model.named_parameters() if n in trained)
    total = sum(p.numel() for n, p in model.named_parameters() if n in trained)
    assert 0 < changed <= result.trainable["masked_trainable"] < total
    assert not any(".language_model." in n for n in trained)
    with pytest.raises(ValueError, match="vkd with lambda_npo / lambda_ce / mask trains on answer tokens"):
        vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=cfg, options=opts)


def _features(model, items, tap="vision:feature"):
    """Each item's features, one image per forward (independent of the cache's and the step's batching)."""
    ad = A.get_adapter(model)
    return [ad.visual_features(tap=tap, **ad.preprocess([it["image"]]))[0] for it in items]


def _row_mse(a, b):
    return ((a - b) ** 2).mean(-1)


@pytest.mark.parametrize("target", ["retain_mean", "nearest_retain", "retain_mean+augment"])
def test_vkd_objective_against_an_independent_computation(target):
    import copy

    from vkd_fast.methods import Batch
    from vkd_fast.methods.vkd.augment import augment_forget_pixels

    model = T.tiny_llava()
    teacher = copy.deepcopy(model)
    target, augment = target.split("+")[0], 0.6 if target.endswith("+augment") else 0
    method = vf.methods.VKD({"forget_target": target, "lambda_retain": 0.7, "lambda_forget": 1.3,
                             "forget_augment": augment})
    method.prepare(model, FORGET, RETAIN)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the student away from the teacher
        for p in method.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    batch = Batch([0, 3, 3], [1, 4, 9])
    loss, terms = method.step(batch, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        t_retain = _features(teacher, RETAIN)
    s_f = torch.cat(_features(model, [FORGET[i] for i in batch.forget]))
    if augment:  # the step's forget views: the images in batch order, augmented from the step's generator
        ad = A.get_adapter(model)
        pv = torch.cat([ad.preprocess([FORGET[i]["image"]])["pixel_values"] for i in batch.forget])
        views = augment_forget_pixels({"pixel_values": pv}, len(pv), augment, torch.Generator().manual_seed(5))
        assert not torch.equal(views["pixel_values"], pv)
        s_f = torch.cat([ad.visual_features(tap="vision:feature", pixel_values=v[None])[0]
                         for v in views["pixel_values"]])
    s_r = torch.cat(_features(model, [RETAIN[i] for i in batch.retain]))
    retain = _row_mse(s_r, torch.cat([t_retain[i] for i in batch.retain])).mean()
    if target == "retain_mean":  # every LLaVA image has 16 tokens here: the anchor is the plain mean
        forget = _row_mse(s_f, torch.stack(t_retain).mean(0).repeat(3, 1)).mean()
    else:  # nearest_retain: the nearest retain image by processed pixels
        ad = A.get_adapter(teacher)
        px = lambda it: ad.preprocess([it["image"]])["pixel_values"].double().flatten()  # noqa: E731
        near = [int(torch.stack([(px(r) - px(FORGET[i])).pow(2).sum() for r in RETAIN]).argmin())
                for i in batch.forget]
        forget = _row_mse(s_f, torch.cat([t_retain[j] for j in near])).mean()
    want = 0.7 * retain + 1.3 * forget
    torch.testing.assert_close(loss, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms["loss_forget"], forget.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms["loss_retain"], retain.detach(), rtol=1e-4, atol=1e-6)
    assert float(retain.detach()) > 1e-6 and float(forget.detach()) > 1e-6
    assert method.tokens(batch) == s_f.shape[0] + s_r.shape[0]
    # a plain (forget, retain) pair is a batch without slots: the same loss
    plain, _ = method.step((batch.forget, batch.retain), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(plain, loss.detach(), rtol=0, atol=0)
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    want.backward()
    assert got
    for n, p in model.named_parameters():
        if n in got:
            torch.testing.assert_close(got[n], p.grad, rtol=1e-3, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


def test_vkd_step_gathers_only_the_rows_it_uses_and_places_the_anchor_once():
    from vkd_fast.methods import Batch

    method = vf.methods.VKD({"forget_target": "retain_mean"})
    method.prepare(T.tiny_llava(), FORGET, RETAIN)
    before = method.cache.stats()["gathered_bytes"]
    method.step(Batch([0, 1], [2, 3, 4]), upcoming=Batch([2], [5]))
    method.step(Batch([2], [5]))
    row = method.cache.rows(method.r_keys[0]) * method.cache.dim * 4
    # anchor targets gather the retain rows only (not the forget images' own rows): 3 + 1 images
    assert method.cache.stats()["gathered_bytes"] - before == 4 * row
    anchor = method._anchor
    method.step(Batch([3], [6]))
    assert method._anchor is anchor  # the anchor was put on the device once
    method.close()
