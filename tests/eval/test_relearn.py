"""The relearning attack (vkd_fast.eval.relearn): splits that test relearning (never a trained pair),
trainable sets per mode, the attack grid over seeds and its worst case."""

from __future__ import annotations

import math

import pytest
import torch

from vkd_fast.data import ATTRIBUTES, ToyWorld, ToyWorldConfig
from vkd_fast.eval import RelearnConfig, relearn, split_attack
from vkd_fast.eval.relearn import AttackGrid, attack_grid, pair_key, parse_split


def _items():
    w = ToyWorld(ToyWorldConfig(n_identities=12, forget_fraction=0.25))
    return w.image_items(w.forget_ids, "train") + w.image_items(w.forget_ids, "unseen")


def test_attribute_split():
    items = _items()
    attack, held = split_attack(items, RelearnConfig())
    assert {it["attribute"] for it in attack} == {"job", "city"} and {it["attribute"] for it in held} == {"hobby", "pet"}
    with pytest.raises(ValueError, match="both must be non-empty"):
        split_attack(items, RelearnConfig(attributes=tuple(ATTRIBUTES)))
    with pytest.raises(ValueError, match="modes must be a non-empty subset"):
        RelearnConfig(modes=("lm",))


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_fraction_split_draws_pairs_never_single_questions(fraction):
    items = _items()  # 3 people x 4 attributes = 12 pairs, each asked on 8 images
    pairs = {pair_key(it) for it in items}
    assert len(pairs) == 12
    attack, held = split_attack(items, RelearnConfig(split="fraction", fraction=fraction, seed=3))
    a, h = {pair_key(it) for it in attack}, {pair_key(it) for it in held}
    assert not a & h  # relearning, not learning: no (person, attribute) pair is trained and tested
    assert len(a) == round(fraction * 12) and len(attack) == 8 * len(a) and len(attack) + len(held) == len(items)
    other, _ = split_attack(items, RelearnConfig(split="fraction", fraction=fraction, seed=4))
    assert {pair_key(it) for it in other} != a  # the seed draws the pairs
    # MLLMU-Bench items: the person is "id", the pair's question is the question text
    mllmu = [{"id": p, "question": q, "image": object(), "options": {"A": "x"}, "answer": "A"}
             for p in ("p0", "p1") for q in ("q1", "q2") for _ in range(3)]
    attack, held = split_attack(mllmu, RelearnConfig(split="fraction", fraction=0.5))
    assert len(attack) == len(held) == 6 and not {pair_key(it) for it in attack} & {pair_key(it) for it in held}
    with pytest.raises(ValueError, match=r"split='fraction' .* 2 of the 2 forget VQA items have no person .*"
                                         r"--person-per-image"):
        split_attack([{"question": "q", "attribute": "job"}] * 2, RelearnConfig(split="fraction"))
    # CLEAR-style items: the person is the name (identity, then name, then id: vkd_fast.data.person_of)
    clear = [{"name": p, "id": f"row{k}", "question": "q", "image": object()} for k, p in enumerate("aabb")]
    assert {pair_key(it) for it in clear} == {("a", "q"), ("b", "q")}


def test_grid_cells_and_split_specs():
    grid = AttackGrid()
    assert len(grid.configs()) == 3 * 2 * 2  # splits x lrs x steps (modes and seeds run inside each cell)
    assert {c.split for c in grid.configs()} == {"attributes", "fraction"}
    assert parse_split("attributes:hobby,pet") == {"split": "attributes", "attributes": ("hobby", "pet")}
    assert parse_split("fraction:0.5") == {"split": "fraction", "fraction": 0.5}
    for bad in ("fraction:x", "attributes:", "pairs:0.5"):
        with pytest.raises(ValueError, match="must be 'attributes:<a>,<b>,...' or 'fraction"):
            parse_split(bad)
    with pytest.raises(ValueError, match="fraction must be in"):
        AttackGrid(splits=("fraction:1.5",))
    with pytest.raises(ValueError, match="seeds must not be empty"):
        AttackGrid(seeds=())
    assert AttackGrid.default_attack().configs() == [RelearnConfig()]


@pytest.mark.slow
def test_attack_modes_train_only_their_set_and_the_grid_averages_seeds(toy):
    models, _ = toy
    w = models.world
    items = w.image_items(w.forget_ids, "train")
    attack, _ = split_attack(items, RelearnConfig())
    # llm mode changes only the language model (+ head), visual mode only the vision tower + projector
    base = dict(models.gold.named_parameters())
    for mode, prefix in (("llm", ("model.language_model", "lm_head")),
                         ("visual", ("model.vision_tower", "model.multi_modal_projector"))):
        attacked = relearn(models.gold, models.tokenizer, attack, mode, RelearnConfig(steps=3))
        changed = {n for n, p in attacked.named_parameters() if not torch.equal(p, base[n])}
        assert changed and all(n.startswith(prefix) for n in changed), (mode, sorted(changed)[:3])
    assert all(torch.equal(p, base[n]) for n, p in models.gold.named_parameters())  # the input is untouched
    grid = AttackGrid(splits=("attributes:job,city", "fraction:0.5"), lrs=(1e-3,), steps=(3,), seeds=(0, 1))
    cache = {}
    out = attack_grid(models.gold, models.tokenizer, items, grid, before=models.vanilla, before_cache=cache)
    assert len(out["cells"]) == 2 * 2 and len(cache) == 1 + 2  # one held-out set per seed for the fraction split
    for c in out["cells"]:
        r = torch.tensor(c["recoveries"], dtype=torch.float64)
        assert len(c["recoveries"]) == 2 and math.isclose(c["recovery"], float(r.mean()))
        assert math.isclose(c["recovery_std"], float(r.std()))
    for mode in ("llm", "visual"):
        cells = [c for c in out["cells"] if c["mode"] == mode]
        assert out["worst"][mode]["recovery"] == max(c["recovery"] for c in cells)
