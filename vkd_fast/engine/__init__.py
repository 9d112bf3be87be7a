"""The trainer: runs any registered unlearning method (vkd_fast.methods) -- batch plan, accumulation,
distributed runs, AMP, optimiser and schedule, saliency-mask gating, checkpoints and exact resume,
logging, early stopping."""

from .config import UnlearnConfig
from .plan import BatchPlan, batch_plan, cosine_schedule, lr_factor, step_generator
from .result import UnlearnResult
from .run_folder import CheckpointDamaged, RunFinished, latest_checkpoint, load_delta, save_delta
from .trainer import NonFiniteLossError, unlearn

__all__ = ["BatchPlan", "CheckpointDamaged", "NonFiniteLossError", "RunFinished", "UnlearnConfig", "UnlearnResult",
           "batch_plan", "cosine_schedule", "latest_checkpoint", "load_delta", "lr_factor", "save_delta",
           "step_generator", "unlearn"]
