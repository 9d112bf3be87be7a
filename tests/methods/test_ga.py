"""``ga`` (vkd_fast.methods.ga): its loss is the mean log-probability of the forget answer tokens
(= -CE), against an independent per-item computation; it updates the language model only."""

import _tiny_models as T
import torch
from _items import FORGET, RETAIN, answer_logps, qa

import vkd_fast as vf
from vkd_fast.methods import Batch


def test_ga_objective_is_minus_the_forget_answer_cross_entropy():
    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    method = vf.methods.GA()
    forget, retain = qa(FORGET, "baker"), qa(RETAIN, "pilot")
    summary = method.prepare(model, forget, retain, tokenizer=tok)
    loss, terms = method.step(Batch([0, 2, 2], [1]))
    ref = answer_logps(model, tok, [forget[i] for i in (0, 2, 2)])
    want = sum(s for s, _ in ref) / sum(n for _, n in ref)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["ce_forget"], -want.detach(), rtol=1e-5, atol=1e-6)
    assert method.tokens(Batch([0, 2, 2], [1])) == sum(n for _, n in ref)
    # the gradient is that of the independent computation
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    want.backward()
    for n, p in model.named_parameters():
        if n in got:
            torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
    lm = {n for n, _ in model.named_parameters() if ".language_model." in n or n.startswith("lm_head")}
    assert got and set(got) <= lm and set(summary["names"]) <= lm
