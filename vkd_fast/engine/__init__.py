"""The unlearning engine: configuration, teacher cache build, the training loop."""

from .config import UnlearnConfig
from .loop import UnlearnResult, unlearn

__all__ = ["UnlearnConfig", "UnlearnResult", "unlearn"]
