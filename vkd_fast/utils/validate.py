"""Argument checks shared by every layer: a ``ValueError`` that names the argument, what was
expected and what was given."""

from __future__ import annotations


def check_choice(name: str, value, options) -> None:
    """ValueError naming ``name``, the allowed ``options`` and the ``value`` given, unless allowed."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")


def check_positive_int(name: str, value) -> None:
    """ValueError naming ``name`` unless ``value`` is an int >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
