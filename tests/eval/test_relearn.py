"""The relearning attack (vkd_fast.eval.relearn): splits and trainable sets per mode."""

from __future__ import annotations

import pytest
import torch

from vkd_fast.data import ATTRIBUTES
from vkd_fast.eval import (
    RelearnConfig,
    relearn,
    split_attack,
)


@pytest.mark.slow
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
