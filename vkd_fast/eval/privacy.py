"""Privacy audit beside the relearning attack (docs/method.md §4.5): can a membership-inference attacker
tell the forget people's images from images of people the model never saw?

Per image, the attacker scores how well the model knows the person pictured: the log-probabilities
of the true answers to the image's questions (every answer token of every question about that
image). Two scores, as in the LLM-unlearning literature:

* ``loss``: the mean answer-token log-probability (the negative loss; LOSS attack);
* ``min_k``: the mean of the lowest ``k`` share of those log-probabilities (Min-K% Prob): a model that
  knows a person gives none of their answers a very low probability.

The audit's figure is the AUC of separating members (the forget people's training images) from
non-members (strangers: :meth:`vkd_fast.data.ToyWorld.stranger_items`, or any images of people the
model never saw) by a score -- 0.5: indistinguishable; 1.0: members always score higher; below 0.5:
members score *lower*, which is a tell as well (an over-unlearned model answers its forget people
worse than strangers). Relative to the gold model, as MUSE reports it, the privacy leak is
``(AUC_model - AUC_gold) / AUC_gold``: 0 at gold; positive: under-unlearned; negative: over-unlearned.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from ..adapters import get_adapter
from ..utils.text import answer_logprobs, collate_qa, encode_qa, pad_id


def auc(members, nonmembers) -> float:
    """P(a member scores higher than a non-member) + 0.5 P(tie): the Mann-Whitney AUC."""
    members, nonmembers = [float(x) for x in members], [float(x) for x in nonmembers]
    if not members or not nonmembers:
        raise ValueError(f"auc needs scores on both sides, got {len(members)} members and {len(nonmembers)} "
                         "non-members")
    wins = sum((m > n) + 0.5 * (m == n) for m in members for n in nonmembers)
    return wins / (len(members) * len(nonmembers))


def privacy_leak(auc_model: float, auc_gold: float) -> float:
    """MUSE's PrivLeak: ``(AUC_model - AUC_gold) / AUC_gold`` (0: as private as gold); NaN when gold's
    AUC is 0 (every member below every non-member: the ratio is undefined, not an error)."""
    if not 0 <= auc_gold <= 1:
        raise ValueError(f"auc_gold must be an AUC in [0, 1], got {auc_gold!r}")
    return (auc_model - auc_gold) / auc_gold if auc_gold > 0 else math.nan


def _image_key(item: dict, i: int):
    """Items about the same image share a key: the person and the image variant when the items say so,
    else the image object itself."""
    if "variant" in item and item.get("identity") is not None:
        return ("person", item["identity"], item["variant"])
    return ("image", id(item["image"])) if item.get("image") is not None else ("item", i)


@torch.no_grad()
def answer_token_logprobs(model, tokenizer, items: list[dict], batch_size: int = 32) -> list[list[float]]:
    """Per item, the log-probabilities of its answer's tokens given the image and the question (the
    answer as ``item["answer"]``: for multiple-choice items the correct option)."""
    adapter = get_adapter(model)
    device = next(model.parameters()).device
    qa = [{**it, "answer": _answer_text(it)} for it in items]
    encoded = encode_qa(adapter, tokenizer, qa, "items")
    out = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        inputs, labels = collate_qa(adapter, chunk, pad_id(tokenizer))
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        logp, mask = answer_logprobs(model(**inputs).logits, labels.to(device))
        for row_logp, row_mask in zip(logp.float().cpu(), mask.cpu()):
            out.append(row_logp[row_mask].tolist())
    return out


def _answer_text(item: dict) -> str:
    options, answer = item.get("options"), item["answer"]
    if isinstance(options, dict) and answer in options:
        return options[answer]
    return answer


def membership_scores(model, tokenizer, items: list[dict], k: float = 0.2, batch_size: int = 32) -> dict:
    """Per image (items grouped by :func:`_image_key`), the ``loss`` and ``min_k`` scores of the
    module docstring. Returns ``{"loss": [...], "min_k": [...], "images": n}`` (one value per image)."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k!r}")
    if not items:
        raise ValueError("items must not be empty")
    was_training = model.training
    model.eval()
    try:
        per_item = answer_token_logprobs(model, tokenizer, items, batch_size)
    finally:
        model.train(was_training)
    groups: dict = defaultdict(list)
    for i, (it, lp) in enumerate(zip(items, per_item)):
        groups[_image_key(it, i)].extend(lp)
    loss, min_k = [], []
    for values in groups.values():
        values = sorted(values)
        loss.append(sum(values) / len(values))
        low = values[:max(1, math.ceil(k * len(values)))]
        min_k.append(sum(low) / len(low))
    return {"loss": loss, "min_k": min_k, "images": len(groups)}


def privacy_audit(model, tokenizer, members: list[dict], nonmembers: list[dict], k: float = 0.2,
                  batch_size: int = 32) -> dict:
    """The membership-inference AUCs (``auc_loss``, ``auc_min_k``) of ``members`` (e.g. the forget
    people's training images' questions) against ``nonmembers`` (strangers'), and the image counts."""
    m = membership_scores(model, tokenizer, members, k, batch_size)
    n = membership_scores(model, tokenizer, nonmembers, k, batch_size)
    return {"auc_loss": auc(m["loss"], n["loss"]), "auc_min_k": auc(m["min_k"], n["min_k"]),
            "members": m["images"], "nonmembers": n["images"], "k": k}


__all__ = ["answer_token_logprobs", "auc", "membership_scores", "privacy_audit", "privacy_leak"]
