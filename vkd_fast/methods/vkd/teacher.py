"""Teacher features (docs/method.md §2): the frozen model's visual features, computed once into an
:class:`~vkd_fast.ActivationCache` (or, the naive VKD for tests and benchmarks, by a live frozen copy
every step), and the source a VKD step takes its target rows from."""

from __future__ import annotations

import copy
import sys
import time

import torch

from ...cache import ActivationCache
from ...utils.progress import is_terminal
from ...utils.text import pad_right

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


_PROMPT_KEYS = ("input_ids", "attention_mask")


def collate_inputs(adapter, items: list[dict]) -> dict:
    """Join single-image inputs into a batch; prompts (``llm:j`` taps) are right-padded."""
    batch = adapter.collate([{k: v for k, v in it.items() if k not in _PROMPT_KEYS} for it in items])
    if "input_ids" in items[0]:
        ids, mask = pad_right([it["input_ids"][0] for it in items])
        batch.update(input_ids=ids, attention_mask=mask)
    return batch


@torch.no_grad()
def build_teacher_cache(adapter, image_inputs: list[dict], keys: list[int], tap: str, batch_size: int,
                        dtype: str = "float32", progress: bool = True) -> ActivationCache:
    """Run the (still unmodified) model's visual path over every image once, ``batch_size`` at a time,
    into a new cache keyed by ``keys``; no copy of the teacher is kept."""
    cache = ActivationCache(_DTYPES[dtype])
    t0 = time.perf_counter()
    device = next(adapter.vision_tower.parameters()).device
    for start in range(0, len(image_inputs), batch_size):
        chunk = image_inputs[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate_inputs(adapter, chunk).items()}
        feats, offsets = adapter.visual_features(tap=tap, **batch)
        bounds = offsets.tolist()
        cache.put_batch(keys[start : start + len(chunk)],
                        [feats[a:b].to(cache.dtype) for a, b in zip(bounds, bounds[1:])])
        if progress:
            done = min(start + batch_size, len(image_inputs))
            terminal = is_terminal()  # a live counter on a terminal; elsewhere the last line only
            if terminal or done == len(image_inputs):
                print(f"{chr(13) if terminal else ''}teacher cache: {done}/{len(image_inputs)} images "
                      f"({time.perf_counter() - t0:.1f} s)", end="" if done < len(image_inputs) else "\n",
                      file=sys.stderr)
    return cache


class LiveTeacher:
    """A frozen copy of the model computing targets every step: the naive VKD (tests, benchmarks)."""

    def __init__(self, model, tap: str, inputs: list[dict]):
        from ...adapters import get_adapter

        self.adapter = get_adapter(copy.deepcopy(model).eval().requires_grad_(False))
        self.tap, self.inputs = tap, inputs

    @torch.no_grad()
    def take(self, keys: list[int], upcoming: list[int] | None = None) -> torch.Tensor:
        batch = collate_inputs(self.adapter, [self.inputs[k] for k in keys])
        return self.adapter.visual_features(tap=self.tap, **batch)[0]


class CachedTeacher:
    """Target rows from the teacher cache: the next step's rows are gathered (and, on CUDA, copied on
    a side stream) in the background while the current step trains."""

    def __init__(self, cache: ActivationCache, device_fn):
        self.cache, self.device_fn = cache, device_fn
        self.pending, self.pending_keys = None, None

    def take(self, keys: list[int], upcoming: list[int] | None = None) -> torch.Tensor:
        """The rows of ``keys``, packed; ``upcoming``: the keys of the next step, to prefetch."""
        device = self.device_fn()
        target_device = device if device.type == "cuda" else None
        if self.pending is None or self.pending_keys != keys:  # nothing (or something else) prefetched
            self.pending = self.cache.prefetch(keys, target_device)
        rows, _ = self.pending.wait()
        self.pending, self.pending_keys = None, None
        if upcoming:
            self.pending, self.pending_keys = self.cache.prefetch(upcoming, target_device), list(upcoming)
        return rows
