"""The CUDA side of the activation cache: pinned double-buffered staging for host-to-device copies,
and the handle a background prefetch returns."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import torch


class PrefetchHandle:
    """Returned by :meth:`ActivationCache.prefetch`; :meth:`wait` returns what ``get`` would."""

    def __init__(self, future: Future, cache):
        self._future, self._cache = future, cache

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        packed, offsets, event = self._future.result(timeout)
        return self._cache._hand_over(packed, offsets, event)


class _Staging:
    """Two pinned host buffers per CUDA device, used in turn; a buffer is refilled only after the
    copy that last read it has finished (its event)."""

    def __init__(self, dtype, pin: bool = True):
        self.dtype, self.pin = dtype, pin
        self.slots = [[None, None], [None, None]]  # [buffer, event]
        self.turn = 0
        self.lock = threading.Lock()

    def take(self, numel: int):
        slot = self.slots[self.turn]
        self.turn ^= 1
        if slot[1] is not None:
            slot[1].synchronize()
        if slot[0] is None or slot[0].numel() < numel:
            slot[0] = torch.empty(max(numel, 1), dtype=self.dtype, pin_memory=self.pin)
        return slot


