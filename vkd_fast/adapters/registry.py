"""Adapter registry keyed by ``model.config.model_type``: a class is registered under each name in its
:attr:`VisualAdapter.model_types` (``register_adapter(AdapterClass)``), or under one name given
explicitly (``register_adapter(model_type, AdapterClass)``)."""

from __future__ import annotations

from torch import nn

from ..utils.registry import Registry
from .base import VisualAdapter

ADAPTERS: Registry[VisualAdapter] = Registry("model_type", VisualAdapter, public="vkd_fast.adapters.VisualAdapter")


def register_adapter(model_type, adapter_cls: type[VisualAdapter] | None = None):
    """Make ``get_adapter`` use an adapter class for models whose ``config.model_type`` it names.

    ``register_adapter(AdapterClass)`` registers it under every name in ``AdapterClass.model_types``
    (also usable as a class decorator); ``register_adapter(model_type, AdapterClass)`` under
    ``model_type`` alone. A name registered again is replaced. Returns the class."""
    if adapter_cls is None and isinstance(model_type, type):  # register_adapter(AdapterClass)
        adapter_cls = model_type
        _check_class(adapter_cls)
        names = adapter_cls.model_types
        if isinstance(names, str) or not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{adapter_cls.__name__}.model_types must be a non-empty tuple of config.model_type "
                             f"names, got {names!r}; or pass the name: register_adapter(model_type, AdapterClass)")
    else:
        if not isinstance(model_type, str) or not model_type:
            raise ValueError(f"model_type must be a non-empty string, got {model_type!r}")
        _check_class(adapter_cls)
        names = (model_type,)
    for name in names:
        ADAPTERS.register(name, adapter_cls)
    return adapter_cls


def _check_class(adapter_cls) -> None:
    if not (isinstance(adapter_cls, type) and issubclass(adapter_cls, VisualAdapter)):
        raise TypeError(f"adapter_cls must be a subclass of vkd_fast.adapters.VisualAdapter, got {adapter_cls!r}")


def supported_model_types() -> list[str]:
    return ADAPTERS.names()


def adapter_class(model_type: str | None) -> type[VisualAdapter] | None:
    """The adapter class registered for ``model_type``, or None (no adapter for it)."""
    return ADAPTERS.get(model_type) if model_type in ADAPTERS else None


def get_adapter(model: nn.Module) -> VisualAdapter:
    """The adapter for ``model`` (a transformers MLLM), chosen by ``model.config.model_type``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    cls = adapter_class(model_type)
    if cls is None:
        raise ValueError(
            f"no vkd_fast adapter for model_type {model_type!r} ({type(model).__name__}); supported: "
            f"{', '.join(supported_model_types())}. Register one with "
            "vkd_fast.adapters.register_adapter(model_type, AdapterClass)"
        )
    return cls(model)
