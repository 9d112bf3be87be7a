"""The method registry: names -> :class:`~vkd_fast.methods.UnlearningMethod` subclasses (the one
registry shape of :mod:`vkd_fast.utils.registry`)."""

from __future__ import annotations

import dataclasses

from ..utils.registry import Registry
from .base import UnlearningMethod


def _method_name(name: str) -> None:
    if not name.isidentifier():
        raise ValueError(f"method name must be an identifier (it addresses options as NAME.option), got {name!r}")


def _accept_method(name: str, cls: type[UnlearningMethod]) -> None:
    if not dataclasses.is_dataclass(cls.Options):
        raise TypeError(f"{cls.__name__}.Options must be a dataclass, got {cls.Options!r}")
    cls.name = name


METHODS: Registry[UnlearningMethod] = Registry("method", UnlearningMethod, check_name=_method_name,
                                               on_register=_accept_method,
                                               public="vkd_fast.methods.UnlearningMethod")


def register_method(name: str, cls: type[UnlearningMethod]) -> None:
    """Make ``cls`` available as ``method=name`` to :func:`vkd_fast.unlearn` and the CLI. A name
    already registered is replaced (so a user can swap in their own variant)."""
    if not isinstance(name, str):
        raise ValueError(f"method name must be an identifier (it addresses options as NAME.option), got {name!r}")
    METHODS.register(name, cls)


def available_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return METHODS.names()


def get_method(name: str) -> type[UnlearningMethod]:
    """The registered class of ``name``."""
    return METHODS.get(name)


def create_method(method, options=None) -> UnlearningMethod:
    """A method object from a registered name (+ options) or an object (then ``options`` must be None)."""
    if isinstance(method, UnlearningMethod):
        if options is not None:
            raise ValueError("options= goes with a method name; this method object already has its options")
        return method
    if isinstance(method, type) and issubclass(method, UnlearningMethod):
        return method(options)
    return get_method(method)(options)
