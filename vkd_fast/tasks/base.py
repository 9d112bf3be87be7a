"""What a benchmark task is, and the task registry.

A task (the toy world, MLLMU-Bench, CLEAR, or a user's) owns everything about its data: where its
training items come from (the ``<task>:...`` data specs of ``vkd-fast unlearn``), its evaluation
sets for the likelihood protocol, its default splits, the benchmark protocols it can be scored by
(registered in :mod:`vkd_fast.eval.protocols`), and its own command-line options. The CLI and the
evaluation runner know no task names: they ask the registry.

A new benchmark is one module that subclasses :class:`Task` and calls :func:`register_task` (load it
with ``vkd-fast --plugin FILE_OR_MODULE``), plus a test; ``docs/extending.md`` has a worked example.
"""

from __future__ import annotations

from typing import ClassVar

from ..utils.registry import Registry


class Task:
    """A benchmark task. Class attributes describe it; methods read its data from the command
    line's ``args`` (an ``argparse.Namespace``; a task reads only the options it declares, and the
    shared ones: ``root``, ``forget_split``, ``retain_split``, ``limit``).

    Define (required): ``title`` and :meth:`eval_sets` (unless ``protocols`` has no
    ``"likelihood"``). Optional: ``protocols`` (the first is ``--data NAME``'s default protocol),
    ``default_splits``, ``root_help`` (None: the task needs no ``--root``), ``limit_help``,
    ``protocol_options`` (CLI options that belong to one protocol: refused with any other),
    ``train_spec_help`` / ``model_spec_help`` (with :meth:`train_items` / :meth:`load_model`),
    :meth:`add_arguments`, :meth:`train_items`, :meth:`free_form_sets`, :meth:`benchmark` and
    :meth:`protocol_kwargs` (for a protocol other than likelihood), :meth:`load_model`,
    :meth:`tokenizer`, :meth:`model_before`."""

    name: ClassVar[str] = ""  # set by register_task
    title: ClassVar[str] = ""
    #: scoring protocols this task's data can be evaluated by; the first is the default
    protocols: ClassVar[tuple[str, ...]] = ("likelihood",)
    #: (forget split, retain split) used when --forget-split / --retain-split are not given
    default_splits: ClassVar[tuple[str | None, str | None]] = (None, None)
    #: what --root names for this task (None: the task has no local folder)
    root_help: ClassVar[str | None] = None
    #: what --limit means for this task (None: not used)
    limit_help: ClassVar[str | None] = None
    #: protocol -> the CLI options (flags) that apply to it only
    protocol_options: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: what the ``<name>:...`` data spec of ``vkd-fast unlearn`` reads (None: the task has no training items)
    train_spec_help: ClassVar[str | None] = None
    #: the ``<name>:...`` model specs the task ships (None: none)
    model_spec_help: ClassVar[str | None] = None

    # ---------------------------------------------------------------- command line
    def add_arguments(self, parser, command: str) -> None:
        """Add this task's own options to ``command``'s parser (``unlearn``, ``eval``, ``relearn``,
        ``demo``). Names must not collide with another task's."""

    def splits(self, args) -> tuple[str | None, str | None]:
        """(forget split, retain split): the command line's, else :attr:`default_splits`."""
        forget, retain = self.default_splits
        return getattr(args, "forget_split", None) or forget, getattr(args, "retain_split", None) or retain

    def root(self, args) -> str:
        """The task's local folder (``--root``), refused when missing."""
        if not getattr(args, "root", None):
            raise ValueError(f"--data {self.name} needs --root (the local {self.title} folder)")
        return args.root

    # ---------------------------------------------------------------- data
    def train_items(self, spec: str, args) -> list[dict]:
        """Training items for the data spec ``<name>:<spec>`` of ``vkd-fast unlearn``."""
        raise ValueError(f"the {self.title} task has no training items ({self.name}:... is not a data spec)")

    def eval_sets(self, args) -> dict[str, list[dict]]:
        """The likelihood protocol's multiple-choice sets, keyed by metric name (``vkd_fast.eval.EVAL_SETS``)."""
        raise NotImplementedError(f"task {self.name!r} defines no likelihood evaluation sets")

    def free_form_sets(self, args) -> dict[str, list[dict]] | None:
        """Generation / cloze sets scored beside the likelihood sets (None: none)."""
        return None

    def benchmark(self, args, protocol: str):
        """The data a benchmark protocol (``protocol`` != likelihood) evaluates."""
        raise NotImplementedError(f"task {self.name!r} has no {protocol!r} benchmark data")

    def protocol_kwargs(self, args, protocol: str) -> dict:
        """``vkd_fast.eval.evaluate``'s options for ``protocol`` from the command line; checked
        before any model loads."""
        return {}

    # ---------------------------------------------------------------- models
    def load_model(self, name: str, args, device=None):
        """(model, tokenizer) for the model spec ``<task>:<name>`` (e.g. ``toy:vanilla``)."""
        raise ValueError(f"the {self.title} task ships no models ({self.name}:{name} is not a model spec)")

    def tokenizer(self, args):
        """The tokenizer to use with this task's data when the model folder has none (None: no default)."""
        return None

    def model_before(self, args) -> str | None:
        """The relearning attack's default ``--before`` model spec (None: the user must name one)."""
        return None


def _accept(name: str, cls: type[Task]) -> None:
    if not name.isidentifier():
        raise ValueError(f"task name must be an identifier (it is the data spec prefix NAME:...), got {name!r}")
    cls.name = name


TASKS: Registry[Task] = Registry("--data", Task, on_register=_accept, sort=False, public="vkd_fast.tasks.Task")


def register_task(name: str, cls: type[Task]) -> type[Task]:
    """Make ``cls`` available as ``--data name`` (and ``name:...`` data / model specs)."""
    return TASKS.register(name, cls)


def available_tasks() -> list[str]:
    """Registered task names (registration order: the built-in ones first)."""
    return TASKS.names()


def get_task(name: str) -> Task:
    """A task object by name."""
    return TASKS.get(name)()
