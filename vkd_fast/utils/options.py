"""Documented, typed option dataclasses: the trainer's :class:`~vkd_fast.UnlearnConfig` and every
method's options are frozen dataclasses whose fields carry a one-line help text (the CLI's
``--help`` prints it) and are validated once, at construction.

:func:`from_mapping` builds one from a mapping of plain values (a YAML file, ``key=value`` words of
the command line) converting each value by the field's type -- ``"5e-4"`` for a float field is
5e-4 (YAML 1.1 reads it as a string) -- and naming the option in every error.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field


def option(default, help: str):  # noqa: A002 - the name users see in dataclasses.fields(...).metadata
    """A dataclass field with its one-line documentation (``field.metadata["help"]``)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def defaults(cls) -> dict:
    """``{field name: default}`` of an options dataclass."""
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


def effective_defaults(cls) -> dict:
    """``{field name: value}`` of ``cls()`` -- the defaults after validation has filled in the ones that
    depend on others (e.g. VKD's ``forget_augment=None`` -> 0.6); :func:`defaults` where ``cls()`` fails."""
    try:
        obj = cls()
    except (TypeError, ValueError):
        return defaults(cls)
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}


def plain(text: str) -> str:
    """Docstring markup as plain words for a terminal: ``:class:`~a.B``` -> B, ````x```` -> x."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0)
                  else m.group(1), text)
    return re.sub(r"``([^`]+)``", r"\1", text).replace(".:", ":")


def help_lines(cls, prefix: str = "", indent: str = "  ") -> list[str]:
    """One line per option: name (with ``prefix``), help text and the effective default."""
    values = effective_defaults(cls)
    return [f"{indent}{prefix + f.name:<24} {plain(f.metadata.get('help', ''))} [default: {values[f.name]!r}]"
            for f in dataclasses.fields(cls)]


def to_dict(obj) -> dict:
    """The options as a plain dict (JSON-friendly: tuples become lists)."""
    return dataclasses.asdict(obj)


def _base_types(tp) -> tuple:
    """The concrete types an annotation allows (``float | None`` -> (float, NoneType))."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        return tuple(t for arg in typing.get_args(tp) for t in _base_types(arg))
    return (origin or tp,)


def _convert(name: str, tp, value, where: str):
    """``value`` converted to the annotation ``tp`` where a plain value (text, an int for a float)
    stands for it unambiguously; otherwise returned as is for the dataclass's own checks."""
    allowed = _base_types(tp)
    if value is None or isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed):
        return value
    if isinstance(value, str):
        text = value.strip()
        if type(None) in allowed and text.lower() in ("none", "null", "~", ""):
            return None
        for t in allowed:
            try:
                if t is bool and text.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                    return text.lower() in ("true", "yes", "on", "1")
                if t is int:
                    return int(text)
                if t is float:
                    return float(text)
            except ValueError:
                continue
        if str not in allowed:
            wanted = " or ".join(t.__name__ for t in allowed)
            raise ValueError(f"{where} {name}: expected {wanted}, got {value!r}")
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tuple in allowed and isinstance(value, list):
        return tuple(value)
    return value


def from_mapping(cls, values: dict | None, where: str = "option"):
    """``cls(**values)`` with each value converted by its field's type; unknown names are an error
    that lists the known ones."""
    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown {where}(s) {', '.join(unknown)}; known: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _convert(k, hints[k], v, where) for k, v in values.items()})


def check_types(obj, where: str | None = None) -> None:
    """Type- and finiteness-check every field of an options dataclass against its annotation, naming
    the field: ``int`` fields take ints (not bools, not 2.5), ``float`` fields finite numbers (an int is
    stored as a float; NaN and infinities are refused), ``str`` / ``bool`` / ``dict`` / ``tuple``
    fields those types, ``X | None`` also None. Call it first in ``__post_init__``."""
    import math

    where = where or type(obj).__name__
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        allowed = _base_types(hints.get(f.name, typing.Any))
        if not all(isinstance(t, type) for t in allowed) or object in allowed:
            continue  # Any, callables, ...: the class checks those itself
        value = getattr(obj, f.name)
        if value is None and type(None) in allowed:
            continue
        if float in allowed and isinstance(value, int) and not isinstance(value, bool) and int not in allowed:
            value = float(value)
            object.__setattr__(obj, f.name, value)
        if tuple in allowed and isinstance(value, list):
            value = tuple(value)
            object.__setattr__(obj, f.name, value)
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            wanted = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise ValueError(f"{where}.{f.name} must be {wanted}, got {value!r} ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}.{f.name} must be a finite number, got {value!r}")

