"""Teacher targets: the frozen model's visual features, computed once into an ActivationCache,
and the forget anchors derived from them (METHOD.md section 2)."""

from __future__ import annotations

import sys
import time

import torch

from ..cache import ActivationCache
from .qa import pad_right

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
            print(f"\rteacher cache: {done}/{len(image_inputs)} images ({time.perf_counter() - t0:.1f} s)",
                  end="" if done < len(image_inputs) else "\n", file=sys.stderr)
    return cache


def retain_mean_anchor(cache: ActivationCache, retain_keys: list[int]) -> torch.Tensor:
    """A_t = mean over retain images of T(x)_t, per token position t: ``[max tokens, D]`` (fp32).
    With variable token counts a position averages the retain images that have it."""
    lengths = [cache.rows(k) for k in retain_keys]
    packed, offsets = cache.get(retain_keys)
    total = torch.zeros(max(lengths), packed.shape[1], dtype=torch.float64)
    count = torch.zeros(max(lengths), 1, dtype=torch.float64)
    for a, b in zip(offsets.tolist(), offsets.tolist()[1:]):
        total[: b - a] += packed[a:b].double()
        count[: b - a] += 1
    return (total / count).float()


def misdirect_anchor(cache: ActivationCache, retain_keys: list[int], max_tokens: int, scale: float,
                     seed: int) -> torch.Tensor:
    """A_t = c u: u a fixed random unit vector (seeded), c = scale x mean teacher token norm (retain)."""
    packed, _ = cache.get(retain_keys)
    norm = torch.linalg.vector_norm(packed.float(), dim=1).mean()
    u = torch.randn(packed.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = (u / torch.linalg.vector_norm(u)).float()
    return (scale * norm * u).expand(max_tokens, -1).contiguous()


def nearest_retain_keys(forget_pixels: list[torch.Tensor], retain_pixels: list[torch.Tensor]) -> list[int]:
    """For each forget image, the index of the retain image nearest to it *in pixel space* (sum of
    squared differences of the processed pixels) among retain images of the same shape: the person a
    model that never saw the forget person would take them for by appearance alone. Pixel space, not
    the teacher's features: the teacher's feature space is arranged by what it knows about people, so
    its nearest neighbour is the retain person who shares the most attributes (measured on the toy
    world: 5 of 8 attribute values shared), which would hand the forgotten answers back."""
    by_shape: dict[tuple, list[int]] = {}
    for j, p in enumerate(retain_pixels):
        by_shape.setdefault(tuple(p.shape), []).append(j)
    stacks = {shape: torch.stack([retain_pixels[j].double().reshape(-1) for j in idx])
              for shape, idx in by_shape.items()}
    out = []
    for i, p in enumerate(forget_pixels):
        idx = by_shape.get(tuple(p.shape))
        if idx is None:
            raise ValueError(f"forget image {i}: no retain image has its processed shape {tuple(p.shape)}, which "
                             "nearest_retain needs (use forget_target='retain_mean')")
        d = (stacks[tuple(p.shape)] - p.double().reshape(1, -1)).pow(2).sum(1)
        out.append(idx[int(d.argmin())])
    return out
