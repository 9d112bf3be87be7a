"""The trainer: runs any registered unlearning method (vkd_fast.methods) -- batch plan, accumulation,
distributed runs, AMP, optimiser and schedule, saliency-mask gating, run folders with checkpoints and
exact resume, logging, early stopping.

:func:`unlearn` runs a whole run; :class:`Trainer` is the same run in named phases a caller can
drive one by one (and look at between them)::

    trainer = Trainer(model, forget, retain, method="vkd", config=UnlearnConfig(steps=50))
    trainer.prepare()          # every argument checked, the run folder, the seed
    trainer.build()            # the method's set-up, plan, saliency masks, optimiser, resume
    trainer.train()            # the steps, logging, checkpoints, early stopping
    result = trainer.finish()  # the UnlearnResult (bit for bit what unlearn() returns)

Modules: ``trainer`` (the phases), ``plan`` (batch plan, schedule, the steps' generator),
``history`` (step records read back from the device), ``distributed``, ``fingerprint``,
``run_folder`` (a run's folder: run.json, checkpoints, resume; trained-tensor deltas), ``config``
and ``result``.
"""

from .config import UnlearnConfig
from .history import NonFiniteLossError
from .plan import BatchPlan, batch_plan, cosine_schedule, lr_factor, step_generator
from .result import UnlearnResult
from .run_folder import CheckpointDamaged, RunFinished, latest_checkpoint, load_delta, save_delta
from .trainer import Trainer, unlearn

__all__ = ["BatchPlan", "CheckpointDamaged", "NonFiniteLossError", "RunFinished", "Trainer", "UnlearnConfig",
           "UnlearnResult", "batch_plan", "cosine_schedule", "latest_checkpoint", "load_delta", "lr_factor",
           "save_delta", "step_generator", "unlearn"]
