"""One registry shape for everything the package looks up by name: unlearning methods, VKD's forget
targets, model-family adapters (keyed by ``config.model_type``) and benchmark tasks.

A registry maps a name to a subclass of one base class; registering a name again replaces the entry
(a user swaps in their own variant); an unknown name raises ``ValueError`` naming the option and
every valid choice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """``name -> subclass of base``.

    ``option``: what the name is called where a user passes it (``method``, ``forget_target``, ...),
    used in errors; ``public``: the base class's public dotted name, for errors. ``check_name``: an
    extra test of a new name (raise ``ValueError``). ``sort``:
    :meth:`names` sorted (True) or in registration order. ``on_register(name, cls)``: called after a
    class is accepted (e.g. to record the name on the class)."""

    def __init__(self, option: str, base: type, *, check_name: Callable[[str], None] | None = None,
                 sort: bool = True, on_register: Callable[[str, type], None] | None = None,
                 missing_hint: str = "", public: str | None = None):
        self.option, self.base, self.sort = option, base, sort
        self._public = public or f"{base.__module__}.{base.__qualname__}"  # how errors name the base class
        self._check_name, self._on_register, self._hint = check_name, on_register, missing_hint
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str, cls: type[T]) -> type[T]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.option} name must be a non-empty string, got {name!r}")
        if self._check_name is not None:
            self._check_name(name)
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"cls must be a subclass of {self._public}, got {cls!r}")
        if self._on_register is not None:
            self._on_register(name, cls)
        self._entries[name] = cls
        return cls

    def remove(self, name: str) -> None:
        """Forget ``name`` (nothing happens when it is not registered)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries) if self.sort else list(self._entries)

    def get(self, name: str) -> type[T]:
        if name not in self._entries:
            raise ValueError(f"{self.option} must be one of {', '.join(map(repr, self.names()))}, got {name!r}"
                             + (f". {self._hint}" if self._hint else ""))
        return self._entries[name]

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
