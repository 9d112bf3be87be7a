"""The evaluation runner of docs/method.md §4: every accuracy metric on a task's evaluation sets and
the answer-collapse share on forget images (the likelihood protocol), or a registered benchmark
protocol (:mod:`vkd_fast.eval.protocols`). It knows no task or protocol names.

Evaluation sets are multiple-choice item lists keyed by metric name (``EVAL_SETS``); a task
provides whichever it has (:mod:`vkd_fast.tasks`: the toy world has no real-world set, MLLMU-Bench
has all six).
"""

from __future__ import annotations

from collections import defaultdict

from ..adapters import get_adapter
from ..utils.items import question_kind
from .metrics import answer_collapse_share, cloze, free_form, multiple_choice

#: metric name -> what it measures
EVAL_SETS = {
    "forget_vqa": "forget people, training images + question (goal: down to chance / the gold model)",
    "forget_vqa_unseen": "forget people, images no unlearning run saw (goal: down to chance / gold)",
    "forget_qa": "forget people, text-only question (goal: unchanged)",
    "retain_vqa": "retain people, image + question (goal: unchanged)",
    "retain_qa": "retain people, text-only question (goal: unchanged)",
    "real_world_vqa": "held-out general image questions, MLLMU-Bench Retain_Set (goal: unchanged)",
}


def collapse_share(items: list[dict], predictions: list[str]) -> float:
    """Answer-collapse share: within each question kind (the item's ``attribute`` or its question
    text) the fraction of answers equal to the most frequent one, averaged over kinds weighted by
    their size. 1/len(options) ~ a model answering uniformly; 1.0 ~ one answer for everything."""
    groups = defaultdict(list)
    for it, p in zip(items, predictions):
        groups[question_kind(it)].append(p)
    total = sum(len(g) for g in groups.values())
    return sum(answer_collapse_share(g) * len(g) for g in groups.values()) / total


def _benchmark_protocol(model, tokenizer, data, adapter, protocol: str, options: dict) -> dict:
    from .protocols import ModelGenerator
    from .protocols.registry import PROTOCOLS

    spec = PROTOCOLS.get(protocol)
    if not isinstance(data, spec.data_type):
        raise TypeError(f"protocol={protocol!r} evaluates a benchmark folder: pass {spec.loader} as the third "
                        f"argument, got {type(data).__name__}")
    style = options.pop("style", None)
    unknown = set(options) - set(spec.options)
    if unknown:
        raise TypeError(f"protocol={protocol!r} takes {', '.join(spec.options)}; got {sorted(unknown)}")
    generator = ModelGenerator(model, adapter, tokenizer, style)
    out = spec.run(model, tokenizer, data, adapter, generator, style, options)
    out["settings"]["prompt_format"] = generator.describe()
    out["settings"]["model_type"] = getattr(getattr(model, "config", None), "model_type", None)
    return out


def evaluate(model, tokenizer, sets, *, protocol: str = "likelihood", adapter=None, batch_size: int | None = None,
             free_form_sets: dict[str, list[dict]] | None = None, max_new_tokens: int | None = None,
             **protocol_options) -> dict:
    """Evaluate ``model`` under ``protocol`` (docs/method.md §4); the model is evaluated in eval mode
    and left as it was.

    ``"likelihood"`` (default; the toy world's only protocol): ``sets`` is a dict of multiple-choice
    sets (:func:`vkd_fast.tasks.toy_eval_sets`, :func:`vkd_fast.tasks.mllmu_eval_sets`); returns the
    accuracy on each (the option with the highest length-normalised log-likelihood; ``batch_size``
    prompts per forward, default 64), ``collapse_share`` over the forget image sets and ``n`` (items
    per set). ``free_form_sets`` (e.g. :func:`vkd_fast.tasks.mllmu_free_form_sets`): sets whose name
    ends in ``_cloze`` give ``<name>`` = exact-match accuracy of the filled blank, the others
    ``<name>_rouge_l`` and ``<name>_exact_match`` of greedy answers (``max_new_tokens``, default 32).

    Any other ``protocol`` is a registered :class:`~vkd_fast.eval.protocols.BenchmarkProtocol`; shipped:
    ``"mllmu"``: MLLMU-Bench's own protocol on ``sets`` = :func:`~vkd_fast.eval.protocols.
    load_mllmu_benchmark` (options ``seed``, ``shots``, ``tasks``, ``style``; 50 new tokens, as the
    benchmark); ``"clear"``: CLEAR's on ``sets`` = :func:`~vkd_fast.eval.protocols.load_clear_benchmark`
    (options ``seed``, ``reference``, ``generation_image``, ``max_new_tokens`` (default 300, CLEAR's),
    ``style``). Both return ``{"results": the benchmark's own
    JSON, "records": one audit dict per question (prompt, raw generation, parse, verdict),
    "settings"}``."""
    from .protocols import available_protocols
    from .protocols.registry import PROTOCOLS

    if protocol not in available_protocols():
        raise ValueError(f"protocol must be one of {available_protocols()}, got {protocol!r}")
    adapter = adapter or get_adapter(model)
    if protocol != "likelihood":
        unused = [name for name, value in (("batch_size", batch_size), ("free_form_sets", free_form_sets))
                  if value is not None]
        if PROTOCOLS.get(protocol).fixed_length and max_new_tokens is not None:
            unused.append("max_new_tokens")  # e.g. MLLMU-Bench's own length (50) is part of its protocol
        if unused:
            raise TypeError(f"protocol={protocol!r} does not use {', '.join(unused)} (likelihood options)")
        options = dict(protocol_options)
        if max_new_tokens is not None:
            options["max_new_tokens"] = max_new_tokens
        was_training = model.training
        model.eval()
        try:
            return _benchmark_protocol(model, tokenizer, sets, adapter, protocol, options)
        finally:
            model.train(was_training)
    if protocol_options:
        raise TypeError(f"protocol='likelihood' takes no {sorted(protocol_options)}")
    batch_size = 64 if batch_size is None else batch_size
    max_new_tokens = 32 if max_new_tokens is None else max_new_tokens
    if not isinstance(sets, dict) or not sets:
        raise ValueError("sets must be a non-empty dict of evaluation-set name -> multiple-choice items")
    was_training = model.training
    model.eval()
    try:
        out, counts, forget_items, forget_preds = {}, {}, [], []
        for name, items in sets.items():
            result = multiple_choice(model, adapter, tokenizer, items, batch_size=batch_size)
            out[name], counts[name] = result["accuracy"], result["n"]
            if name.startswith("forget_vqa"):
                forget_items += items
                forget_preds += result["predictions"]
        if forget_items:
            out["collapse_share"] = collapse_share(forget_items, forget_preds)
        for name, items in (free_form_sets or {}).items():
            if name.endswith("_cloze"):
                result = cloze(model, adapter, tokenizer, items, max_new_tokens=min(max_new_tokens, 8))
                out[name] = result["accuracy"]
            else:
                result = free_form(model, adapter, tokenizer, items, max_new_tokens=max_new_tokens)
                out[f"{name}_rouge_l"], out[f"{name}_exact_match"] = result["rouge_l"], result["exact_match"]
            counts[name] = result["n"]
        out["n"] = counts
        return out
    finally:
        model.train(was_training)
