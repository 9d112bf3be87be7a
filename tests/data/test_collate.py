"""The question-answer collator (vkd_fast.data.collate)."""

from __future__ import annotations

import _tiny_models as T
import pytest
import torch
from PIL import Image

import vkd_fast.adapters as A
from vkd_fast.data import QACollator


@pytest.mark.parametrize("build", [T.tiny_llava, T.tiny_qwen2_vl], ids=["llava", "qwen2_vl"])
def test_qa_collator_labels_only_the_answer(build):
    model = build()
    tok = T.tiny_tokenizer(None if build is T.tiny_llava else T.QWEN_SPECIAL_TOKENS)
    image = Image.new("RGB", (32, 32), (10, 200, 30))
    items = [{"image": image, "question": "what is the job of this person ?", "answer": "baker"},
             {"image": image, "question": "what is the job ?", "answer": "mira tolvan"}]
    inputs, labels = QACollator(model, tok)(items)
    assert labels.shape == inputs["input_ids"].shape
    for row, it in enumerate(items):
        answer = tok(" " + it["answer"], add_special_tokens=False).input_ids
        assert labels[row][labels[row] != -100].tolist() == answer
        n = int(inputs["attention_mask"][row].sum())
        assert inputs["input_ids"][row, n - len(answer): n].tolist() == answer  # the answer ends the prompt
    with torch.no_grad():
        assert model(**inputs).logits.shape[:2] == labels.shape
    assert QACollator(A.get_adapter(model), tok).adapter is not None
    with pytest.raises(ValueError, match="items must not be empty"):
        QACollator(model, tok)([])
