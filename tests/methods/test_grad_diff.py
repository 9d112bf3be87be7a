"""``grad_diff`` (vkd_fast.methods.grad_diff): -CE(forget answers) + CE(retain answers), against an
independent per-item computation; the retain term only where the batch has retain items."""

import _tiny_models as T
import torch
from _items import FORGET, RETAIN, answer_logps, qa

import vkd_fast as vf
from vkd_fast.methods import Batch


def test_grad_diff_objective():
    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    method = vf.methods.GradDiff()
    forget, retain = qa(FORGET, "baker"), qa(RETAIN, "pilot")
    method.prepare(model, forget, retain, tokenizer=tok)
    loss, terms = method.step(Batch([1, 3], [0, 5, 9]))
    f = answer_logps(model, tok, [forget[1], forget[3]])
    r = answer_logps(model, tok, [retain[i] for i in (0, 5, 9)])
    ce_f = -sum(s for s, _ in f) / sum(n for _, n in f)
    ce_r = -sum(s for s, _ in r) / sum(n for _, n in r)
    torch.testing.assert_close(loss, -ce_f + ce_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["ce_retain"], ce_r.detach(), rtol=1e-5, atol=1e-6)
    assert method.tokens(Batch([1, 3], [0, 5, 9])) == sum(n for _, n in f + r)
    only_retain, terms = method.step(Batch([], [0, 5, 9]))  # an interleaved micro-batch
    torch.testing.assert_close(only_retain, ce_r, rtol=1e-5, atol=1e-6)
    assert set(terms) == {"ce_retain"}
