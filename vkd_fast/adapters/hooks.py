"""Removable forward hooks on a model's own modules (no patching): a stop hook that ends a forward
pass at a module, and a call counter (tests check truncated forwards with it)."""

from __future__ import annotations

import contextlib

from torch import nn


class _StopForward(Exception):
    """Raised by a stop hook to end a forward pass early."""


def run_until(fn, module: nn.Module):
    """Call ``fn()`` and return ``module``'s output from the first time it runs; nothing after it
    runs. Raises if ``fn`` finishes without calling ``module``."""
    seen = []

    def hook(_mod, _args, output):
        seen.append(output[0] if isinstance(output, (tuple, list)) else output)
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        fn()
    except _StopForward:
        return seen[0]
    finally:
        handle.remove()
    raise RuntimeError(f"the forward pass never reached {type(module).__name__}")


@contextlib.contextmanager
def count_calls(modules):
    """Context manager yielding a list whose length is the number of forward calls of ``modules``
    (used by tests to check truncated forwards)."""
    calls: list[int] = []
    handles = [m.register_forward_pre_hook(lambda _m, _a, i=i: calls.append(i)) for i, m in enumerate(modules)]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()
