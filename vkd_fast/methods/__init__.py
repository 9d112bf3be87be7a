"""Unlearning methods as plug-ins: one file per method, each a whole method (options, trainable set,
set-up, step, clean-up), and a registry (base.py). The trainer (:func:`vkd_fast.unlearn`) runs any
registered method by name.

* ``vkd`` (``vkd/``): visual knowledge distillation -- the product's method (its measured research
  variants are ``vkd_experimental`` in :mod:`vkd_fast.experimental`, which this package never imports);
* ``ga``, ``grad_diff``, ``kl_min``, ``npo``, ``mmunlearner``: output-level baselines over one
  question-answer base (qa.py), with the reusable saliency mask (saliency.py).

Add a method: subclass :class:`UnlearningMethod` (see the README's "Adding a method") and call
``register_method("name", MyMethod)``.
"""

from .base import (
    Batch,
    NoOptions,
    SetupContext,
    UnlearningMethod,
    available_methods,
    create_method,
    entry_generator,
    get_method,
    register_method,
)
from .ga import GA
from .grad_diff import GradDiff
from .kl_min import KLMin
from .mmunlearner import MMUnlearner, MMUnlearnerOptions
from .npo import NPO, NPOOptions
from .qa import QAMethod, QAOptions
from .saliency import MaskOptions
from .vkd import VKD, VKDOptions

for _name, _cls in (("vkd", VKD), ("ga", GA), ("grad_diff", GradDiff), ("kl_min", KLMin), ("npo", NPO),
                    ("mmunlearner", MMUnlearner)):
    register_method(_name, _cls)

__all__ = [
    "GA", "NPO", "VKD", "Batch", "GradDiff", "KLMin", "MMUnlearner", "MMUnlearnerOptions", "MaskOptions",
    "NPOOptions", "NoOptions", "QAMethod", "QAOptions", "SetupContext", "UnlearningMethod", "VKDOptions",
    "available_methods", "entry_generator", "create_method", "get_method", "register_method",
]
