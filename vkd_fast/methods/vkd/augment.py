"""Forget-image augmentation (docs/method.md §2): a forget image's target is an anchor that does not
depend on the image, so its input may be varied freely; varying it teaches the vision side to move
*any* view of a forget person to the anchor, which carries the forgetting over to unseen images.

Works on processed inputs (the image processor's normalised pixels), in place of a copy, by the
model family's pixel layout (its adapter's ``pixel_layout``):
* ``"images"``, one image per leading index (LLaVA ``[B, 3, H, W]``, LLaVA-NeXT
  ``[B, crops, 3, H, W]``): a random shift (circular, up to ``strength * H / 8`` pixels each way) and
  Gaussian noise of std ``0.1 * strength``;
* ``"patch_rows"``, all images' patches flattened into rows (Qwen-VL; the adapter's ``pixel_rows``
  counts each image's): Gaussian noise only (a shift would mix patches of the temporal / merge layout).
"""

from __future__ import annotations

import torch


def augment_forget_pixels(inputs: dict, n_forget: int, strength: float,
                          generator: torch.Generator | list[torch.Generator], adapter=None) -> dict:
    """``inputs``: a collated batch whose first ``n_forget`` images are forget images. Returns a new
    dict with those images' pixels augmented (retain images untouched). ``generator``: one CPU
    generator for all the draws (in image order), or a list of one per forget image (what the VKD
    step passes: each image's draws keyed on its place in the run, so they do not depend on how the
    batch is split over processes). ``adapter``: the model's adapter, whose ``pixel_layout`` (and, for
    ``"patch_rows"``, ``pixel_rows``) says where each image's pixels are; without one, ``pixel_values``
    must hold one image per leading index. Deterministic given the generators' states."""
    if strength <= 0 or n_forget == 0:
        return inputs
    per_image = isinstance(generator, (list, tuple))
    gens = list(generator) if per_image else [generator] * n_forget
    if len(gens) != n_forget:
        raise ValueError(f"generator: expected one per forget image ({n_forget}), got {len(gens)}")
    pv = inputs["pixel_values"]
    layout = "images" if adapter is None else adapter.pixel_layout
    out = pv.clone()
    if layout == "images":
        if pv.dim() < 4:
            raise ValueError(f"pixel_values of shape {tuple(pv.shape)} hold no image per leading index; for a model "
                             "whose pixels are flattened patch rows pass adapter= (its pixel_layout says so)")
        h = pv.shape[-2]
        reach = int(round(strength * h / 8))
        for i, g in enumerate(gens):
            if reach:
                dy, dx = torch.randint(-reach, reach + 1, (2,), generator=g).tolist()
                out[i] = torch.roll(out[i], shifts=(dy, dx), dims=(-2, -1))
            noise = torch.randn(out[i].shape, generator=g) * (0.1 * strength)
            out[i] += noise.to(out.device, out.dtype)
    elif layout == "patch_rows":
        sizes = adapter.pixel_rows(**{k: v for k, v in inputs.items() if k != "pixel_values"})[:n_forget]
        if not per_image:  # one generator: one draw for all the forget rows
            sizes, gens = [sum(sizes)], gens[:1]
        start = 0
        for n, g in zip(sizes, gens):
            noise = torch.randn((n, pv.shape[-1]), generator=g) * (0.1 * strength)
            out[start:start + n] += noise.to(out.device, out.dtype)
            start += n
    else:
        raise ValueError(f"{type(adapter).__name__}.pixel_layout must be 'images' or 'patch_rows', got {layout!r}")
    return {**inputs, "pixel_values": out}
