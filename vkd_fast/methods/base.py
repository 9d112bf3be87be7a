"""The method interface (the registry is ``registry.py``; item checks ``inputs.py``; activation
measurement ``measure.py``).

An unlearning method is one class that owns everything specific to it; the trainer
(:func:`vkd_fast.unlearn`) runs any registered method and knows no method names:

* ``Options``: a frozen dataclass of its options (fields made with
  :func:`vkd_fast.utils.options.option`, each with a help text), validated at construction;
* :meth:`check` -- input checks before any work (items, tokenizer, process count); the checks of
  the items alone (e.g. that every item names its person) in :meth:`check_data`, which a caller can
  run before loading the model;
* :meth:`trainable_set` -- what it updates: ``(spec, tap, lora)`` for ``adapter.set_trainable``;
* :meth:`setup` -- one-time work (a teacher cache, anchors, reference log-probabilities);
* :meth:`saliency_masks` -- optional per-weight gradient masks, computed after the trainable set;
* :meth:`step` -- one micro-batch ``Batch(forget indices, retain indices) -> (loss, terms)``;
* :meth:`tokens` -- how many tokens a batch trains on (throughput; known on the host, no sync);
* :meth:`after_steps` -- optional work once the steps are done (``vkd_robust`` trains its lock there);
* :meth:`close` -- clean-up, returning statistics (e.g. the teacher cache's).

Every forward whose parameters receive gradients goes through ``self.student`` (set in
:meth:`setup`), so that a trainer can route it through ``DistributedDataParallel``.

A method object can also be driven from any training loop: :meth:`prepare` does the checks, the
set-up and the trainable set, :meth:`parameters` lists what to optimise, and :meth:`step` gives
the loss of each planned batch (docs/integration.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch

from ..utils.options import from_mapping, to_dict
from .inputs import check_items


class Batch(NamedTuple):
    """One micro-batch: indices into the forget and the retain items (either may be empty).

    ``slots``: the forget entries' places in the run's global draw (``step * batch_size +`` position in
    that step's batch), which every process agrees on, or empty (a batch not drawn by a plan). A
    method keys a forget entry's own random draws on its slot (:func:`entry_generator`), so a run
    draws the same for every entry however its batch is split over processes and micro-batches."""

    forget: list[int]
    retain: list[int]
    slots: tuple[int, ...] = ()


def entry_generator(generator: torch.Generator, slot: int) -> torch.Generator:
    """A CPU generator of its own for the entry in global ``slot`` of a run whose step generator is
    ``generator``: seeded from the generator's initial seed (kept by its saved state, so a resumed run
    draws the same) and the slot, without advancing ``generator``."""
    x = (generator.initial_seed() + (slot + 1) * 0x9E3779B97F4A7C15) % 2**64  # splitmix64 of (seed, slot)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return torch.Generator().manual_seed((x ^ (x >> 31)) % 2**63)


@dataclass
class SetupContext:
    """What a method's :meth:`UnlearningMethod.setup` may use."""

    model: torch.nn.Module
    adapter: Any
    forget: list[dict]
    retain: list[dict]
    tokenizer: Any = None
    seed: int = 0
    run_dir: Path | None = None  # the run folder (rank 0 of a run with output_dir), for cached set-up work
    progress: bool = False
    world_size: int = 1


@dataclass(frozen=True)
class NoOptions:
    """A method without options."""


