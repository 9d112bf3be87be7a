"""Evaluation metrics on hand-checked cases, and option scoring against a direct computation."""

from __future__ import annotations

import math

import _tiny_models as T
import pytest
import torch
from PIL import Image

import vkd_fast.adapters as A
from vkd_fast.eval import (
    answer_collapse_share,
    evaluate,
    exact_match,
    multiple_choice,
    option_scores,
    recovery,
    rouge_l,
)


def test_text_metrics_hand_checked():
    assert exact_match("The Baker.", "the  baker") and not exact_match("baker", "bakers")
    # LCS of "the cat sat on the mat" / "the cat lay on the mat" is 5 of 6 tokens: P = R = F = 5/6
    assert rouge_l("the cat lay on the mat", "the cat sat on the mat") == pytest.approx(5 / 6)
    assert rouge_l("a b", "c d") == 0.0 and rouge_l("pilot", "pilot") == 1.0
    assert answer_collapse_share(["a", "b", "a", "a"]) == 0.75
    assert answer_collapse_share(["x"]) == 1.0
    with pytest.raises(ValueError, match="at least one answer"):
        answer_collapse_share([])
    assert recovery(1.0, 0.2, 0.6) == pytest.approx(0.5)
    assert recovery(0.9, 0.1, 0.1) == 0.0 and math.isnan(recovery(0.5, 0.5, 0.9))


def _direct_score(model, ad, tok, question, option, image=None):
    """Mean log-probability of the option's tokens, computed with a plain forward."""
    inputs = ad.preprocess([image]) if image is not None else {}
    n = ad.num_image_tokens(**inputs)[0] if image is not None else None
    prompt = tok(ad.prompt(tok, question, n_image_tokens=n), add_special_tokens=False).input_ids
    full = tok(ad.prompt(tok, question, n_image_tokens=n, answer=option), add_special_tokens=False).input_ids
    ids = torch.tensor([full])
    with torch.no_grad():
        logits = model(**ad.model_inputs(ids, torch.ones_like(ids), **inputs)).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    picks = [logp[t - 1, full[t]] for t in range(len(prompt), len(full))]
    return float(sum(picks) / len(picks))


@pytest.mark.parametrize("build", [T.tiny_llava, T.tiny_qwen2_vl], ids=["llava", "qwen2_vl"])
def test_option_scores_match_a_direct_computation(build):
    model = build()
    ad = A.get_adapter(model)
    tok = T.tiny_tokenizer(None if build is T.tiny_llava else T.QWEN_SPECIAL_TOKENS)
    g = torch.Generator().manual_seed(0)
    image = Image.fromarray((torch.rand(40, 56, 3, generator=g) * 255).to(torch.uint8).numpy())
    options = ["baker", "pilot", "mira tolvan"]
    for img in (image, None):  # an image question and a text-only question
        got = option_scores(model, ad, tok, "what is the job of this person ?", options, image=img)
        want = [_direct_score(model, ad, tok, "what is the job of this person ?", o, img) for o in options]
        assert got == pytest.approx(want, abs=1e-5)
    result = multiple_choice(model, ad, tok, [
        {"question": "what is the job of this person ?", "options": {"A": "baker", "B": "pilot"}, "answer": "A",
         "image": image},
        {"question": "what is the job of mira tolvan ?", "options": ["baker", "pilot"], "answer": "pilot"},
    ])
    assert result["n"] == 2 and 0.0 <= result["accuracy"] <= 1.0 and len(result["predictions"]) == 2
    scores = option_scores(model, ad, tok, "what is the job of this person ?", ["baker", "pilot"], image=image)
    assert result["predictions"][0] == ["baker", "pilot"][int(scores[1] > scores[0])]
    with pytest.raises(ValueError, match="answer 'C' is neither an option key nor an option text"):
        multiple_choice(model, ad, tok, [{"question": "q ?", "options": {"A": "baker"}, "answer": "C"}])


