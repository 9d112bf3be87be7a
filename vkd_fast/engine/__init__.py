"""The unlearning engine: configuration, teacher cache build, the training loop."""

from .checkpoint import load_delta, save_delta
from .config import UnlearnConfig
from .loop import UnlearnResult, unlearn

__all__ = ["UnlearnConfig", "UnlearnResult", "load_delta", "save_delta", "unlearn"]
