"""The toy world's oracle (vkd_fast.data.toy_model: ToyModels.oracle, build_oracle): the vanilla LLM,
frozen, with a vision tower + projector re-initialised and trained on retain people only; cached."""

import time

import pytest
import torch

from vkd_fast.adapters import get_adapter
from vkd_fast.eval import evaluate
from vkd_fast.tasks import toy_eval_sets

ORACLE_TEST_STEPS = 400  # the reduced world's schedule; the default world's is ORACLE_STEPS


@pytest.mark.slow
def test_oracle_keeps_the_llm_retrains_v_p_on_retain_people_and_is_cached(toy):
    models, _ = toy
    oracle = models.oracle(ORACLE_TEST_STEPS)
    visual = set(get_adapter(oracle).trainable_names("vision+projector"))
    vanilla = dict(models.vanilla.named_parameters())
    for name, p in oracle.named_parameters():
        assert not p.requires_grad
        if name in visual:
            assert not torch.equal(p, vanilla[name]), name  # re-initialised and trained anew
        else:
            assert torch.equal(p, vanilla[name]), name  # the language model is the vanilla's, bit for bit
    folder = models.path / f"oracle-{ORACLE_TEST_STEPS}"
    assert (folder / "oracle.json").exists() and (folder / "preprocessor_config.json").exists()
    t = time.perf_counter()
    again = models.oracle(ORACLE_TEST_STEPS)  # from the cache: no training
    assert time.perf_counter() - t < 30
    assert all(torch.equal(a, b) for a, b in zip(oracle.parameters(), again.parameters()))
    sets = toy_eval_sets(models.world)
    acc = evaluate(oracle, models.tokenizer, sets)
    gold = evaluate(models.gold, models.tokenizer, sets)
    # it learned the retain people's images (the build's bar), never saw the forget people's: their image
    # questions are no better answered than by gold; text questions are the vanilla LLM's own
    assert acc["retain_vqa"] >= 0.95
    assert acc["forget_vqa"] <= gold["forget_vqa"] + 0.25
    assert acc["forget_qa"] == 1.0 and acc["retain_qa"] == 1.0
    with pytest.raises(ValueError, match="steps must be"):
        models.oracle(0)
