"""Evaluation (docs/method.md §4): metrics, the protocol runner (evaluation sets of the toy world and
MLLMU-Bench, every accuracy, answer collapse), the relearning attack and reports. (The toy-world
demo, an application on top of this, is :mod:`vkd_fast.demo`; wall time and memory are measured
with :func:`vkd_fast.utils.measure`.)"""

from .metrics import (
    answer_collapse_share,
    cloze,
    exact_match,
    free_form,
    generate_answers,
    multiple_choice,
    option_scores,
    recovery,
    rouge_l,
)
from .protocol import (
    EVAL_SETS,
    collapse_share,
    evaluate,
    mllmu_eval_sets,
    mllmu_free_form_sets,
    toy_eval_sets,
)
from .protocols import PROTOCOLS, load_clear_benchmark, load_mllmu_benchmark
from .relearn import MODES, RelearnConfig, held_out_accuracy, relearn, relearning_attack, split_attack
from .report import markdown_table, plot, text_table, write_json, write_jsonl, write_markdown

__all__ = [
    "EVAL_SETS", "MODES", "PROTOCOLS", "RelearnConfig", "answer_collapse_share", "cloze", "collapse_share",
    "evaluate", "exact_match", "free_form", "generate_answers", "held_out_accuracy", "load_clear_benchmark",
    "load_mllmu_benchmark", "markdown_table", "mllmu_eval_sets", "mllmu_free_form_sets", "multiple_choice",
    "option_scores", "plot", "recovery", "relearn", "relearning_attack", "rouge_l", "split_attack", "text_table",
    "toy_eval_sets", "write_json", "write_jsonl", "write_markdown",
]
