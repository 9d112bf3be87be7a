"""The tap grammar (vkd_fast.adapters.taps), parsed in one place for the whole package."""

import pytest

from vkd_fast.adapters import Tap, TapSpec, parse_tap, resolve_tap


@pytest.mark.parametrize("text, spec", [
    ("projector", TapSpec("projector")), ("vision:feature", TapSpec("vision", "feature")),
    ("vision:-2", TapSpec("vision", "-2")), (" llm:3 ", TapSpec("llm", "3")),
])
def test_parse(text, spec):
    assert parse_tap(text) == spec and str(spec) == text.strip()
    assert spec.uses_llm == (spec.kind == "llm")


@pytest.mark.parametrize("bad", ["text:1", "vision", "vision:", "llm:feature", "projector:1", "", None, 3])
def test_parse_errors_name_the_forms(bad):
    with pytest.raises(ValueError, match=r"tap must be 'vision:feature', 'vision:<block>', 'projector' or "
                                         r"'llm:<layer>', got"):
        parse_tap(bad)


def test_resolve_against_a_layout():
    layout = dict(n_vision_blocks=4, feature_block=2, llm_depth=3)
    assert resolve_tap("vision:feature", **layout) == Tap("vision", 2)
    assert resolve_tap("vision:-1", **layout) == Tap("vision", 3)
    assert resolve_tap("llm:-1", **layout) == Tap("llm", 3) and resolve_tap("llm:1", **layout) == Tap("llm", 1)
    assert resolve_tap(parse_tap("projector"), **layout) == Tap("projector")
    with pytest.raises(ValueError, match=r"tap 'vision:4': the vision tower has 4 blocks"):
        resolve_tap("vision:4", **layout)
    with pytest.raises(ValueError, match=r"tap 'llm:0': the language model has 3 layers"):
        resolve_tap("llm:0", **layout)
