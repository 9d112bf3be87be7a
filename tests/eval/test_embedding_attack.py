"""The embedding attack (vkd_fast.eval.embedding_attack): the replacing hook is exact, the attack moves
no weight, reaches its own objective and reports the relearning attack's recovery."""

import _tiny_models as T
import pytest
import torch
from _items import FORGET, qa

from vkd_fast.adapters import get_adapter
from vkd_fast.eval.embedding_attack import _own_tokens, _Replace, embedding_attack
from vkd_fast.eval.metrics import recovery
from vkd_fast.eval.relearn import RelearnConfig, held_out_accuracy, split_attack
from vkd_fast.utils.text import collate_qa, encode_qa


def test_replacing_with_the_own_tokens_changes_nothing_and_bad_shapes_are_refused():
    model, tok = T.tiny_llava().eval(), T.tiny_tokenizer()
    ad = get_adapter(model)
    module = ad.projector_modules[-1]
    item = qa([FORGET[0]], "a pilot")[0]
    examples = encode_qa(ad, tok, [item, {**item, "answer": "baker"}], "items")  # two rows, one image
    own = _own_tokens(model, ad, module, examples[0])
    for rows, exact in (([examples[0]], True), (examples, False)):
        inputs, _ = collate_qa(ad, rows, 0)
        with torch.no_grad():
            plain = model(**inputs).logits
            hook = _Replace(module, own)
            try:
                replaced = model(**inputs).logits
            finally:
                hook.remove()
        # one row: the very computation; two: the tokens repeated (the projector's own batch of two may
        # round differently in the last bits)
        assert torch.equal(plain, replaced) if exact else torch.allclose(plain, replaced, atol=1e-5)
    hook = _Replace(module, torch.zeros(1, 3, 5))
    try:
        with pytest.raises(RuntimeError, match="is not copies of one image's tokens"), torch.no_grad():
            model(**inputs)
    finally:
        hook.remove()


@pytest.mark.slow
def test_the_attack_moves_no_weight_and_reaches_its_objective(toy):
    models, _ = toy
    world, tok = models.world, models.tokenizer
    forget = world.image_items(world.forget_ids, "train") + world.image_items(world.forget_ids, "unseen")
    split = RelearnConfig(attributes=("job", "city"))
    before = held_out_accuracy(models.vanilla, tok, forget, split)
    model = models.gold
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = embedding_attack(model, tok, forget, split, acc_before=before, steps=40)
    assert all(torch.equal(p, weights[n]) and not p.requires_grad for n, p in model.named_parameters())
    attack, held = split_attack(forget, split)
    assert out["images"] == len({id(it["image"]) for it in forget})
    # the learned tokens make W answer the taught questions (its objective) ...
    assert out["acc_taught"] >= 0.9
    # ... and the recovery is the relearning attack's formula on the held-out questions
    assert out["recovery"] == pytest.approx(recovery(out["acc_before"], out["acc_after_unlearn"], out["acc_after_attack"]))
    assert 0 <= out["acc_after_attack"] <= 1 and out["acc_before"] == before
    with pytest.raises(ValueError, match="steps must be a positive int"):
        embedding_attack(model, tok, forget, split, acc_before=before, steps=0)


def test_a_failure_mid_attack_leaves_the_model_as_it_was(monkeypatch):
    import vkd_fast.eval.embedding_attack as E
    from vkd_fast.data import ToyWorld, ToyWorldConfig

    model, tok = T.tiny_llava().train(), T.tiny_tokenizer()
    world = ToyWorld(ToyWorldConfig(n_identities=4))
    items = [{**it, "question": "what is the job of this person ?", "options": ["baker", "pilot"],
              "answer": "pilot"} for it in world.image_items(world.forget_ids, "train")[:8]]
    module = get_adapter(model).projector_modules[-1]
    flags = [p.requires_grad for p in model.parameters()]

    def broken(*args, **kwargs):
        raise FloatingPointError("stop")

    monkeypatch.setattr(E, "answer_ce", broken)
    with pytest.raises(FloatingPointError):
        embedding_attack(model, tok, items, RelearnConfig(attributes=("job",)), acc_before=1.0, steps=2)
    assert not module._forward_hooks  # the projector emits its own tokens again
    assert [p.requires_grad for p in model.parameters()] == flags and model.training
