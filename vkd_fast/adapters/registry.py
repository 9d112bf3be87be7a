"""Adapter registry keyed by ``model.config.model_type``."""

from __future__ import annotations

from torch import nn

from .base import VisualAdapter

_REGISTRY: dict[str, type[VisualAdapter]] = {}


def register_adapter(model_type: str, adapter_cls: type[VisualAdapter]) -> None:
    """Make ``get_adapter`` use ``adapter_cls`` for models whose ``config.model_type`` is ``model_type``."""
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"model_type must be a non-empty string, got {model_type!r}")
    if not (isinstance(adapter_cls, type) and issubclass(adapter_cls, VisualAdapter)):
        raise TypeError(f"adapter_cls must be a subclass of vkd_fast.adapters.VisualAdapter, got {adapter_cls!r}")
    _REGISTRY[model_type] = adapter_cls


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def get_adapter(model: nn.Module) -> VisualAdapter:
    """The adapter for ``model`` (a transformers MLLM), chosen by ``model.config.model_type``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _REGISTRY:
        raise ValueError(
            f"no vkd_fast adapter for model_type {model_type!r} ({type(model).__name__}); supported: "
            f"{', '.join(supported_model_types())}. Register one with "
            "vkd_fast.adapters.register_adapter(model_type, AdapterClass)"
        )
    return _REGISTRY[model_type](model)
