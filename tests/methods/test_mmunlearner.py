"""``mmunlearner`` (vkd_fast.methods.mmunlearner): gradient ascent on forget answers, restricted to
the weights whose forget / retain Fisher ratio is in the top ``mask_ratio``, against an independent
Fisher computation over the planned batches."""

import _tiny_models as T
import torch
from _items import FORGET, RETAIN, answer_logps, qa

import vkd_fast as vf
from vkd_fast.methods import Batch


def test_mmunlearner_mask_is_the_top_fisher_ratio():
    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    forget, retain = qa(FORGET, "baker"), qa(RETAIN, "pilot")
    method = vf.methods.MMUnlearner({"mask_ratio": 0.25, "mask_batches": 2})
    summary = method.prepare(model, forget, retain, tokenizer=tok)
    assert set(summary["names"]) == {n for n, _ in model.named_parameters()}  # V, P and W
    plan = [Batch([0, 1], [2, 3]), Batch([3], [7, 8]), Batch([2], [0])]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    masks = method.saliency_masks(named, plan)

    def fisher(side, items):
        acc = {n: torch.zeros_like(p) for n, p in named}
        for batch in plan[:2]:  # mask_batches = 2
            model.zero_grad()
            ref = answer_logps(model, tok, [items[i] for i in getattr(batch, side)])
            (-sum(s for s, _ in ref) / sum(n for _, n in ref)).backward()
            for n, p in named:
                if p.grad is not None:
                    acc[n] += p.grad.pow(2)
        model.zero_grad()
        return {n: a / 2 for n, a in acc.items()}

    f, r = fisher("forget", forget), fisher("retain", retain)
    scores = torch.cat([(f[n] / (r[n] + 1e-12)).flatten() for n, _ in named])
    k = round(0.25 * scores.numel())
    got = torch.cat([masks[n].flatten() for n, _ in named])
    assert int(got.sum()) >= k
    # the weights selected are the top-k scores (up to ties and the rounding of the two Fisher sums)
    top = torch.zeros_like(got)
    top[scores.topk(k).indices] = True
    assert (got != top).float().mean() < 0.01
    loss, _ = method.step(Batch([0, 1], [5]))
    ref = answer_logps(model, tok, [forget[0], forget[1]])
    torch.testing.assert_close(loss, sum(s for s, _ in ref) / sum(n for _, n in ref), rtol=1e-5, atol=1e-6)
