"""The output-level baselines' shared behaviour through vf.unlearn (vkd_fast.methods.qa)."""

from __future__ import annotations

import _tiny_models as T
import pytest
from _items import FORGET, RETAIN, qa

import vkd_fast as vf


@pytest.mark.parametrize("method", ["ga", "grad_diff", "kl_min", "npo", "mmunlearner"])
def test_output_level_methods_lower_their_objective(method):
    model = T.tiny_llava()
    tok = T.tiny_tokenizer()
    cfg = vf.UnlearnConfig(steps=8, batch_size=2, lr=3e-3)
    opts = {"mask_ratio": 0.5, "mask_batches": 2} if method == "mmunlearner" else None
    result = vf.unlearn(model, qa(FORGET, "baker"), qa(RETAIN, "pilot"), method=method, config=cfg, options=opts,
                        tokenizer=tok)
    h = result.history
    assert h[-1]["loss"] < h[0]["loss"], [r["loss"] for r in h]
    if method in ("ga", "grad_diff", "npo"):
        assert h[-1]["ce_forget"] > h[0]["ce_forget"]  # the forget answers become less likely
    if method == "kl_min":
        assert h[0]["kl_retain"] == pytest.approx(0.0, abs=1e-6)  # the student starts as the teacher
    if method == "mmunlearner":
        trainable = result.trainable
        assert 0 < trainable["masked_trainable"] < sum(p.numel() for p in model.parameters())
    names = set(result.trainable["names"])
    lm = {n for n, _ in model.named_parameters() if ".language_model." in n or n.startswith("lm_head")}
    assert names & lm  # output-level baselines update the language model