@pytest.mark.parametrize("build", [T.tiny_llava, T.tiny_qwen2_vl], ids=["llava", "qwen2_vl"])
def test_batched_single_token_path_agrees_with_per_item_scoring(build, monkeypatch):
    # one-token options take the batched path (prompts of different lengths, images of different
    # sizes, several batches); its choices must equal the per-item option_scores argmax
    model = build()
    ad = A.get_adapter(model)
    tok = T.tiny_tokenizer(None if build is T.tiny_llava else T.QWEN_SPECIAL_TOKENS)
    g = torch.Generator().manual_seed(1)
    images = [Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy())
              for h, w in ((40, 56), (28, 28), (56, 40))]
    options = ["baker", "pilot", "mira", "tolvan", "job"]
    items = []
    for k in range(7):
        question = "what is the job of this person ?" if k % 2 else "what is the job ?"
        items.append({"question": question, "options": options, "answer": options[k % 5], "image": images[k % 3]})
        items.append({"question": "what is the job of mira tolvan ?" if k % 2 else "what is the job of mira ?",
                      "options": options, "answer": options[(k + 1) % 5]})
    want = []
    for it in items:
        scores = option_scores(model, ad, tok, it["question"], options, it.get("image"))
        want.append(options[max(range(len(options)), key=lambda j: scores[j])])
    import vkd_fast.eval.metrics as M

    def per_item(*a, **k):
        raise AssertionError("the batched path was not taken")

    monkeypatch.setattr(M, "option_scores", per_item)
    got = multiple_choice(model, ad, tok, items, batch_size=3)
    assert got["predictions"] == want
    assert got["accuracy"] == pytest.approx(sum(w == it["answer"] for w, it in zip(want, items)) / len(items))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        multiple_choice(model, ad, tok, items, batch_size=0)


@pytest.mark.parametrize("build", [T.tiny_llava, T.tiny_qwen2_vl], ids=["llava", "qwen2_vl"])
def test_generate_answers_equal_a_manual_greedy_decode(build):
    from vkd_fast.eval import generate_answers

    model = build()
    ad = A.get_adapter(model)
    tok = T.tiny_tokenizer(None if build is T.tiny_llava else T.QWEN_SPECIAL_TOKENS)
    image = Image.new("RGB", (40, 28), (10, 100, 200))
    items = [{"question": "what is the job ?", "image": image}, {"question": "what is the job of mira tolvan ?"}]
    got = generate_answers(model, ad, tok, items, max_new_tokens=4)
    for it, answer in zip(items, got):
        inputs = ad.preprocess([it["image"]]) if it.get("image") else {}
        n = ad.num_image_tokens(**inputs)[0] if inputs else None
        ids = torch.tensor([tok(ad.prompt(tok, it["question"], n_image_tokens=n), add_special_tokens=False).input_ids])
        start = ids.shape[1]
        for _ in range(4):  # greedy, the whole prompt re-run every token (no cache)
            with torch.no_grad():
                logits = model(**ad.model_inputs(ids, torch.ones_like(ids), **inputs)).logits[0, -1]
            ids = torch.cat([ids, logits.argmax().view(1, 1)], 1)
        assert answer == tok.decode(ids[0, start:], skip_special_tokens=True).strip()
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        generate_answers(model, ad, tok, items, max_new_tokens=0)


def test_free_form_and_cloze_scores_hand_checked(monkeypatch):
    import vkd_fast.eval.metrics as M

    answers = iter([["the cat lay on the mat", "pilot"], ["baker\nand more", ""]])
    monkeypatch.setattr(M, "generate_answers", lambda *a, **k: next(answers))
    items = [{"question": "q1", "answer": "the cat sat on the mat"}, {"question": "q2", "answer": "Pilot."}]
    result = M.free_form(None, None, None, items)
    assert result["rouge_l"] == pytest.approx((5 / 6 + 1.0) / 2) and result["exact_match"] == 0.5
    fills = M.cloze(None, None, None, [{"question": "works as a __ .", "answer": "baker"},
                                       {"question": "born in __ .", "answer": "1970"}])
    assert fills["predictions"] == ["baker", ""] and fills["accuracy"] == 0.5  # the fill is the first line
    with pytest.raises(ValueError, match=r"cloze items \[0\] have no blank"):
        M.cloze(None, None, None, [{"question": "no blank", "answer": "x"}])


@pytest.mark.slow
def test_free_form_answers_of_the_vanilla_model(toy):
    # the vanilla model answers with the attribute's word as its first generated token
    models, _ = toy
    w = models.world
    sets = {"retain_qa": w.text_items(w.retain_ids[:4])}
    free = {"retain_generation": w.text_items(w.retain_ids[:4])}
    out = evaluate(models.vanilla, models.tokenizer, sets, free_form_sets=free, max_new_tokens=1)
    assert out["retain_generation_exact_match"] >= 0.9 and out["retain_generation_rouge_l"] >= 0.9
    assert out["n"]["retain_generation"] == 16
