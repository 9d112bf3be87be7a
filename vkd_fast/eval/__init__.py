"""Evaluation (METHOD.md section 4): metrics so far; the protocol runner, the relearning attack and
reports arrive with the toy-world demo."""

from .metrics import answer_collapse_share, exact_match, multiple_choice, option_scores, recovery, rouge_l

__all__ = ["answer_collapse_share", "exact_match", "multiple_choice", "option_scores", "recovery", "rouge_l"]
