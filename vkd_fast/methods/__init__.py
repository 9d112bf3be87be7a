"""Unlearning objectives: ``vkd`` (vkd.py) and the output-level baselines (output_level.py), plus the
reusable saliency mask (saliency.py)."""

from .output_level import ga_loss, grad_diff_loss, kl_min_loss, npo_loss, retain_ce_term, retain_kl_term
from .saliency import apply_mask, fisher, saliency_mask
from .vkd import vkd_loss

OUTPUT_LEVEL = ("ga", "grad_diff", "kl_min", "npo", "mmunlearner")
METHODS = ("vkd", *OUTPUT_LEVEL)


def available_methods() -> list[str]:
    return sorted(METHODS)


__all__ = ["OUTPUT_LEVEL", "apply_mask", "available_methods", "fisher", "ga_loss", "grad_diff_loss",
           "kl_min_loss", "npo_loss", "retain_ce_term", "retain_kl_term", "saliency_mask", "vkd_loss"]
