"""Unlearning methods as plug-ins: one file per method, each a whole method (options, trainable set,
set-up, step, clean-up), the interface (base.py), the registry (registry.py), item checks
(inputs.py) and activation measurement (measure.py). The trainer (:func:`vkd_fast.unlearn`) runs any
registered method by name.

* ``vkd`` (``vkd/``): visual knowledge distillation -- the product's method (its measured research
  variants are ``vkd_experimental`` in :mod:`vkd_fast.experimental`, which this package never imports);
* ``ga``, ``grad_diff``, ``kl_min``, ``npo``, ``mmunlearner``: output-level baselines over one
  question-answer base (qa.py), with the reusable saliency mask (saliency.py).

Add a method: subclass :class:`UnlearningMethod` and call ``register_method("name", MyMethod)``
(docs/extending.md has a worked example).
"""

from .base import Batch, NoOptions, SetupContext, UnlearningMethod, entry_generator
from .ga import GA
from .grad_diff import GradDiff
from .kl_min import KLMin
from .mmunlearner import MMUnlearner, MMUnlearnerOptions
from .npo import NPO, NPOOptions
from .qa import QAMethod, QAOptions
from .registry import available_methods, create_method, get_method, register_method
from .saliency import MaskOptions
from .vkd import VKD, VKDOptions
from .vkd_robust import VKDRobust, VKDRobustOptions

for _name, _cls in (("vkd", VKD), ("vkd_robust", VKDRobust), ("ga", GA), ("grad_diff", GradDiff), ("kl_min", KLMin),
                    ("npo", NPO), ("mmunlearner", MMUnlearner)):
    register_method(_name, _cls)

__all__ = [
    "GA", "NPO", "VKD", "Batch", "GradDiff", "KLMin", "MMUnlearner", "MMUnlearnerOptions", "MaskOptions",
    "NPOOptions", "NoOptions", "QAMethod", "QAOptions", "SetupContext", "UnlearningMethod", "VKDOptions", "VKDRobust",
    "VKDRobustOptions",
    "available_methods", "entry_generator", "create_method", "get_method", "register_method",
]
