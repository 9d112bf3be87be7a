"""Tensor names of a checkpoint matched to a model's parameter names.

The same weights go by different names: a LLaVA saved by transformers 4.x stores
``vision_tower.vision_model.encoder...`` and ``language_model.model.layers...``, one saved by 5.x
``vision_tower.encoder...``; the models' own parameters are ``model.vision_tower.vision_model...``
(4.57) or ``model.vision_tower...`` (5.x); Qwen2-VL stores ``visual...`` / ``model.layers...`` for
``model.visual...`` / ``model.language_model.layers...``. Names are compared in a canonical form
that removes those wrappers; a match must be one to one.
"""

from __future__ import annotations

import re

from .safetensors_io import CheckpointError


def canonical(name: str) -> str:
    n = name[len("model."):] if name.startswith("model.") else name
    if n.startswith("language_model.model."):
        n = "language_model." + n[len("language_model.model."):]
    if n.startswith("language_model."):
        n = n[len("language_model."):]
    return re.sub(r"^vision_tower\.vision_model\.", "vision_tower.", n)


def match_names(model_names, checkpoint_names, what: str = "checkpoint") -> dict[str, str]:
    """``{model name: checkpoint name}`` for every name in ``model_names``."""
    by_canonical: dict[str, str] = {}
    for c in checkpoint_names:
        key = canonical(c)
        if key in by_canonical:
            raise CheckpointError(f"{what}: tensors {by_canonical[key]!r} and {c!r} would both be the model's {key!r}")
        by_canonical[key] = c
    out, missing = {}, []
    for n in model_names:
        c = by_canonical.get(canonical(n))
        if c is None:
            missing.append(n)
        else:
            out[n] = c
    if missing:
        raise CheckpointError(f"{what} has no tensor for {len(missing)} of the model's parameters: "
                              f"{', '.join(sorted(missing)[:5])}" + (" ..." if len(missing) > 5 else ""))
    return out
