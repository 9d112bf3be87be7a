"""``npo`` (vkd_fast.methods.npo): -(2/beta) mean log sigmoid(-beta (log pi - log pi_ref)) over forget
answers, the reference taken at set-up, against an independent computation; options validated."""

import _tiny_models as T
import pytest
import torch
from _items import FORGET, RETAIN, answer_logps, qa

import vkd_fast as vf
from vkd_fast.methods import Batch


def test_npo_objective_against_its_reference():
    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    forget, retain = qa(FORGET, "baker"), qa(RETAIN, "pilot")
    with torch.no_grad():
        ref = [s for s, _ in answer_logps(model, tok, forget)]
    method = vf.methods.NPO(vf.methods.NPOOptions(beta=0.7))
    method.prepare(model, forget, retain, tokenizer=tok)
    loss, _ = method.step(Batch([1, 3, 1], [0]))
    # at the start log pi = log pi_ref: L = -(2/beta) log sigmoid(0) = (2/beta) log 2
    torch.testing.assert_close(loss, torch.tensor(2 / 0.7 * torch.log(torch.tensor(2.0)).item()), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        model.lm_head.weight.add_(0.05 * torch.randn_like(model.lm_head.weight))
    loss, terms = method.step(Batch([1, 3, 1], [0]))
    seq = [s for s, _ in answer_logps(model, tok, [forget[i] for i in (1, 3, 1)])]
    ratio = torch.stack([s - ref[i] for s, i in zip(seq, (1, 3, 1))])
    want = -(2 / 0.7) * torch.nn.functional.logsigmoid(-0.7 * ratio).mean()
    torch.testing.assert_close(loss, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms["npo_logratio"], ratio.mean().detach(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="beta must be > 0"):
        vf.methods.NPOOptions(beta=0.0)
