"""vkd_fast: machine unlearning for multimodal LLMs by Visual Knowledge Distillation.

The import is lean: it loads torch but not triton, not transformers and not the C++ extension
(loaded at first use), and it never initialises CUDA.
"""

from ._version import __version__
from .cache import ActivationCache
from .functional import feature_distill_loss
from .nn import FeatureDistillLoss

__all__ = ["ActivationCache", "FeatureDistillLoss", "__version__", "feature_distill_loss"]
