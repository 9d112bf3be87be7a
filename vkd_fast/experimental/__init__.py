"""VKD's measured research variants, out of the product path (issue 25): method ``vkd_experimental``
(:class:`VKDExperimental`, VKD plus the options below) and the forget targets ``misdirect`` and
``repel``. None passes more of the bars of :mod:`vkd_fast.eval.bars` than the default does, and
``lambda_meta`` and ``shrink_perturb`` each cost a multiple of a plain run's time (measured:
docs/robustness.md, the study's table, ``benchmarks/robustness_study.py``); they stay for the study
and for research.

* ``lambda_meta`` (+ ``meta_steps``, ``meta_lr``, ``meta_every``, ``meta_batch``): an attack-simulating
  term (meta.py);
* ``shrink_perturb`` (+ ``perturb_scale``): shrink-perturb the trained weights before distilling;
* ``forget_target="misdirect"`` (+ ``misdirect_scale``): a fixed random direction as the anchor;
* ``forget_target="repel"`` (+ ``repel_margin``, ``repel_noise``): a bounded hinge away from the
  image's own teacher features.

``import vkd_fast`` does not import this package: ``import vkd_fast.experimental`` (or, on the command
line, ``--plugin vkd_fast.experimental``) registers the method and the targets. With the same options
``vkd_experimental`` computes what ``vkd`` computed before the variants moved, bit for bit.
"""

from ..methods import register_method
from ..methods.registry import METHODS
from ..methods.vkd import register_forget_target, unregister_forget_target
from .method import VKDExperimental
from .options import VKDExperimentalOptions
from .targets import Misdirect, Repel, misdirect_anchor

#: the forget targets this package adds
TARGETS = {"misdirect": Misdirect, "repel": Repel}


def register() -> None:
    """Register ``vkd_experimental`` and the forget targets (done on import; again after :func:`unregister`)."""
    register_method("vkd_experimental", VKDExperimental)
    for name, cls in TARGETS.items():
        register_forget_target(name, cls)


def unregister() -> None:
    """Take the method and the targets out of the registries again (the product's registries as shipped)."""
    METHODS.remove("vkd_experimental")
    for name in TARGETS:
        unregister_forget_target(name)


register()

__all__ = ["TARGETS", "Misdirect", "Repel", "VKDExperimental", "VKDExperimentalOptions", "misdirect_anchor",
           "register", "unregister"]
