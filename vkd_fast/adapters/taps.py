"""The feature-tap grammar, parsed here for the whole package (docs/method.md §2).

A tap names the intermediate visual representation a method reads:

* ``projector`` -- the visual tokens the projector feeds into the LLM;
* ``vision:i`` -- output of ViT block i (0-based; negative counts from the last block) at the patch
  tokens; ``vision:feature`` is the block the projector reads (LLaVA: ``vision_feature_layer``);
* ``llm:j`` -- output of the first j decoder layers at the image-token positions (1 <= j <= depth;
  negative: depth + 1 + j).

:func:`parse_tap` checks the grammar without a model (configs validate with it);
:func:`resolve_tap` turns a spec into block / layer numbers of a given model's layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAP_FORMS = "'vision:feature', 'vision:<block>', 'projector' or 'llm:<layer>'"
_TAP_RE = re.compile(r"^(projector|vision:(-?\d+|feature)|llm:(-?\d+))$")


@dataclass(frozen=True)
class TapSpec:
    """A tap as written, checked against the grammar but not yet against a model."""

    kind: str  # "projector" | "vision" | "llm"
    arg: str | None = None  # "feature" or a signed integer as text; None for projector

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"

    @property
    def uses_llm(self) -> bool:
        """Whether reading this tap runs the language model."""
        return self.kind == "llm"


@dataclass(frozen=True)
class Tap:
    """A tap resolved against a model: ``index`` is the 0-based ViT block (vision) or the number of
    decoder layers (llm); None for the projector."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_tap(tap) -> TapSpec:
    """``"vision:feature"`` -> ``TapSpec("vision", "feature")``; a ValueError for anything else."""
    if not isinstance(tap, str) or not _TAP_RE.match(tap.strip()):
        raise ValueError(f"tap must be {TAP_FORMS}, got {tap!r}")
    kind, _, arg = tap.strip().partition(":")
    return TapSpec(kind, arg or None)


def resolve_tap(tap, n_vision_blocks: int, feature_block: int, llm_depth: int) -> Tap:
    """The tap (a string or :class:`TapSpec`) as block / layer numbers of a model with that layout."""
    spec = tap if isinstance(tap, TapSpec) else parse_tap(tap)
    if spec.kind == "projector":
        return Tap("projector")
    if spec.arg == "feature":
        return Tap("vision", feature_block)
    i = int(spec.arg)
    if spec.kind == "vision":
        n = n_vision_blocks
        if not -n <= i < n:
            raise ValueError(f"tap {str(spec)!r}: the vision tower has {n} blocks, so the block index must be in "
                             f"[{-n}, {n - 1}]")
        return Tap("vision", i % n)
    depth = llm_depth
    if not (1 <= i <= depth or -depth <= i <= -1):
        raise ValueError(f"tap {str(spec)!r}: the language model has {depth} layers, so j must be in [1, {depth}] "
                         f"or [{-depth}, -1]")
    return Tap("llm", i if i > 0 else depth + 1 + i)
