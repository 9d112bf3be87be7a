"""The toy world, its cached models, the evaluation protocol, the relearning attack, reports, the
demo end to end on a reduced world, and the eval / relearn / demo commands."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vkd_fast.adapters as A
from vkd_fast.data import ATTRIBUTES, ToyModelConfig, ToyWorld, ToyWorldConfig, load_toy_models
from vkd_fast.data import toy_model as TM
from vkd_fast.eval import (
    DemoConfig,
    RelearnConfig,
    collapse_share,
    evaluate,
    markdown_table,
    measure,
    multiple_choice,
    option_scores,
    relearn,
    run_demo,
    split_attack,
    toy_eval_sets,
)

EXE = str(Path(sys.executable).with_name("vkd-fast"))
# a reduced world: 12 people, 3 of them forgotten as in the default world (with 2, forget accuracy is a
# count of 8 person x attribute coincidences: an 8-person world measured 0.40 for VKD), default images
SMALL_WORLD = ToyWorldConfig(n_identities=12, forget_fraction=0.25)
SMALL_MODEL = ToyModelConfig(check_every=100)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    cache = tmp_path_factory.mktemp("toycache")
    return load_toy_models(SMALL_WORLD, SMALL_MODEL, cache_dir=cache), cache


# ---------------------------------------------------------------------- the world
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


# ---------------------------------------------------------------------- the cached models
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
    cfg = ToyModelConfig(max_steps=2, check_every=1, min_accuracy=0.9, target_accuracy=0.9)
    with pytest.raises(RuntimeError, match=r"reached only .* after 2 steps \(bar 0.9\)"):
        load_toy_models(ToyWorldConfig(n_identities=4), cfg, cache_dir=tmp_path)
    assert list((tmp_path / "toy").iterdir()) == []


# ---------------------------------------------------------------------- protocol pieces
def test_collapse_share_and_measure():
    items = [{"attribute": "job", "question": "q"}] * 4 + [{"attribute": "pet", "question": "q"}] * 2
    # job: 3 of 4 the same; pet: 1 of 2 -> (0.75 * 4 + 0.5 * 2) / 6
    assert collapse_share(items, ["a", "a", "a", "b", "x", "y"]) == pytest.approx(4 / 6)
    with measure() as m:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB touched
        block += 1
    assert m["seconds"] > 0 and m["memory_kind"] in ("host_rss", "host_maxrss_process")
    if m["memory_kind"] == "host_rss":
        assert m["peak_extra_bytes"] >= 60 * 2**20
    del block


def test_reports_render(tmp_path):
    from vkd_fast.eval import plot, write_json, write_markdown

    rows = [{"method": "vanilla", "forget_vqa": 1.0, "retain_qa": 1.0},
            {"method": "vkd", "forget_vqa": 0.125, "retain_qa": 1.0, "recovery_llm": math.nan, "seconds": 3.25,
             "trainable": 12345}]
    table = markdown_table(rows)
    assert table.splitlines()[0] == "| method | forget VQA | retain QA | relearn llm | time s | trainable params |"
    assert "| vkd | 12.5 | 100.0 | – | 3.2 | 12,345 |" in table
    write_json(tmp_path / "r.json", {"rows": rows})
    assert json.loads((tmp_path / "r.json").read_text())["rows"][1]["recovery_llm"] is None  # strict JSON
    write_markdown(tmp_path / "r.md", rows, "T")
    plot(tmp_path / "r.png", rows, chance=0.125)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md", "r.png"]


# ---------------------------------------------------------------------- relearning attack
def test_attack_split_and_trainable_sets(toy):
    models, _ = toy
    w = models.world
    items = w.image_items(w.forget_ids, "train")
    attack, held = split_attack(items, RelearnConfig())
    assert {it["attribute"] for it in attack} == {"job", "city"} and {it["attribute"] for it in held} == {"hobby",
                                                                                                       "pet"}
    attack, held = split_attack(items, RelearnConfig(split="fraction", fraction=0.25))
    assert len(attack) == round(0.25 * len(items)) and len(attack) + len(held) == len(items)
    assert not {id(x) for x in attack} & {id(x) for x in held}
    with pytest.raises(ValueError, match="modes must be a non-empty subset"):
        RelearnConfig(modes=("lm",))
    with pytest.raises(ValueError, match="both must be non-empty"):
        split_attack(items, RelearnConfig(attributes=tuple(ATTRIBUTES)))
    # llm mode changes only the language model (+ head), visual mode only the vision tower + projector
    base = dict(models.gold.named_parameters())
    cfg = RelearnConfig(steps=3)
    for mode, prefix in (("llm", ("model.language_model", "lm_head")),
                         ("visual", ("model.vision_tower", "model.multi_modal_projector"))):
        attacked = relearn(models.gold, models.tokenizer, attack, mode, cfg)
        changed = {n for n, p in attacked.named_parameters() if not torch.equal(p, base[n])}
        assert changed and all(n.startswith(prefix) for n in changed), (mode, sorted(changed)[:3])
    assert all(torch.equal(p, base[n]) for n, p in models.gold.named_parameters())  # the input is untouched


# ---------------------------------------------------------------------- the demo, reduced
def test_reduced_demo_meets_the_vkd_bars(toy, tmp_path):
    models, _ = toy
    config = DemoConfig(methods=("vkd", "grad_diff"), overrides={"grad_diff": {"steps": 30}},
                        relearn=RelearnConfig(steps=10))
    report = run_demo(models, config, output_dir=tmp_path, progress=False, environment={"test": True})
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["vanilla", "gold", "vkd", "grad_diff"]
    v, g, k = rows["vanilla"], rows["gold"], rows["vkd"]
    chance = 1 / 8
    # the issue's bars, restated from the rows (independently of the report's own checks)
    assert k["forget_vqa"] <= max(chance, g["forget_vqa"]) + 0.10
    assert k["forget_vqa_unseen"] <= max(chance, g["forget_vqa_unseen"]) + 0.10
    assert k["forget_qa"] == v["forget_qa"] and k["retain_qa"] == v["retain_qa"]
    assert k["retain_vqa"] >= v["retain_vqa"] - 0.05
    assert report["details"]["vkd"]["text_logits_identical"] is True
    assert all(c["ok"] for c in report["checks"]) and len(report["checks"]) == 6
    for r in (k, rows["grad_diff"], g):
        assert {"recovery_llm", "recovery_visual"} <= set(r)
    assert k["trainable"] > 0 and k["seconds"] > 0 and rows["grad_diff"]["steps"] <= 30
    # weights + grads + 2 AdamW moments of the trained tensors, plus the teacher cache for VKD
    assert k["state_mib"] > 16 * k["trainable"] / 2**20  # > : the teacher cache adds its bytes
    assert rows["grad_diff"]["state_mib"] == pytest.approx(16 * rows["grad_diff"]["trainable"] / 2**20)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["rows"][2]["method"] == "vkd" and saved["environment"] == {"test": True}
    assert "| vkd |" in (tmp_path / "report.md").read_text() and (tmp_path / "report.png").stat().st_size > 1000


# ---------------------------------------------------------------------- commands
def _run(*args, cwd, cache):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["VKD_FAST_CACHE_DIR"] = str(cache)
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900, check=False)


def test_eval_and_relearn_commands(toy, tmp_path):
    models, cache = toy
    van, gold = tmp_path / "vanilla", tmp_path / "gold"
    models.vanilla.save_pretrained(van)
    models.tokenizer.save_pretrained(van)
    models.gold.save_pretrained(gold)  # no tokenizer here: --tokenizer is needed
    out = _run("eval", str(van), "--identities", "12", "--forget-fraction", "0.25", "--output", str(tmp_path / "e.json"), cwd=tmp_path, cache=cache)
    assert out.returncode == 0, out.stderr
    got = json.loads((tmp_path / "e.json").read_text())["metrics"]
    want = evaluate(models.vanilla, models.tokenizer, toy_eval_sets(models.world))
    for key in ("forget_vqa", "forget_vqa_unseen", "forget_qa", "retain_vqa", "retain_qa"):
        assert got[key] == pytest.approx(want[key], abs=1.5 / want["n"][key]), key  # sdpa vs eager: near-ties
    assert "forget VQA" in out.stdout
    out = _run("relearn", str(gold), "--before", str(van), "--tokenizer", str(van), "--identities", "12", "--forget-fraction", "0.25", "--steps",
               "3", "--modes", "visual", "--output", str(tmp_path / "r.json"), cwd=tmp_path, cache=cache)
    assert out.returncode == 0, out.stderr
    rel = json.loads((tmp_path / "r.json").read_text())
    assert list(rel["modes"]) == ["visual"] and rel["n_attack"] == rel["n_held_out"]
    assert "recovery" in out.stdout
    out = _run("eval", str(gold), "--identities", "12", "--forget-fraction", "0.25", "--data", "mllmu", cwd=tmp_path, cache=cache)
    assert out.returncode == 2 and "--data mllmu needs --root" in out.stderr
    out = _run("demo", "--methods", "vkd,nope", cwd=tmp_path, cache=cache)
    assert out.returncode == 2 and "methods must be a non-empty subset" in out.stderr


def test_free_form_answers_of_the_vanilla_model(toy):
    # the vanilla model answers with the attribute's word as its first generated token
    models, _ = toy
    w = models.world
    sets = {"retain_qa": w.text_items(w.retain_ids[:4])}
    free = {"retain_generation": w.text_items(w.retain_ids[:4])}
    out = evaluate(models.vanilla, models.tokenizer, sets, free_form_sets=free, max_new_tokens=1)
    assert out["retain_generation_exact_match"] >= 0.9 and out["retain_generation_rouge_l"] >= 0.9
    assert out["n"]["retain_generation"] == 16


def test_model_config_errors():
    with pytest.raises(ValueError, match="max_steps must be a positive int, got 0"):
        ToyModelConfig(max_steps=0)
    with pytest.raises(ValueError, match="need 0 < min_accuracy <= target_accuracy <= 1"):
        ToyModelConfig(min_accuracy=0.99, target_accuracy=0.9)
    with pytest.raises(TypeError, match="config must be a ToyWorldConfig"):
        ToyWorld({"seed": 1})
