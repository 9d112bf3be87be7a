"""Unlearning objectives, one per file. Only ``vkd`` is implemented so far; the baselines
(``ga``, ``grad_diff``, ``kl_min``, ``npo``, ``mmunlearner``) arrive with the engine's QA batches."""

from .vkd import vkd_loss

METHODS = ("vkd",)


def available_methods() -> list[str]:
    return sorted(METHODS)


__all__ = ["available_methods", "vkd_loss"]
