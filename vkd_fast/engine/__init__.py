"""The trainer: runs any registered unlearning method (vkd_fast.methods) -- batch plan, accumulation,
distributed runs, AMP, optimiser and schedule, saliency-mask gating, checkpoints and exact resume,
logging, early stopping."""

from .checkpoint import RunFinished, load_delta, save_delta
from .config import UnlearnConfig
from .plan import BatchPlan, batch_plan, cosine_schedule, lr_factor, step_generator
from .result import UnlearnResult
from .trainer import NonFiniteLossError, unlearn

__all__ = ["BatchPlan", "NonFiniteLossError", "RunFinished", "UnlearnConfig", "UnlearnResult", "batch_plan",
           "cosine_schedule", "load_delta", "lr_factor", "save_delta", "step_generator", "unlearn"]
