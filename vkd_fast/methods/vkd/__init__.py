"""VKD, visual knowledge distillation (docs/method.md §2): ``method.py`` (the method), ``options.py``
(its options), ``targets.py`` (forget-target policies and their registry), ``teacher.py`` (the
teacher cache and the live teacher), ``augment.py`` (forget-image augmentation). The measured research
variants (attack simulation, shrink-perturb, the misdirect and repel targets) live in
:mod:`vkd_fast.experimental`, on VKD's extension points (method.py)."""

from .method import TEACHER_FILE, VKD
from .options import VKDOptions
from .targets import ForgetTarget, forget_targets, get_forget_target, register_forget_target, unregister_forget_target

__all__ = ["TEACHER_FILE", "VKD", "ForgetTarget", "VKDOptions", "forget_targets", "get_forget_target",
           "register_forget_target", "unregister_forget_target"]
