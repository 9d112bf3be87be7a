"""The toy world and its cached models (vkd_fast.data.toy, vkd_fast.data.toy_model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _toy import SMALL_MODEL, SMALL_WORLD

import vkd_fast.adapters as A
from vkd_fast.data import ATTRIBUTES, ToyModelConfig, ToyWorld, ToyWorldConfig, load_toy_models
from vkd_fast.data import toy_model as TM
from vkd_fast.eval import (
    evaluate,
    multiple_choice,
    option_scores,
    toy_eval_sets,
)


def test_world_is_deterministic_and_well_formed():
    a, b = ToyWorld(), ToyWorld()
    assert a.describe() == b.describe()
    assert np.array_equal(a.render(5, 0), b.render(5, 0)) and np.array_equal(a.render(5, 7), b.render(5, 7))
    assert ToyWorld(ToyWorldConfig(seed=1)).describe() != a.describe()
    assert len(a.identities) == 24 and len(a.forget_ids) == 3  # 10% of 24, rounded up
    assert sorted(a.forget_ids + a.retain_ids) == list(range(24))
    assert len({tuple(sorted(p.signature.items())) for p in a.identities}) == 24  # unique visual signatures
    assert len({p.name for p in a.identities}) == 24
    img = a.render(0, 0)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    # nuisance: every image of a person differs, yet images of one person are closer than of another
    imgs = [a.render(0, v).astype(float) for v in range(8)]
    assert all(not np.array_equal(imgs[0], x) for x in imgs[1:])
    same = np.mean([np.abs(imgs[0] - x).mean() for x in imgs[1:]])
    other = np.mean([np.abs(imgs[0] - a.render(i, 0).astype(float)).mean() for i in range(1, 24)])
    assert same < other
    # items: one image and one text question per attribute, options = the attribute's 8 values
    items = a.image_items([0], "unseen")
    assert len(items) == 2 * 4 and {it["variant"] for it in items} == {6, 7}
    assert all(it["options"] == list(ATTRIBUTES[it["attribute"]]) for it in items)
    assert all(it["answer"] == a.identities[0].attributes[it["attribute"]] for it in items)
    text = a.text_items([0, 1])
    assert len(text) == 8 and all(it["image"] is None and a.identities[it["identity"]].name in it["question"]
                                  for it in text)
    train = a.unlearn_items([0])
    assert len(train) == 6 and {"image", "question", "answer"} <= set(train[0])
    # the same question by name: the named person's text question about the item's attribute
    assert all(it["name_question"] == next(t["question"] for t in text if t["identity"] == 0
                                           and t["attribute"] == it["attribute"]) for it in train)
    assert ToyWorld(ToyWorldConfig(n_identities=8)).forget_ids.__len__() == 2  # at least 2


@pytest.mark.parametrize("kwargs, match", [
    ({"n_identities": 3}, "n_identities must be >= 4"),
    ({"n_unseen_images": 1}, "n_unseen_images must be >= 2"),
    ({"forget_fraction": 1.5}, "forget_fraction must be in"),
    ({"forget_fraction": 0.9, "n_identities": 4}, "at least 2 must be retained"),
    ({"image_size": 8}, "image_size must be >= 16"),
    ({"n_train_images": 0}, "n_train_images must be a positive int"),
])
def test_world_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToyWorldConfig(**kwargs)


def test_world_item_errors():
    w = ToyWorld(SMALL_WORLD)
    with pytest.raises(ValueError, match=r"identities must be ints in \[0, 12\), got \[12\]"):
        w.text_items([12])
    with pytest.raises(ValueError, match="images must be 'train' or 'unseen'"):
        w.image_items([0], "test")


def test_tokenizer_makes_every_world_word_one_token():
    w = ToyWorld()
    tok = TM.build_tokenizer(w)
    for word in w.words:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    assert tok.unk_token_id not in tok(" ".join(w.words), add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(tok("<image><image>", add_special_tokens=False).input_ids) == ["<image>"] * 2


@pytest.mark.slow
def test_models_pass_the_bar_and_are_cached(toy, monkeypatch):
    models, cache = toy
    for label in ("vanilla", "gold"):
        assert min(models.build[label]["accuracy"].values()) >= SMALL_MODEL.min_accuracy
    assert not any(p.requires_grad for p in models.vanilla.parameters())
    assert [p.name for p in (cache / "toy").iterdir()] == [models.path.name]  # no temporary folder left
    sets = toy_eval_sets(models.world)
    van, gold = evaluate(models.vanilla, models.tokenizer, sets), evaluate(models.gold, models.tokenizer, sets)
    assert van["forget_vqa"] >= 0.95 and van["retain_vqa"] >= 0.95 and van["forget_qa"] >= 0.95
    assert van["forget_vqa_unseen"] >= 0.8  # the vanilla model generalises to unseen images
    assert gold["forget_qa"] >= 0.95 and gold["retain_vqa"] >= 0.95
    assert gold["forget_vqa"] <= 0.5  # it never saw the forget people's image questions
    # the batched evaluation agrees with per-item option scoring (independent path) on a sample
    ad = A.get_adapter(models.vanilla)
    sample = sets["forget_vqa"][:6] + sets["retain_qa"][:4]
    got = multiple_choice(models.vanilla, ad, models.tokenizer, sample)["predictions"]
    want = []
    for it in sample:
        s = option_scores(models.vanilla, ad, models.tokenizer, it["question"], it["options"], it["image"])
        want.append(it["options"][int(np.argmax(s))])
    assert got == want
    # second load: from the cache, no training
    monkeypatch.setattr(TM, "train_on_world", lambda *a, **k: pytest.fail("trained again"))
    again = load_toy_models(SMALL_WORLD, SMALL_MODEL, cache_dir=cache)
    for (n, p), (_, q) in zip(again.vanilla.named_parameters(), models.vanilla.named_parameters()):
        assert torch.equal(p, q), n
    with pytest.raises(TypeError, match="model must be a ToyModelConfig"):
        load_toy_models(SMALL_WORLD, {"lr": 1}, cache_dir=cache)


def test_a_build_that_misses_the_bar_fails_and_leaves_nothing(tmp_path):
    # 2 scheduled steps, then (below the bar) 2 more at the floor learning rate: still short -> the error
    # says what to change
    cfg = ToyModelConfig(max_steps=2, check_every=1, min_accuracy=0.9, target_accuracy=0.9)
    with pytest.raises(RuntimeError, match=r"reached only image .* after 4 steps \(bar 0.9\): build with more "
                                           r"steps -- --build-max-steps 4 on the command line"):
        load_toy_models(ToyWorldConfig(n_identities=4), cfg, cache_dir=tmp_path)
    assert list((tmp_path / "toy").iterdir()) == []


def test_schedule_grows_with_the_world():
    cfg = ToyModelConfig()
    assert [cfg.schedule_steps(n) for n in (4, 12, 24, 36, 48)] == [600, 600, 600, 900, 1200]


@pytest.mark.slow
def test_a_short_schedule_is_rescued_on_one_thread():
    """With 1 thread (other float results than 2) a build whose schedule ends below the bar goes on at
    the floor learning rate until the target; without the rescue it fails naming the option."""
    import subprocess
    import sys

    code = """
