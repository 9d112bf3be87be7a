"""vkd_fast: machine unlearning for multimodal LLMs by Visual Knowledge Distillation.

The import is lean: it loads torch but not triton, not transformers and not the C++ extension
(loaded at first use), and it never initialises CUDA.
"""

import os as _os
import sys as _sys

# The `vkd-fast` command: OpenMP threads that wait passively instead of spinning (far faster under load, the same
# numerics; measured: docs/benchmarks.md). Set here because OpenMP reads
# it once, when torch loads; a policy the user chose is kept. Imports from Python are left alone.
if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "vkd-fast" and "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import adapters, methods  # noqa: E402
from ._version import __version__  # noqa: E402
from .cache import ActivationCache  # noqa: E402
from .checkpoints import export_unlearned, load_visual_model  # noqa: E402
from .engine import UnlearnConfig, UnlearnResult, unlearn  # noqa: E402
from .functional import feature_distill_loss  # noqa: E402
from .methods import available_methods, register_method  # noqa: E402
from .nn import FeatureDistillLoss  # noqa: E402

__all__ = ["ActivationCache", "FeatureDistillLoss", "UnlearnConfig", "UnlearnResult", "__version__", "adapters",
           "available_methods", "export_unlearned", "feature_distill_loss", "load_visual_model", "methods",
           "register_method", "unlearn"]
