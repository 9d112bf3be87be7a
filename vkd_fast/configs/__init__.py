"""The shipped configuration files -- package data, so a non-editable install has them too:

* ``demo.yaml``: the toy-world demo's profile (which methods run, in order, and each one's settings):
  ``vkd-fast demo`` uses it; ``vkd-fast demo --config NAME_OR_PATH`` another;
* ``mllmu_llava15_vkd.yaml`` (options) and ``mllmu_llava15_vkd.sh`` (commands): the paper's
  MLLMU-Bench recipe: ``vkd-fast unlearn ... --config mllmu_llava15_vkd``;
* ``robustness_study.yaml``: the variants of ``benchmarks/robustness_study.py`` (``--variants-file``
  for another file).

A configuration is given by its shipped name (the file's stem, e.g. ``demo``) or as a path to a YAML
file; a word with no path separator and no ``.yaml`` / ``.yml`` suffix that names a shipped file is that
file, anything else a path. Files are read with ``yaml.safe_load``; every error names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def shipped() -> list[str]:
    """The shipped configurations' names (sorted)."""
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def path(name: str) -> Path:
    """The shipped file ``name`` (a configuration's name, or a file name such as ``mllmu_llava15_vkd.sh``)."""
    found = HERE / name if Path(name).suffix else HERE / f"{name}.yaml"
    if Path(name).name != name or not found.is_file():
        raise ValueError(f"no shipped configuration {name!r}; shipped: {', '.join(shipped())}")
    return found


def resolve(spec, what: str = "--config") -> Path:
    """The file ``spec`` stands for: a shipped name, or a path (which must exist)."""
    if not isinstance(spec, (str, os.PathLike)) or not os.fspath(spec):
        raise ValueError(f"{what} must be a shipped configuration's name ({', '.join(shipped())}) or a YAML file's "
                         f"path, got {spec!r}")
    text = os.fspath(spec)
    bare = os.sep not in text and "/" not in text and Path(text).suffix not in (".yaml", ".yml")
    if bare and text in shipped():
        return HERE / f"{text}.yaml"
    if not Path(text).is_file():
        raise ValueError(f"{what} {text}: no such file" + (f", and no shipped configuration of that name (shipped: "
                                                          f"{', '.join(shipped())})" if bare else ""))
    return Path(text)


def load(spec, what: str = "--config") -> tuple[Path, dict]:
    """``(file, its mapping)`` for ``spec`` (:func:`resolve`): a YAML mapping, read safely; an empty
    file is an empty mapping. Errors name ``what`` and the file."""
    import yaml

    file = resolve(spec, what)
    try:
        with open(file) as f:
            loaded = yaml.safe_load(f)
    except OSError as exc:
        raise ValueError(f"{what} {file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {file}: not valid YAML ({' '.join(str(exc).split())})") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{what} {file}: expected a mapping of options, got {type(loaded).__name__}")
    return file, loaded


__all__ = ["HERE", "load", "path", "resolve", "shipped"]
