"""``ga``: gradient ascent on the forget answers, L = -CE(forget answer tokens) (docs/method.md §3)."""

from __future__ import annotations

from .qa import QAMethod


class GA(QAMethod):
    """Gradient ascent on forget answers; updates ``trainable`` (default: the language model)."""