import json, torch
torch.set_num_threads(1)
from vkd_fast.data import ToyModelConfig, ToyWorld, ToyWorldConfig
from vkd_fast.data.toy_model import build_model, build_tokenizer, train_on_world
w = ToyWorld(ToyWorldConfig(n_identities=12, forget_fraction=0.25))
tok = build_tokenizer(w)
ids = list(range(12))
out = {}
for name, factor in (("rescued", 5.0), ("none", 0.0)):
    cfg = ToyModelConfig(max_steps=40, check_every=20, warmup_steps=10, rescue_factor=factor)
    try:
        out[name] = train_on_world(build_model(w, tok, cfg), tok, w, ids, ids, cfg)
    except RuntimeError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=True,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    out = __import__("json").loads(run.stdout.strip().splitlines()[-1])
    info = out["rescued"]
    assert info["threads"] == 1 and info["schedule_steps"] == 40 and info["rescued"] is True
    assert 40 < info["steps"] <= 240 and min(info["accuracy"].values()) >= 0.95
    assert "after 40 steps (bar 0.95): build with more steps -- --build-max-steps 80" in out["none"]


def test_model_config_errors():
    with pytest.raises(ValueError, match="max_steps must be a positive int, got 0"):
        ToyModelConfig(max_steps=0)
    with pytest.raises(ValueError, match="need 0 < min_accuracy <= target_accuracy <= 1"):
        ToyModelConfig(min_accuracy=0.99, target_accuracy=0.9)
    with pytest.raises(TypeError, match="config must be a ToyWorldConfig"):
        ToyWorld({"seed": 1})
