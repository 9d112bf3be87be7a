"""The membership-inference audit (vkd_fast.eval.privacy): the AUC against a rank formula, the scores
against one unpadded forward per item (tests/_items.answer_logps), the toy world's strangers, and the
audit's direction on the toy models (vanilla knows its forget people; gold does not)."""

import math

import _tiny_models as T
import numpy as np
import pytest
import torch
from _items import FORGET, answer_logps, qa

from vkd_fast.eval.privacy import answer_token_logprobs, auc, membership_scores, privacy_audit, privacy_leak


def rank_auc(pos, neg):
    """Mann-Whitney from average ranks (ties share their mean rank)."""
    values = np.array(list(pos) + list(neg), dtype=float)
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):  # average ranks of ties
        ranks[values == v] = ranks[values == v].mean()
    n1, n2 = len(pos), len(neg)
    return (ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2)


def test_auc_and_privacy_leak():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 17).round(1), rng.normal(0, 1, 23).round(1)  # rounding makes ties
    assert auc(pos, neg) == pytest.approx(rank_auc(pos, neg))
    assert auc([1, 2], [0]) == 1.0 and auc([0], [1, 2]) == 0.0 and auc([1], [1]) == 0.5
    assert privacy_leak(0.75, 0.5) == pytest.approx(0.5) and privacy_leak(0.5, 0.5) == 0.0
    with pytest.raises(ValueError, match="auc needs scores on both sides"):
        auc([], [1])


def test_scores_match_one_forward_per_item():
    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    items = qa(FORGET[:3], "a pilot") + qa(FORGET[3:5], "baker")
    got = answer_token_logprobs(model, tok, items, batch_size=2)  # padded batches
    want = answer_logps(model, tok, items)
    for g, (total, n) in zip(got, want):
        assert len(g) == n and sum(g) == pytest.approx(float(total.detach()), abs=1e-4)
    scores = membership_scores(model, tok, items, k=0.5)
    groups = {}  # no person / variant on these items: items of one image object are one image
    for it, g in zip(items, got):
        groups.setdefault(id(it["image"]), []).extend(g)
    assert scores["images"] == len(groups)
    for s_loss, s_min, g in zip(scores["loss"], scores["min_k"], groups.values()):
        assert s_loss == pytest.approx(sum(g) / len(g))
        low = sorted(g)[:math.ceil(0.5 * len(g))]
        assert s_min == pytest.approx(sum(low) / len(low))
    with pytest.raises(ValueError, match="k must be in"):
        membership_scores(model, tok, items, k=0)


def test_strangers_are_new_people_drawn_like_the_world():
    from vkd_fast.data import ToyWorld, ToyWorldConfig

    world = ToyWorld(ToyWorldConfig(n_identities=12))
    strangers = world.strangers(6, seed=1)
    used = {tuple(p.signature.values()) for p in world.identities}
    assert not used & {tuple(p.signature.values()) for p in strangers}
    assert len({tuple(p.signature.values()) for p in strangers}) == 6
    assert [p.attributes for p in world.strangers(6, seed=1)] == [p.attributes for p in strangers]  # seeded
    items = world.stranger_items(2, seed=1)
    assert len(items) == 2 * world.config.n_train_images * 4
    assert items[0]["image"].size == world.image(0, 0).size and items[0]["identity"] == "stranger 0"
    assert not np.array_equal(np.asarray(items[0]["image"]), np.asarray(world.image(0, 0)))
    with pytest.raises(ValueError, match="n must be <="):
        world.strangers(10**6)


@pytest.mark.slow
def test_the_audit_tells_vanilla_from_gold(toy):
    models, _ = toy
    world = models.world
    members = world.image_items(world.forget_ids, "train")
    nonmembers = world.stranger_items(len(world.forget_ids), seed=0)
    vanilla = privacy_audit(models.vanilla, models.tokenizer, members, nonmembers)
    gold = privacy_audit(models.gold, models.tokenizer, members, nonmembers)
    assert vanilla["members"] == len(world.forget_ids) * world.config.n_train_images == vanilla["nonmembers"]
    # vanilla trained on the forget people's images: their answers are far likelier than strangers'
    assert vanilla["auc_loss"] > 0.9 and vanilla["auc_min_k"] > 0.9
    # gold never saw them: much closer to chance
    assert abs(gold["auc_loss"] - 0.5) < abs(vanilla["auc_loss"] - 0.5)
    with torch.no_grad():
        assert privacy_leak(vanilla["auc_loss"], gold["auc_loss"]) > 0


def test_privacy_leak_is_undefined_not_an_error_at_a_zero_gold_auc():
    assert math.isnan(privacy_leak(0.3, 0.0))
    with pytest.raises(ValueError, match=r"auc_gold must be an AUC in \[0, 1\]"):
        privacy_leak(0.5, 1.5)
