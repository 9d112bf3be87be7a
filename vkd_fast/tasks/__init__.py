"""Benchmark tasks: one module per task (the toy world, MLLMU-Bench, CLEAR), each owning its data
specs, evaluation sets, default splits, protocols and command-line options, registered where it is
defined (:func:`register_task`). ``vkd-fast --data NAME`` and ``NAME:...`` specs come from here.
The modules are imported in the order the CLI lists them (toy first: the default)."""
# isort: skip_file

from .base import TASKS, Task, available_tasks, get_task, register_task
from .toy import ToyTask, toy_eval_sets
from .mllmu import MllmuTask, mllmu_eval_sets, mllmu_free_form_sets
from .clear import ClearTask

__all__ = ["TASKS", "ClearTask", "MllmuTask", "Task", "ToyTask", "available_tasks", "get_task",
           "mllmu_eval_sets", "mllmu_free_form_sets", "register_task", "toy_eval_sets"]
