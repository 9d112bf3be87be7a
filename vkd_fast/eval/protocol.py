"""The evaluation protocol of docs/method.md §4: the evaluation sets of a benchmark, every accuracy
metric on them and the answer-collapse share on forget images.

Evaluation sets are multiple-choice item lists keyed by metric name (``EVAL_SETS``); a benchmark
provides whichever it has (the toy world has no real-world set, MLLMU-Bench has all six).
"""

from __future__ import annotations

from collections import defaultdict

from ..adapters import get_adapter
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


def toy_eval_sets(world) -> dict[str, list[dict]]:
    """The toy world's evaluation sets (every metric but the real-world one)."""
    return {
        "forget_vqa": world.image_items(world.forget_ids, "train"),
        "forget_vqa_unseen": world.image_items(world.forget_ids, "unseen"),
        "forget_qa": world.text_items(world.forget_ids),
        "retain_vqa": world.image_items(world.retain_ids, "train"),
        "retain_qa": world.text_items(world.retain_ids),
    }


def mllmu_eval_sets(root, forget_split: str = "forget_5", retain_split: str = "retain_95",
                    limit: int | None = None) -> dict[str, list[dict]]:
    """MLLMU-Bench's evaluation sets from a local copy: forget / retain VQA and QA from the
    ``forget_NN`` / ``retain_NN`` folders, unseen-image forget VQA from ``Test_Set`` rows of the
    forget people (matched by ``ID``), real-world VQA from ``Retain_Set``. ``limit``: rows per file."""
    from ..data import load_mllmu_eval, mllmu_split_path

    forget = load_mllmu_eval(mllmu_split_path(root, forget_split), limit=limit)
    retain = load_mllmu_eval(mllmu_split_path(root, retain_split), limit=limit)
    sets = {"forget_vqa": forget["vqa"], "forget_qa": forget["qa"], "retain_vqa": retain["vqa"],
            "retain_qa": retain["qa"]}
    forget_ids = {it["id"] for it in forget["vqa"] + forget["qa"]}
    optional = {"forget_vqa_unseen": ("Test_Set", lambda it: it["id"] in forget_ids),
                "real_world_vqa": ("Retain_Set", lambda it: True)}
    for name, (split, keep) in optional.items():
        try:
            path = mllmu_split_path(root, split)
        except FileNotFoundError:
            continue  # a partial copy of the benchmark: that metric is not reported
        sets[name] = [it for it in load_mllmu_eval(path, limit=limit)["vqa"] if keep(it)]
    return {k: v for k, v in sets.items() if v}


def mllmu_free_form_sets(root, forget_split: str = "forget_5", retain_split: str = "retain_95",
                         limit: int | None = None) -> dict[str, list[dict]]:
    """MLLMU-Bench's generation (ROUGE-L) and cloze (exact match) items of the forget and retain splits:
    ``{"forget_generation", "forget_cloze", "retain_generation", "retain_cloze"}`` (empty ones left out)."""
    from ..data import load_mllmu_eval, mllmu_split_path

    out = {}
    for side, split in (("forget", forget_split), ("retain", retain_split)):
        ev = load_mllmu_eval(mllmu_split_path(root, split), limit=limit)
        out[f"{side}_generation"], out[f"{side}_cloze"] = ev["generation"], ev["cloze"]
    return {k: v for k, v in out.items() if v}


def collapse_share(items: list[dict], predictions: list[str]) -> float:
    """Answer-collapse share: within each question kind (the item's ``attribute`` or its question
    text) the fraction of answers equal to the most frequent one, averaged over kinds weighted by
    their size. 1/len(options) ~ a model answering uniformly; 1.0 ~ one answer for everything."""
    groups = defaultdict(list)
    for it, p in zip(items, predictions):
        groups[it.get("attribute", it["question"])].append(p)
    total = sum(len(g) for g in groups.values())
    return sum(answer_collapse_share(g) * len(g) for g in groups.values()) / total


