"""Option dataclasses from mappings (vkd_fast.utils.options): conversion by the field's type and
errors that name the option."""

from dataclasses import dataclass

import pytest

from vkd_fast.utils.options import defaults, from_mapping, help_lines, option


@dataclass(frozen=True)
class Opts:
    lr: float = option(1e-3, "learning rate")
    steps: int = option(10, "steps")
    ratio: float | None = option(None, "a ratio")
    on: bool = option(False, "a switch")
    name: str = option("x", "a name")
    extra: dict | None = option(None, "a mapping")


def test_conversion_by_type():
    o = from_mapping(Opts, {"lr": "5e-4", "steps": "20", "ratio": "null", "on": "yes", "name": 7, "extra": {"r": 1}})
    assert o == Opts(lr=5e-4, steps=20, ratio=None, on=True, name=7, extra={"r": 1})
    assert from_mapping(Opts, {"lr": 1}).lr == 1.0 and isinstance(from_mapping(Opts, {"lr": 1}).lr, float)
    assert from_mapping(Opts, {"ratio": "0.25"}).ratio == 0.25


@pytest.mark.parametrize("values, message", [
    ({"lr": "fast"}, "option lr: expected float, got 'fast'"),
    ({"steps": "2.5"}, "option steps: expected int, got '2.5'"),
    ({"on": "maybe"}, "option on: expected bool, got 'maybe'"),
    ({"stpes": 3}, "unknown option(s) stpes; known: lr, steps, ratio, on, name, extra"),
])
def test_errors_name_the_option(values, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_mapping(Opts, values)


def test_help_and_defaults():
    assert defaults(Opts)["lr"] == 1e-3
    lines = help_lines(Opts, prefix="m.")
    assert lines[0].startswith("  m.lr ") and lines[0].endswith("learning rate [default: 0.001]")
