"""``load_visual_model``: a checkpoint's vision tower and projector, without its language model.

VKD with a ``vision:*`` or ``projector`` tap never runs the language model W, so W need not be read:
the model object is the family's ordinary transformers class, built with every parameter on the
``meta`` device (no storage; buffers are real), and then only V's and P's tensors are read from the
checkpoint -- from the shards that hold them (a sharded checkpoint's index says which). Memory is the
vision side's, whatever the LLM's size. Adapters, ``set_trainable``, vision / projector taps and VKD
work on it unchanged; whatever needs W raises a clear error (:meth:`VisualAdapter.require_language_model`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from .names import match_names
from .safetensors_io import CheckpointError, checkpoint_files, read_tensors


@contextlib.contextmanager
def params_on_meta():
    """Modules built inside get their parameters on the meta device; buffers stay real."""
    original = nn.Module.register_parameter

    def register(module, name, param):
        original(module, name, param)
        if param is not None and not param.is_meta:
            kwargs = {"requires_grad": param.requires_grad}
            module._parameters[name] = type(param)(param.to("meta"), **kwargs)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _set_parameter(model: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)


def load_visual_model(model_dir, dtype: torch.dtype | None = torch.float32, device=None) -> nn.Module:
    """The model in ``model_dir`` with its vision tower and projector read from the checkpoint and its
    language model and head never read (``meta`` tensors). ``dtype``: of the visual weights (float32
    by default, as VKD trains them; ``None`` keeps the checkpoint's); ``device``: where V and P go.
    Works for single-file and sharded safetensors checkpoints of the registered families, with the
    tensor names of transformers 4.x and 5.x; pickle checkpoints are refused."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from ..adapters import get_adapter, supported_model_types

    model_dir = Path(model_dir)
    files, weight_map = checkpoint_files(model_dir)  # refuses missing / pickle-only folders first
    try:
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{model_dir}: cannot read its config.json ({' '.join(str(exc).split())})") from None
    if config.model_type not in supported_model_types():
        raise CheckpointError(f"{model_dir}: model_type {config.model_type!r} has no vkd_fast adapter; supported: "
                              f"{', '.join(supported_model_types())}")
    with params_on_meta():
        model = AutoModelForImageTextToText.from_config(config)
    adapter = get_adapter(model)
    names = sorted(adapter.visual_param_names())
    to_ckpt = match_names(names, weight_map, f"checkpoint {model_dir}", type(adapter))  # the family's names
    params = dict(model.named_parameters())
    by_file: dict[str, list[str]] = {}
    for n in names:
        by_file.setdefault(weight_map[to_ckpt[n]], []).append(n)
    for file, group in sorted(by_file.items()):
        tensors = read_tensors(model_dir / file, [to_ckpt[n] for n in group])
        for n in group:
            t = tensors[to_ckpt[n]]
            if tuple(t.shape) != tuple(params[n].shape):
                raise CheckpointError(f"{model_dir / file}: {to_ckpt[n]} has shape {tuple(t.shape)}, the model's "
                                      f"{n} {tuple(params[n].shape)} (a checkpoint of another configuration?)")
            _set_parameter(model, n, t.to(dtype) if dtype is not None else t)
    model.eval()
    if device is not None:
        adapter.place_visual(device)
    return model


def is_visual_only(model: nn.Module) -> bool:
    """Whether ``model`` came from :func:`load_visual_model` (its language model is not in memory)."""
    return any(p.is_meta for p in model.parameters())
