"""Prompt + answer encoding shared by the methods, the data collators and the evaluation: token ids
with labels on the answer tokens only (-100 elsewhere), right padding, and the answer tokens'
log-probabilities. ``adapter`` is any :class:`vkd_fast.adapters.VisualAdapter` (duck-typed: its
``preprocess``, ``num_image_tokens``, ``prompt``, ``collate`` and ``model_inputs``).

The BOS convention, stated once: :func:`encode_prompt` (training, the likelihood protocol, the
relearning attack, the probes) tokenises the adapter's prompt text *without* the tokenizer's special
tokens -- the prompt template (the family's, or the tokenizer's chat template) writes every token it
wants itself. The benchmark protocols (:mod:`vkd_fast.eval.protocols.prompt`) follow their
benchmark's own code instead: the LLaVA-1.5 string style adds the tokenizer's special tokens (BOS),
as MLLMU-Bench's and CLEAR's scripts do; the chat style adds none.
"""

from __future__ import annotations

import torch


def encode_prompt(adapter, tokenizer, question: str, n_image_tokens: int | None = None,
                  answer: str | None = None) -> list[int]:
    """Token ids of ``adapter.prompt(tokenizer, question, n_image_tokens, answer)``, no special tokens
    added (the package's one convention outside the benchmark protocols; see the module docstring)."""
    text = adapter.prompt(tokenizer, question, n_image_tokens=n_image_tokens, answer=answer)
    return tokenizer(text, add_special_tokens=False).input_ids


def encode_qa(adapter, tokenizer, items: list[dict], name: str) -> list[dict]:
    """Each item (``image``, ``question``, ``answer``) -> input_ids, labels (-100 outside the answer)
    and the image inputs."""
    out = []
    for i, it in enumerate(items):
        if not it.get("question") or not it.get("answer"):
            raise ValueError(f"{name}[{i}] has no question/answer: output-level methods train on answer tokens, "
                             "so every item needs 'question' and 'answer'")
        image = adapter.preprocess([it["image"]])
        n = adapter.num_image_tokens(**image)[0]
        p_ids = encode_prompt(adapter, tokenizer, it["question"], n)
        f_ids = encode_prompt(adapter, tokenizer, it["question"], n, answer=it["answer"])
        if f_ids[: len(p_ids)] != p_ids or len(f_ids) == len(p_ids):
            raise ValueError(f"{name}[{i}]: the prompt's tokens are not a prefix of prompt+answer's with this "
                             "tokenizer, so the answer tokens cannot be located")
        labels = [-100] * len(p_ids) + f_ids[len(p_ids):]
        out.append({"input_ids": torch.tensor(f_ids), "labels": torch.tensor(labels), "image": image})
    return out


def pad_right(rows, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows (lists or 1-D tensors) -> right-padded ``(ids [B, W], mask [B, W])``, both long,
    ``W`` the longest row; ``mask`` is 1 on real tokens."""
    rows = [torch.as_tensor(r, dtype=torch.long).reshape(-1) for r in rows]
    width = max(r.numel() for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : r.numel()], mask[i, : r.numel()] = r, 1
    return ids, mask


def pad_id(tokenizer) -> int:
    """The tokenizer's padding id, 0 when it has none (padded positions are masked anyway)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def collate_qa(adapter, examples: list[dict], pad_id: int) -> tuple[dict, torch.Tensor]:
    """Right-padded batch: (model inputs, labels)."""
    ids, mask = pad_right([e["input_ids"] for e in examples], pad_id)
    labels = pad_right([e["labels"] for e in examples], -100)[0]
    images = adapter.collate([e["image"] for e in examples])
    return adapter.model_inputs(ids, mask, **images), labels


def answer_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of the answer tokens: (logp [B, L-1] zero off-answer, mask [B, L-1])."""
    logits, target = logits[:, :-1].float(), labels[:, 1:]
    mask = target != -100
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def answer_ce(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the answer tokens (``logp``, ``mask`` from :func:`answer_logprobs`)."""
    return -(logp.sum() / mask.sum().clamp_min(1))
