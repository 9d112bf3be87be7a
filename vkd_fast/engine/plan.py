"""The batch plan and the learning-rate schedule of a run (public: a method driven from another
training loop reproduces :func:`vkd_fast.unlearn` with them)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..methods import Batch
from ..utils.validate import check_positive_int


class BatchPlan(Sequence):
    """A run's micro-batches, drawn lazily: memory does not grow with ``steps``. Entries are drawn in
    step order from a copy of the generator's state taken at construction (the generator passed in is
    not advanced); reading an earlier step than the ones held redraws from the start."""

    _KEEP = 2  # steps held at once (the current one and the next, for prefetching)

    def __init__(self, n_forget: int, n_retain: int, steps: int, batch_size: int, generator: torch.Generator, *,
                 world_size: int = 1, rank: int = 0, grad_accum: int = 1, interleave: bool = False):
        for name, value in (("n_forget", n_forget), ("n_retain", n_retain), ("steps", steps),
                            ("batch_size", batch_size), ("world_size", world_size), ("grad_accum", grad_accum)):
            check_positive_int(name, value)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if batch_size % (world_size * grad_accum):
            raise ValueError(f"batch_size={batch_size} must be divisible by world_size x grad_accum "
                             f"({world_size} x {grad_accum})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
        self.n_forget, self.n_retain, self.steps, self.batch_size = n_forget, n_retain, steps, batch_size
        self.world_size, self.rank, self.grad_accum, self.interleave = world_size, rank, grad_accum, interleave
        self._state = generator.get_state()
        self._gen: torch.Generator | None = None
        self._next = 0  # the next step to draw
        self._held: dict[int, list[Batch]] = {}

    def __len__(self) -> int:
        return self.steps * self.grad_accum

    def _draw(self, step: int) -> list[Batch]:
        if step not in self._held:
            if self._gen is None or step < self._next:  # from the start
                self._gen = torch.Generator()
                self._gen.set_state(self._state)
                self._next, self._held = 0, {}
            micro = self.batch_size // (self.world_size * self.grad_accum)
            lo = self.rank * micro * self.grad_accum
            while self._next <= step:
                fi = torch.randint(0, self.n_forget, (self.batch_size,), generator=self._gen).tolist()
                ri = torch.randint(0, self.n_retain, (self.batch_size,), generator=self._gen).tolist()
                first = self._next * self.batch_size
                self._held[self._next] = [Batch(fi[o:o + micro], ri[o:o + micro],
                                                tuple(range(first + o, first + o + micro)))
                                          for o in range(lo, lo + micro * self.grad_accum, micro)]
                self._next += 1
                for old in [k for k in self._held if k < self._next - self._KEEP]:
                    del self._held[old]
        return self._held[step]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"plan indices must be ints or slices, got {type(index).__name__}")
        m = index + len(self) if index < 0 else index
        if not 0 <= m < len(self):
            raise IndexError(f"micro-batch {index} of a plan of {len(self)}")
        batch = self._draw(m // self.grad_accum)[m % self.grad_accum]
        if self.interleave:
            return Batch(batch.forget, [], batch.slots) if m % 2 == 0 else Batch([], batch.retain)
        return batch

    def __iter__(self):
        for m in range(len(self)):
            yield self[m]


def batch_plan(n_forget: int, n_retain: int, steps: int, batch_size: int, generator: torch.Generator, *,
               world_size: int = 1, rank: int = 0, grad_accum: int = 1, interleave: bool = False) -> BatchPlan:
    """This process's micro-batches, ``steps * grad_accum`` of them, drawn from ``generator``'s state
    (lazily: a :class:`BatchPlan`; ``generator`` itself is not advanced).

    Every rank draws the same global plan (per step ``batch_size`` forget and ``batch_size`` retain
    indices, uniformly with replacement) and takes its contiguous share, split into ``grad_accum``
    micro-batches: optimiser step t uses entries ``t * grad_accum ... (t + 1) * grad_accum - 1``. Each
    batch's ``slots`` are its forget entries' global places (``t * batch_size`` + position).
    ``interleave``: alternate micro-batches of forget only and retain only."""
    return BatchPlan(n_forget, n_retain, steps, batch_size, generator, world_size=world_size, rank=rank,
                     grad_accum=grad_accum, interleave=interleave)


def step_generator(seed: int) -> torch.Generator:
    """The generator of the steps' own random draws (augmentation, noise, meta-attacks) for a run of
    ``seed``: a stream apart from the batch plan's (which is drawn from ``manual_seed(seed)``)."""
    return torch.Generator().manual_seed((seed * 6364136223846793005 + 1442695040888963407) % 2**63)


def lr_factor(steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1):
    """The schedule as a function of the step: linear warm-up, then cosine decay to ``min_lr_ratio``."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def cosine_schedule(optimizer, steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1):
    """The trainer's ``LambdaLR`` over :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(steps, warmup_steps, min_lr_ratio))