def _benchmark_protocol(model, tokenizer, data, adapter, protocol: str, options: dict) -> dict:
    from .protocols import (
        ClearBenchmark,
        ClearScorer,
        MllmuBenchmark,
        ModelGenerator,
        evaluate_clear,
        evaluate_mllmu,
    )

    want = {"mllmu": (MllmuBenchmark, "load_mllmu_benchmark(root)"),
            "clear": (ClearBenchmark, "load_clear_benchmark(root)")}[protocol]
    if not isinstance(data, want[0]):
        raise TypeError(f"protocol={protocol!r} evaluates a benchmark folder: pass vkd_fast.eval.{want[1]} as the "
                        f"third argument, got {type(data).__name__}")
    style = options.pop("style", None)
    generator = ModelGenerator(model, adapter, tokenizer, style)
    if protocol == "mllmu":
        unknown = set(options) - {"seed", "shots", "tasks"}
        if unknown:
            raise TypeError(f"protocol='mllmu' takes seed, shots, tasks; got {sorted(unknown)}")
        out = evaluate_mllmu(generator, data, describe=generator.text, **options)
    else:
        unknown = set(options) - {"seed", "reference", "generation_image", "max_new_tokens"}
        if unknown:
            raise TypeError(f"protocol='clear' takes seed, reference, generation_image, max_new_tokens; got "
                            f"{sorted(unknown)}")
        out = evaluate_clear(generator, ClearScorer(model, adapter, tokenizer, style), data, describe=generator.text,
                             **options)
    out["settings"]["prompt_format"] = generator.describe()
    out["settings"]["model_type"] = getattr(getattr(model, "config", None), "model_type", None)
    return out


def evaluate(model, tokenizer, sets, *, protocol: str = "likelihood", adapter=None, batch_size: int | None = None,
             free_form_sets: dict[str, list[dict]] | None = None, max_new_tokens: int | None = None,
             **protocol_options) -> dict:
    """Evaluate ``model`` under ``protocol`` (docs/method.md §4); the model is evaluated in eval mode
    and left as it was.

    ``"likelihood"`` (default; the toy world's only protocol): ``sets`` is a dict of multiple-choice
    sets (:func:`toy_eval_sets`, :func:`mllmu_eval_sets`); returns the accuracy on each (the option
    with the highest length-normalised log-likelihood; ``batch_size`` prompts per forward, default
    64), ``collapse_share`` over the forget image sets and ``n`` (items per set). ``free_form_sets``
    (e.g. :func:`mllmu_free_form_sets`): sets whose name ends in ``_cloze`` give ``<name>`` =
    exact-match accuracy of the filled blank, the others ``<name>_rouge_l`` and ``<name>_exact_match``
    of greedy answers (``max_new_tokens``, default 32).

    ``"mllmu"``: MLLMU-Bench's own protocol on ``sets`` = :func:`~vkd_fast.eval.protocols.
    load_mllmu_benchmark` (options ``seed``, ``shots``, ``tasks``, ``style``; 50 new tokens, as the
    benchmark); ``"clear"``: CLEAR's on ``sets`` = :func:`~vkd_fast.eval.protocols.load_clear_benchmark`
    (options ``seed``, ``reference``, ``generation_image``, ``max_new_tokens`` (default 300, CLEAR's),
    ``style``). Both return ``{"results": the benchmark's own
    JSON, "records": one audit dict per question (prompt, raw generation, parse, verdict),
    "settings"}``."""
    from .protocols import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    adapter = adapter or get_adapter(model)
    if protocol != "likelihood":
        unused = [name for name, value in (("batch_size", batch_size), ("free_form_sets", free_form_sets))
                  if value is not None]
        if protocol == "mllmu" and max_new_tokens is not None:
            unused.append("max_new_tokens")  # MLLMU-Bench's own length (50) is part of its protocol
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
