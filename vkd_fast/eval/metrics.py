"""Metrics of docs/method.md §4.

* multiple-choice questions: each option scored by its length-normalised log-likelihood after the
  prompt (an image question when an image is given, else text-only); the best-scoring option is the
  model's answer;
* free-form answers: ROUGE-L F1 (the maintained ``rouge-score`` package) and exact match;
* the answer-collapse share and the relearning recovery.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import torch

from ..utils.text import answer_logprobs, encode_prompt, pad_id, pad_right
from ..utils.validate import check_positive_int

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def _normalise(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def exact_match(prediction: str, reference: str) -> bool:
    """Equal after lower-casing, removing punctuation and collapsing whitespace."""
    return _normalise(prediction) == _normalise(reference)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two strings (rouge-score, no stemming)."""
    return rouge_scores(prediction, reference, ("rougeL",), stemmer=False)["rougeL"].fmeasure


def require_text_metrics() -> None:
    """ROUGE (rouge-score) and BLEU (nltk): a clear error before any work."""
    import importlib.util

    missing = [name for name, module in (("rouge-score", "rouge_score"), ("nltk", "nltk"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(f"the benchmark protocols score generations with {' and '.join(missing)}: pip install "
                          "'vkd-fast[hf]'")


def rouge_scores(prediction: str, reference: str, types=("rouge1", "rouge2", "rougeL"), *,
                 stemmer: bool = True) -> dict:
    """``{type: Score(precision, recall, fmeasure)}`` of ``prediction`` against ``reference`` (rouge-score,
    Porter stemming on by default, as MLLMU-Bench and CLEAR score)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:  # pragma: no cover - rouge-score is in the dev / hf extras
        raise RuntimeError("ROUGE needs rouge-score: pip install 'vkd-fast[hf]'") from exc
    return rouge_scorer.RougeScorer(list(types), use_stemmer=stemmer).score(reference, prediction)


def bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU of whitespace tokens (nltk ``sentence_bleu``, uniform 4-gram weights, smoothing
    method 1), as MLLMU-Bench scores generations: case-sensitive, 0.0 for an empty prediction."""
    try:
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    except ImportError as exc:  # pragma: no cover - nltk comes with rouge-score
        raise RuntimeError("BLEU needs nltk: pip install 'vkd-fast[hf]'") from exc
    hypothesis = prediction.split()
    if not hypothesis:
        return 0.0
    return float(sentence_bleu([reference.split()], hypothesis, smoothing_function=SmoothingFunction().method1))


def answer_collapse_share(answers) -> float:
    """Fraction of answers equal to the most frequent one (1.0: the model answers one thing to all)."""
    answers = list(answers)
    if not answers:
        raise ValueError("answer_collapse_share needs at least one answer")
    return Counter(answers).most_common(1)[0][1] / len(answers)


def recovery(acc_before_unlearn: float, acc_after_unlearn: float, acc_after_relearn: float) -> float:
    """(after relearning - after unlearning) / (before unlearning - after unlearning); NaN when
    unlearning changed nothing (there is nothing to recover)."""
    gap = acc_before_unlearn - acc_after_unlearn
    if gap == 0:
        return math.nan
    return (acc_after_relearn - acc_after_unlearn) / gap


@torch.no_grad()
def answer_mean_logprobs(model, adapter, prompt_ids: list[int], answers: list[tuple[str, list[int]]],
                         image_inputs: dict | None = None, pad: int = 0) -> list[float]:
    """Mean log-probability of each answer's tokens after one prompt, all answers in one forward.

    ``answers``: ``(name for errors, token ids of prompt + answer)``, each checked to extend
    ``prompt_ids``; ``image_inputs``: the prompt's processed images (repeated once per answer), or
    None; ``pad``: the id right padding uses (masked out)."""
    rows, labels = [], []
    for name, ids in answers:
        if ids[: len(prompt_ids)] != prompt_ids or len(ids) == len(prompt_ids):
            raise ValueError(f"{name}: its tokens do not follow the prompt's, cannot score it")
        rows.append(ids)
        labels.append([-100] * len(prompt_ids) + ids[len(prompt_ids):])
    input_ids, mask = pad_right(rows, pad)
    label_t = pad_right(labels, -100)[0]
    device = next(model.parameters()).device
    # one copy of the image per answer (for Qwen that repeats its patches and its grid row alike)
    images = {k: torch.cat([v] * len(rows)).to(device) for k, v in (image_inputs or {}).items()}
    inputs = adapter.model_inputs(input_ids.to(device), mask.to(device), **images)
    logp, answer_mask = answer_logprobs(model(**inputs).logits, label_t.to(device))
    return (logp.sum(1) / answer_mask.sum(1)).tolist()


def option_scores(model, adapter, tokenizer, question: str, options: list[str], image=None) -> list[float]:
    """Length-normalised log-likelihood of each option as the answer to ``question``."""
    if not options:
        raise ValueError("options must not be empty")
    image_inputs = adapter.preprocess([image]) if image is not None else None
    n = adapter.num_image_tokens(**image_inputs)[0] if image is not None else None
    prompt_ids = encode_prompt(adapter, tokenizer, question, n)
    answers = [(f"option {option!r}", encode_prompt(adapter, tokenizer, question, n, answer=option))
               for option in options]
    return answer_mean_logprobs(model, adapter, prompt_ids, answers, image_inputs)


def _option_ids(adapter, tokenizer, question: str, options: list[str], n_image_tokens) -> tuple[list, list]:
    prompt = encode_prompt(adapter, tokenizer, question, n_image_tokens)
    full = [encode_prompt(adapter, tokenizer, question, n_image_tokens, answer=o) for o in options]
    return prompt, full


@torch.no_grad()
def _single_token_predictions(model, adapter, tokenizer, group: list[tuple], batch_size: int) -> dict[int, int]:
    """Items whose options are all one token after the prompt: one forward per batch of prompts, the
    option scores are the next-token log-probabilities (identical to the length-normalised
    log-likelihood of a one-token answer). ``group``: (item index, prompt ids, option ids, the image's
    processed inputs or None)."""
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    out = {}
    for start in range(0, len(group), batch_size):
        chunk = group[start: start + batch_size]
        ids, mask = pad_right([p for _, p, _, _ in chunk], pad)
        images = adapter.collate([g[3] for g in chunk]) if chunk[0][3] is not None else {}
        inputs = adapter.model_inputs(ids.to(device), mask.to(device), **{k: v.to(device) for k, v in images.items()})
        logits = model(**inputs).logits
        last = logits[torch.arange(len(chunk), device=device), mask.sum(1).to(device) - 1].float()
        for r, (i, _, opts, _) in enumerate(chunk):
            out[i] = int(last[r, torch.tensor(opts, device=device)].argmax())
    return out


def multiple_choice(model, adapter, tokenizer, items, batch_size: int = 32) -> dict:
    """Accuracy over items ``{"question", "options": [..] or {"A": ..}, "answer": option text or key,
    optional "image"}``; returns accuracy, predictions and the answer-collapse share.

    Items whose options are each a single token after the prompt (the toy world's; many letter-style
    benchmarks) are scored in batches of ``batch_size`` prompts with one forward each; the others
    with one forward per item over all its options (:func:`option_scores`). Both give the option with
    the highest length-normalised log-likelihood."""
    items = list(items)
    if not items:
        raise ValueError("multiple_choice needs at least one item")
    check_positive_int("batch_size", batch_size)
    adapter.require_language_model("evaluation")
    parsed, fast = [], {True: [], False: []}
    processed: dict[int, dict] = {}  # one preprocessing per distinct image object (items share images)
    for i, it in enumerate(items):
        options = it["options"]
        keys = list(options) if isinstance(options, dict) else list(range(len(options)))
        texts = [options[k] for k in keys]
        answer = it["answer"]
        if answer not in keys and answer not in texts:
            raise ValueError(f"item {i}: answer {answer!r} is neither an option key nor an option text")
        parsed.append((keys, texts, answer))
        image, image_inputs, n = it.get("image"), None, None
        if image is not None:
            if id(image) not in processed:
                processed[id(image)] = adapter.preprocess([image])
            image_inputs = processed[id(image)]
            n = adapter.num_image_tokens(**image_inputs)[0]
        prompt, full = _option_ids(adapter, tokenizer, it["question"], texts, n)
        if all(len(f) == len(prompt) + 1 and f[: len(prompt)] == prompt for f in full):
            fast[image is not None].append((i, prompt, [f[-1] for f in full], image_inputs))
    best = {}
    for group in fast.values():
        best.update(_single_token_predictions(model, adapter, tokenizer, group, batch_size))
    predictions, correct = [], 0
    for i, (it, (keys, texts, answer)) in enumerate(zip(items, parsed)):
        if i not in best:
            scores = option_scores(model, adapter, tokenizer, it["question"], texts, it.get("image"))
            best[i] = max(range(len(texts)), key=lambda j: scores[j])
        predictions.append(texts[best[i]])
        correct += keys[best[i]] == answer or texts[best[i]] == answer
    return {"accuracy": correct / len(items), "predictions": predictions,
            "collapse_share": answer_collapse_share(predictions), "n": len(items)}


@torch.no_grad()
def generate_ids(model, adapter, prompt_ids: list[int], image_inputs: dict | None, max_new_tokens: int,
                 pad_token_id: int | None = None) -> list[int]:
    """Greedy continuation (``model.generate``, no sampling) of one prompt's token ids with its images'
    processed inputs (``adapter.preprocess(images)``, or None for a text-only prompt): the new token
    ids only. One prompt at a time, so padding cannot change an answer."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], device=device)
    images = {k: v.to(device) for k, v in (image_inputs or {}).items()}
    inputs = adapter.model_inputs(ids, torch.ones_like(ids), **images)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def generation_pad_id(tokenizer) -> int | None:
    """The id ``generate`` pads with: the tokenizer's pad token, else its end-of-sequence token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def generate_answers(model, adapter, tokenizer, items, max_new_tokens: int = 32) -> list[str]:
    """Greedy answers (``model.generate``, no sampling) to items ``{"question", optional "image"}``, one
    item at a time (no padding effects), decoded without special tokens and stripped."""
    check_positive_int("max_new_tokens", max_new_tokens)
    adapter.require_language_model("generation")
    pad = generation_pad_id(tokenizer)
    answers = []
    for it in items:
        image = it.get("image")
        image_inputs = adapter.preprocess([image]) if image is not None else None
        n = adapter.num_image_tokens(**image_inputs)[0] if image is not None else None
        ids = encode_prompt(adapter, tokenizer, it["question"], n)
        new = generate_ids(model, adapter, ids, image_inputs, max_new_tokens, pad)
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers


def free_form(model, adapter, tokenizer, items, max_new_tokens: int = 32) -> dict:
    """Free-form answers (MLLMU-Bench ``Generation_Task``) against ``"answer"``: mean ROUGE-L F1, exact
    match share, the predictions."""
    items = list(items)
    if not items:
        raise ValueError("free_form needs at least one item")
    predictions = generate_answers(model, adapter, tokenizer, items, max_new_tokens)
    return {"rouge_l": sum(rouge_l(p, it["answer"]) for p, it in zip(predictions, items)) / len(items),
            "exact_match": sum(exact_match(p, it["answer"]) for p, it in zip(predictions, items)) / len(items),
            "predictions": predictions, "n": len(items)}


def cloze(model, adapter, tokenizer, items, max_new_tokens: int = 8) -> dict:
    """Fill-in-the-blank (MLLMU-Bench ``Mask_Task``, blank written ``__``): the model completes the
    sentence up to the blank; the fill is its first line, scored by exact match with ``"answer"``."""
    items = list(items)
    if not items:
        raise ValueError("cloze needs at least one item")
    bad = [i for i, it in enumerate(items) if "__" not in it["question"]]
    if bad:
        raise ValueError(f"cloze items {bad[:5]} have no blank '__' in their question")
    prompts = [{**it, "question": "Fill in the blank: " + it["question"]} for it in items]
    fills = [a.splitlines()[0] if a else "" for a in generate_answers(model, adapter, tokenizer, prompts,
                                                                       max_new_tokens)]
    return {"accuracy": sum(exact_match(f, it["answer"]) for f, it in zip(fills, items)) / len(items),
            "predictions": fills, "n": len(items)}