class UnlearningMethod:
    """Base class of an unlearning method; see the module docstring for the protocol."""

    #: the registered name (set by :func:`register_method`)
    name: ClassVar[str] = ""
    #: the options dataclass
    Options: ClassVar[type] = NoOptions
    #: whether a micro-batch uses both sides; ``batch_mode="interleaved"`` alternates them only then
    two_sided: ClassVar[bool] = True
    #: the optimisation steps when ``UnlearnConfig.steps`` is None
    default_steps: ClassVar[int] = 300

    def __init__(self, options=None):
        self.options = make_options(type(self), options)
        self.student = None
        self.model = self.adapter = None

    # ------------------------------------------------------------------ before any work
    @property
    def needs_tokenizer(self) -> bool:
        """Whether the method scores text (and so needs ``tokenizer=``)."""
        return False

    @property
    def needs_language_model(self) -> bool:
        """Whether training runs the language model W (else only V and P move to the device)."""
        return True

    def check(self, forget: list[dict], retain: list[dict], tokenizer=None, world_size: int = 1) -> None:
        """Raise ``ValueError`` / ``TypeError`` for input this method cannot use, before any work
        (:meth:`check_data` included)."""
        if self.needs_tokenizer and tokenizer is None:
            raise ValueError(f"method {self.name!r} trains on answer tokens and needs tokenizer=...")
        self.check_data(forget, retain)

    def check_data(self, forget: list[dict], retain: list[dict]) -> None:
        """Raise ``ValueError`` for items this method cannot use whatever the model and tokenizer: the
        part of :meth:`check` that needs only the items (the command line runs it before loading the
        model). E.g. VKD's default target needs a person on every item (:func:`vkd_fast.data.person_of`)."""

    def trainable_set(self) -> tuple[str, str, dict | None]:
        """``(spec, tap, lora)`` for :meth:`vkd_fast.adapters.VisualAdapter.set_trainable`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ set-up
    def setup(self, ctx: SetupContext) -> None:
        """One-time work before the first step (called before the trainable set is applied)."""
        self.model, self.adapter = ctx.model, ctx.adapter

    def saliency_masks(self, named: list[tuple[str, torch.nn.Parameter]], plan: list[Batch]) -> dict | None:
        """``{name: bool mask}`` of the weights that may change, or None (all of them)."""
        return None

    # ------------------------------------------------------------------ steps
    def step(self, batch: Batch, *, upcoming: Batch | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Loss of one micro-batch and its named terms (detached tensors). ``upcoming``: the batch
        that comes next, if known (for prefetching); ``generator``: the run's CPU generator, for any
        random draw the step makes (per forget entry: :func:`entry_generator` of its slot)."""
        raise NotImplementedError

    def activation_bytes(self, batch: Batch) -> int | None:
        """Bytes of activations a training forward of ``batch`` keeps for backward (measured, no side
        effects), or None if the method cannot say; the trainer scales it to the configured batch and
        refuses a batch that cannot fit before the first step."""
        return None

    def tokens(self, batch: Batch) -> int:
        """Tokens (visual tokens or answer tokens) the batch trains on."""
        return 0

    def after_steps(self) -> None:
        """Called by the trainer once after the last step (not after an error), before :meth:`close`: a
        method that trains something more once its steps are done does it here (``vkd_robust``: its
        image-gated lock). Own training loops call it too. The default does nothing."""

    def close(self) -> dict:
        """Release what the method holds; returns its statistics (e.g. a cache's)."""
        return {}

    # ------------------------------------------------------------------ use from any training loop
    def prepare(self, model: torch.nn.Module, forget, retain, *, tokenizer=None, device=None, run_dir=None,
                progress: bool = False, world_size: int = 1, seed: int = 0) -> dict:
        """Check the input, move what trains to ``device``, do the one-time set-up and apply the
        trainable set; returns :meth:`set_trainable`'s summary. The model changes in place. ``seed``
        seeds the method's own set-up draws (e.g. VKD's forget-target draws)."""
        from ..adapters import get_adapter

        forget, retain = check_items("forget", forget), check_items("retain", retain)
        self.check(forget, retain, tokenizer, world_size)
        adapter = get_adapter(model)
        if device is not None:
            if self.needs_language_model:
                model.to(device)
            else:
                adapter.place_visual(device)  # W plays no part in training: it stays off the accelerator
        self.setup(SetupContext(model, adapter, forget, retain, tokenizer, seed=seed, run_dir=Path(run_dir) if run_dir
                                else None, progress=progress, world_size=world_size))
        spec, tap, lora = self.trainable_set()
        return adapter.set_trainable(spec, tap=tap, lora=lora)

    def parameters(self) -> list[torch.nn.Parameter]:
        """The parameters being trained (after :meth:`prepare`)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def options_dict(self) -> dict:
        return to_dict(self.options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


def make_options(cls: type[UnlearningMethod], options):
    """A method's options from None (the defaults), its Options instance or a mapping."""
    if options is None:
        return cls.Options()
    if isinstance(options, cls.Options):
        return options
    if isinstance(options, dict):
        return from_mapping(cls.Options, options, f"{cls.name or cls.__name__} option")
    raise TypeError(f"options of method {cls.name or cls.__name__!r} must be a {cls.Options.__name__}, a mapping "
                    f"or None, got {type(options).__name__}")
