"""Evaluation (docs/method.md §4): metrics, the runner (every accuracy and the answer collapse on a
task's evaluation sets, or a registered benchmark protocol), the relearning attack and reports.
The tasks' evaluation sets (``toy_eval_sets``, ``mllmu_eval_sets``, ``mllmu_free_form_sets``) live
in :mod:`vkd_fast.tasks` and are still reachable here. (The toy-world demo, an application on top
of this, is :mod:`vkd_fast.demo`; wall time and memory are measured with
:func:`vkd_fast.utils.measure`.)"""

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
from .protocols import PROTOCOLS, available_protocols, load_clear_benchmark, load_mllmu_benchmark, register_protocol
from .relearn import MODES, RelearnConfig, held_out_accuracy, relearn, relearning_attack, split_attack
from .report import markdown_table, plot, text_table, write_json, write_jsonl, write_markdown
from .runner import EVAL_SETS, collapse_share, evaluate

#: names that moved to vkd_fast.tasks (the tasks own their evaluation sets); still reachable here
_MOVED_TO_TASKS = ("mllmu_eval_sets", "mllmu_free_form_sets", "toy_eval_sets")


def __getattr__(name: str):
    if name in _MOVED_TO_TASKS:  # imported at use: vkd_fast.tasks sits above eval
        from .. import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EVAL_SETS", "MODES", "PROTOCOLS", "RelearnConfig", "answer_collapse_share", "available_protocols", "cloze",
    "collapse_share", "evaluate", "exact_match", "free_form", "generate_answers", "held_out_accuracy",
    "load_clear_benchmark", "load_mllmu_benchmark", "markdown_table", "multiple_choice", "option_scores", "plot",
    "recovery", "register_protocol", "relearn", "relearning_attack", "rouge_l", "split_attack", "text_table",
    "write_json", "write_jsonl", "write_markdown",
]
