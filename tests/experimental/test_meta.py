"""The attack simulation (vkd_fast.experimental.meta, vkd_experimental's lambda_meta): a zero-valued term
whose gradient is the simulated attack's penalty gradient, the weights restored, the inputs it needs."""

import _tiny_models as T
import pytest
import torch
from _items import FORGET, RETAIN, qa

import vkd_fast as vf
from vkd_fast.experimental import VKDExperimental
from vkd_fast.methods import Batch


def _items():
    jobs = qa(FORGET, "baker")
    cities = [{**it, "question": "what is the city of this person ?", "answer": "pilot", "attribute": "city"}
              for it in FORGET]
    return [{**it, "attribute": "job"} for it in jobs] + cities


def test_the_meta_term_adds_the_simulated_attacks_gradient_and_restores_the_weights():
    tok = T.tiny_tokenizer()
    forget = _items()
    runs = {}
    for lam in (0.0, 2.0):
        model = T.tiny_llava()
        method = VKDExperimental({"lambda_meta": lam, "meta_steps": 2, "forget_augment": 0})
        method.prepare(model, forget, RETAIN, tokenizer=tok)
        before = [p.detach().clone() for p in method.parameters()]
        gen = torch.Generator().manual_seed(3)
        loss, terms = method.step(Batch([0, 5], [1, 2]), generator=gen)
        assert all(torch.equal(p, b) for p, b in zip(method.parameters(), before))  # restored
        loss.backward()
        runs[lam] = (float(loss), terms, [p.grad.clone() for p in method.parameters()], method, model)
    (l0, t0, g0, _, _), (l2, t2, g2, m2, _) = runs[0.0], runs[2.0]
    assert l2 == pytest.approx(l0, rel=1e-6) and "loss_meta" in t2 and "loss_meta" not in t0
    # the difference is 2 x the penalty's gradient of the same simulated attack (same generator state)
    sim = m2.meta.gradients(m2.parameters(), torch.Generator().manual_seed(3))[0]
    for a, b, g in zip(g2, g0, sim):
        torch.testing.assert_close(a - b, 2.0 * g, rtol=1e-4, atol=1e-7)
    assert any(float(g.abs().max()) > 0 for g in sim)


def test_meta_needs_question_kinds_and_a_tokenizer():
    with pytest.raises(ValueError, match="needs tokenizer"):
        vf.unlearn(T.tiny_llava(), _items(), RETAIN, method="vkd_experimental", options={"lambda_meta": 1.0})
    one_kind = [{**it, "attribute": "job"} for it in qa(FORGET, "baker")]
    with pytest.raises(ValueError, match="at least two kinds of question"):
        VKDExperimental({"lambda_meta": 1.0}).prepare(T.tiny_llava(), one_kind, RETAIN, tokenizer=T.tiny_tokenizer())
