"""``mmunlearner`` (MMUnlearner-style): gradient ascent on forget answers restricted by a saliency
mask (forget / retain Fisher ratio, see saliency.py) over V, P and W (docs/method.md §3)."""

from __future__ import annotations

from dataclasses import dataclass

from ..utils.options import option
from .qa import QAMethod, QAOptions
from .saliency import MaskOptions, qa_saliency_masks


@dataclass(frozen=True)
class MMUnlearnerOptions(MaskOptions, QAOptions):
    trainable: str = option("all", "what the mask selects from: 'all' (V, P and W), 'language_model' or a visual "
                                   "set")

    def __post_init__(self) -> None:
        QAOptions.__post_init__(self)
        MaskOptions.__post_init__(self)


class MMUnlearner(QAMethod):
    Options = MMUnlearnerOptions
    uses_retain_items = True  # the retain side's Fisher estimate

    def saliency_masks(self, named, plan):
        return qa_saliency_masks(self.qa, self.student, named, plan, self.options)
