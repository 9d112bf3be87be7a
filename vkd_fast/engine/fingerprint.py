"""What a run starts from, in a few digests: the model (its config, its visual part, its language
model) and the forget / retain data. A run folder records them so that ``resume`` can refuse another
model or other data, saying which part differs.

Tensors are digested cheaply -- shape, dtype and up to 4096 evenly spaced values of each, not every
byte -- which tells apart different checkpoints (another model, a retrained one, an unlearned copy)
at a cost independent of the model's size; data items are digested whole (image pixels, mode and
size; every text field).
"""

from __future__ import annotations

import hashlib
import json

import torch

_SAMPLE = 4096
_VOLATILE = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "_attn_implementation_autoset",
             "_commit_hash"}


def _strip(config):
    if isinstance(config, dict):
        return {k: _strip(v) for k, v in config.items() if k not in _VOLATILE}
    return config


def tensor_digest(named) -> str:
    """Digest of ``(name, tensor)`` pairs from their shapes, dtypes and evenly spaced samples."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        flat = t.reshape(-1)
        if flat.numel():
            idx = torch.linspace(0, flat.numel() - 1, min(_SAMPLE, flat.numel()), device=flat.device).long()
            h.update(flat[idx].float().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


def model_fingerprint(model, adapter) -> dict:
    """``{"config", "visual", "language_model"}`` digests; the language model's is None when it is not
    in memory (a model from :func:`vkd_fast.load_visual_model`)."""
    config = getattr(model, "config", None)
    cfg = _strip(config.to_dict()) if config is not None else {}
    visual = adapter.visual_param_names()
    params = [(n, p) for n, p in model.named_parameters()]
    rest = [(n, p) for n, p in params if n not in visual]
    return {"config": hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:24],
            "visual": tensor_digest((n, p) for n, p in params if n in visual),
            "language_model": None if any(p.is_meta for _, p in rest) else tensor_digest(rest)}


def data_fingerprint(items) -> str:
    """Digest of a list of items: every image's mode, size and pixels, every other field's text."""
    h = hashlib.sha256()
    for it in items:
        for key in sorted(it):
            value = it[key]
            h.update(f"{key}=".encode())
            if hasattr(value, "tobytes") and hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
                h.update(f"{value.mode}:{value.size}:".encode())
                h.update(value.tobytes())
            elif isinstance(value, torch.Tensor):
                h.update(value.detach().cpu().contiguous().numpy().tobytes())
            else:
                h.update(json.dumps(value, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:24]


def run_fingerprint(model, adapter, forget, retain) -> dict:
    return {**model_fingerprint(model, adapter), "forget": data_fingerprint(forget), "retain": data_fingerprint(retain)}


_WHAT = {"config": "the model's config", "visual": "the model's vision tower / projector weights",
         "language_model": "the model's language model weights", "forget": "the forget data",
         "retain": "the retain data"}


def differences(saved: dict, now: dict) -> list[str]:
    """What differs between two fingerprints (a language model not in memory on either side is not
    compared: a visual-only run may be resumed with the whole model and the other way round)."""
    out = []
    for key, what in _WHAT.items():
        a, b = saved.get(key), now.get(key)
        if key == "language_model" and (a is None or b is None):
            continue
        if a != b:
            out.append(what)
    return out
