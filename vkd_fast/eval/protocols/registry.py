"""The benchmark-protocol registry: :func:`vkd_fast.eval.evaluate` runs ``protocol=<name>`` through it
and knows no protocol names itself. A protocol registers where it is defined (``mllmu.py``,
``clear.py``, or a user's task module); the likelihood protocol is the runner's own."""

from __future__ import annotations

from typing import ClassVar

from ...utils.registry import Registry


class BenchmarkProtocol:
    """A benchmark's own scoring, run by :func:`vkd_fast.eval.evaluate` with ``protocol=name``.

    Subclasses set ``summary`` (one line, for help texts), ``data_type`` (what the evaluated
    ``sets`` argument must be) and ``loader`` (how a user gets one, shown in errors), ``options``
    (the keyword options :meth:`run` takes besides the prompt ``style``), ``fixed_length`` (True:
    the generation length is part of the protocol and ``max_new_tokens`` is refused), implement
    :meth:`run` and, when it needs optional packages, :meth:`require`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for help texts
    data_type: ClassVar[type] = object
    loader: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    fixed_length: ClassVar[bool] = False

    @classmethod
    def require(cls) -> None:
        """Raise ``ImportError`` (saying what to install) when an optional package the protocol needs
        is missing; callers check it before any model loads."""

    @classmethod
    def run(cls, model, tokenizer, data, adapter, generator, style, options: dict) -> dict:
        """``generator``: a :class:`~vkd_fast.eval.protocols.prompt.ModelGenerator` of the model in
        prompt ``style`` (None: the model's own). Returns ``{"results", "records", "settings"}``."""
        raise NotImplementedError


def _accept(name: str, cls: type[BenchmarkProtocol]) -> None:
    if name == "likelihood":
        raise ValueError("protocol name 'likelihood' is the runner's own (option log-likelihood); choose another")
    cls.name = name


PROTOCOLS: Registry[BenchmarkProtocol] = Registry("protocol", BenchmarkProtocol, on_register=_accept, sort=False,
                                                  public="vkd_fast.eval.protocols.BenchmarkProtocol")


def register_protocol(name: str, cls: type[BenchmarkProtocol]) -> type[BenchmarkProtocol]:
    """Make ``cls`` available as ``vkd_fast.eval.evaluate(..., protocol=name)`` (and to a task's
    ``protocols``, hence the CLI's ``--protocol``)."""
    return PROTOCOLS.register(name, cls)


def available_protocols() -> tuple[str, ...]:
    """``"likelihood"`` (the runner's own) and every registered benchmark protocol."""
    return ("likelihood", *PROTOCOLS.names())
