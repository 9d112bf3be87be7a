"""Plug-ins: a module (dotted name) or a ``.py`` file imported for what it registers (methods, tasks,
protocols, model families; docs/extending.md). The CLI's ``--plugin`` and ``VKD_FAST_PLUGINS`` use
:func:`load_plugin`; so can a script or a test."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_plugin(spec: str) -> ModuleType:
    """Import ``spec``: a ``.py`` path (as module ``vkd_fast_plugin_<stem>``, put in ``sys.modules``
    like any import, so that dataclasses and pickling inside it work) or a dotted module name.
    Errors: ``ValueError`` naming the plug-in (a missing file, an import error)."""
    spec = spec.strip()
    path = Path(spec)
    try:
        if spec.endswith(".py"):
            if not path.is_file():
                raise ValueError(f"plug-in {spec}: no such file")
            name = f"vkd_fast_plugin_{path.stem}"
            mod_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            try:
                mod_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            return module
        return importlib.import_module(spec)
    except ImportError as exc:
        raise ValueError(f"plug-in {spec}: {exc}") from exc
