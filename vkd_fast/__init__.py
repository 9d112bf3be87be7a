"""vkd_fast: machine unlearning for multimodal LLMs by Visual Knowledge Distillation.

The import is lean: it loads torch but not triton, not transformers and not the C++ extension
(loaded at first use), and it never initialises CUDA.
"""

from . import adapters, methods
from ._version import __version__
from .cache import ActivationCache
from .checkpoints import export_unlearned, load_visual_model
from .engine import UnlearnConfig, UnlearnResult, unlearn
from .functional import feature_distill_loss
from .methods import available_methods, register_method
from .nn import FeatureDistillLoss

__all__ = ["ActivationCache", "FeatureDistillLoss", "UnlearnConfig", "UnlearnResult", "__version__", "adapters",
           "available_methods", "export_unlearned", "feature_distill_loss", "load_visual_model", "methods",
           "register_method", "unlearn"]
