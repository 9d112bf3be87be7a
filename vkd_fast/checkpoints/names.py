"""Tensor names of a checkpoint matched to a model's parameter names.

The same weights go by different names across transformers versions (a checkpoint written by 4.x,
a model built by 5.x, and the other way round). Names are compared in a canonical form that the
model family's adapter class defines (:meth:`vkd_fast.adapters.VisualAdapter.checkpoint_key`: the
common ``model.`` / ``language_model.`` wrappers removed, then the family's own
``checkpoint_renames``, e.g. LLaVA's ``vision_tower.vision_model.`` -> ``vision_tower.``); a match
must be one to one. A checkpoint of a model_type without an adapter gets the common form only.
"""

from __future__ import annotations

import json
from pathlib import Path

from .safetensors_io import CheckpointError


def family_of(model_type):
    """The adapter class that names ``model_type``'s weights (the registered one; the base class --
    the common wrappers only -- when none is registered)."""
    from ..adapters import VisualAdapter, adapter_class

    return adapter_class(model_type) or VisualAdapter


def folder_family(model_dir):
    """:func:`family_of` the ``model_type`` in ``model_dir``'s ``config.json`` (the base class when it
    has none or cannot be read)."""
    try:
        model_type = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    return family_of(model_type if isinstance(model_type, str) else None)


def canonical(name: str, family=None) -> str:
    """``name`` in the canonical form of ``family`` (an adapter class; default: the common form)."""
    return (family or family_of(None)).checkpoint_key(name)


def match_names(model_names, checkpoint_names, what: str = "checkpoint", family=None) -> dict[str, str]:
    """``{model name: checkpoint name}`` for every name in ``model_names``, compared in ``family``'s
    canonical form (an adapter class, see :func:`family_of`; default: the common form)."""
    by_canonical: dict[str, str] = {}
    for c in checkpoint_names:
        key = canonical(c, family)
        if key in by_canonical:
            raise CheckpointError(f"{what}: tensors {by_canonical[key]!r} and {c!r} would both be the model's {key!r}")
        by_canonical[key] = c
    out, missing = {}, []
    for n in model_names:
        c = by_canonical.get(canonical(n, family))
        if c is None:
            missing.append(n)
        else:
            out[n] = c
    if missing:
        raise CheckpointError(f"{what} has no tensor for {len(missing)} of the model's parameters: "
                              f"{', '.join(sorted(missing)[:5])}" + (" ..." if len(missing) > 5 else ""))
    return out
