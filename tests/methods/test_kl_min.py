"""``kl_min`` (vkd_fast.methods.kl_min): -CE(forget) + KL(teacher || student) over the retain answer
positions, the teacher's log-probabilities taken once at set-up, against an independent computation."""

import _tiny_models as T
import torch
from _items import FORGET, RETAIN, qa

import vkd_fast as vf
import vkd_fast.adapters as A
from vkd_fast.methods import Batch


def _answer_logprobs(model, tok, it):
    """All-vocabulary log-probabilities at the item's answer positions [T, V], one unpadded forward."""
    ad = A.get_adapter(model)
    image = ad.preprocess([it["image"]])
    n = ad.num_image_tokens(**image)[0]
    prompt = tok(ad.prompt(tok, it["question"], n_image_tokens=n), add_special_tokens=False).input_ids
    full = tok(ad.prompt(tok, it["question"], n_image_tokens=n, answer=it["answer"]), add_special_tokens=False).input_ids
    ids = torch.tensor([full])
    logits = model(**ad.model_inputs(ids, torch.ones_like(ids), **image)).logits[0].float()
    return torch.log_softmax(logits[len(prompt) - 1: len(full) - 1], dim=-1)


def test_kl_min_retain_term_is_the_kl_to_the_unmodified_model():
    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    forget, retain = qa(FORGET, "baker"), qa(RETAIN, "pilot")
    with torch.no_grad():
        teacher = [_answer_logprobs(model, tok, retain[i]) for i in (2, 4)]
    method = vf.methods.KLMin()
    method.prepare(model, forget, retain, tokenizer=tok)
    _, terms = method.step(Batch([0], [2, 4]))
    assert abs(float(terms["kl_retain"])) < 1e-6  # the student starts as the teacher
    with torch.no_grad():  # move the student away from the teacher
        model.lm_head.weight.add_(0.05 * torch.randn_like(model.lm_head.weight))
    loss, terms = method.step(Batch([0], [2, 4]))
    student = [_answer_logprobs(model, tok, retain[i]) for i in (2, 4)]
    t, s = torch.cat(teacher), torch.cat(student)
    kl = (t.exp() * (t - s)).sum() / t.shape[0]
    torch.testing.assert_close(terms["kl_retain"], kl.detach(), rtol=1e-4, atol=1e-6)
    assert float(kl.detach()) > 1e-4
    f = _answer_logprobs(model, tok, forget[0])
    mean_logp = f[:, tok.convert_tokens_to_ids("baker")].mean()  # the one-token answer
    torch.testing.assert_close(loss, mean_logp + kl, rtol=1e-4, atol=1e-6)
    assert method.close()["entries"] == len(retain)  # the teacher's log-probs: one entry per retain item
