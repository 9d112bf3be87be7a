"""Collator for question-answer training batches of any adapter's model family: the family's prompt
(chat template when the tokenizer has one), its image processing, and labels on the answer tokens
only (-100 elsewhere)."""

from __future__ import annotations

from ..adapters import get_adapter
from ..utils.text import collate_qa, encode_qa, pad_id


class QACollator:
    """``QACollator(model, tokenizer)(items) -> (model inputs, labels)`` for items ``{"image" (PIL),
    "question", "answer"}``; ``model(**inputs).logits`` lines up with ``labels`` (shift by one
    for next-token loss, as ``transformers`` losses do). Usable as a ``DataLoader`` ``collate_fn``."""

    def __init__(self, model_or_adapter, tokenizer):
        self.adapter = model_or_adapter if hasattr(model_or_adapter, "prompt") else get_adapter(model_or_adapter)
        self.tokenizer = tokenizer
        self.pad_id = pad_id(tokenizer)

    def __call__(self, items: list[dict]):
        items = list(items)
        if not items:
            raise ValueError("items must not be empty")
        return collate_qa(self.adapter, encode_qa(self.adapter, self.tokenizer, items, "items"), self.pad_id)
