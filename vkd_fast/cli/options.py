"""Options of ``vkd-fast unlearn`` from a YAML file and ``key=value`` words, and plug-ins.

Addressing: a trainer option by its name (``steps=300``); a method's option under the method's name
(``vkd.forget_target=nearest_retain``, or in YAML a mapping ``vkd: {forget_target: ...}``). A YAML
file may hold sections for several methods (one file for a whole comparison): only the section of
the method being run is used. A ``key=value`` word for another method is an error (surely a slip).
Values are converted by the option's type (``lr=5e-4`` is a float; YAML 1.1 alone would read it as
text). ``--config`` takes a YAML file's path or a shipped configuration's name (``mllmu_llava15_vkd``,
the paper's recipe: :mod:`vkd_fast.configs`); the file's keys are checked against the options, the
errors naming the file.

Plug-ins: ``--plugin MODULE_OR_FILE`` (repeatable) or ``VKD_FAST_PLUGINS`` (comma-separated) import
a module (a dotted name or a ``.py`` path) before anything else; what it registers -- methods
(``register_method``), benchmark tasks (``register_task``), protocols (``register_protocol``), model
families (``register_adapter``) -- is available to every subcommand (docs/extending.md).
"""

from __future__ import annotations

import os

from ..utils.plugins import load_plugin


def plugin_specs(argv: list[str], env=None) -> list[str]:
    """The plug-ins a command line names: ``VKD_FAST_PLUGINS`` of ``env`` (default: this process's
    environment), then each ``--plugin`` word of ``argv``, in order."""
    env = os.environ if env is None else env
    specs = [s for s in env.get("VKD_FAST_PLUGINS", "").split(",") if s.strip()]
    for i, word in enumerate(argv):
        if word == "--plugin" and i + 1 < len(argv):
            specs.append(argv[i + 1])
        elif word.startswith("--plugin="):
            specs.append(word.split("=", 1)[1])
    return specs


def load_plugins(argv: list[str]) -> None:
    """Import the plug-ins named by ``--plugin`` words in ``argv`` and by ``VKD_FAST_PLUGINS``."""
    for spec in plugin_specs(argv):
        load_plugin(spec)


def _parse_value(key: str, raw: str):
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ValueError(f"option {key}: cannot read the value {raw!r}") from None


def _one_source(trainer: dict, key: str, flag: str, value) -> None:
    """A trainer option that also has a command-line flag: given both ways with different values is
    refused (nothing is silently overridden); the flag's value is used."""
    if value is None:
        return
    if key in trainer and trainer[key] is not None and str(trainer[key]) != str(value):
        raise ValueError(f"option {key}={trainer[key]!r} (from --config or key=value) conflicts with {flag} {value}; "
                         f"give it once")
    trainer[key] = value


def config_from(config_path, overrides: list[str], method: str, output_dir, device=None) -> tuple:
    """(UnlearnConfig, the method's options) from ``--config`` and ``key=value`` words (which win over
    the file). ``output_dir`` (--output-dir) and ``device`` (--device; None = not given) may also be
    options; given both ways with different values they are refused."""
    import dataclasses

    from .. import configs
    from ..engine import UnlearnConfig
    from ..methods import available_methods, get_method
    from ..utils.options import from_mapping

    cls = get_method(method)
    trainer: dict = {}
    options: dict = {}
    if config_path:
        file, loaded = configs.load(config_path, "--config")
        for key, value in loaded.items():
            if key in available_methods():
                if key == method:
                    if not isinstance(value, dict):
                        raise ValueError(f"--config {file}: {key}: expected a mapping of {key} options")
                    options.update(value)
            else:
                trainer[key] = value
        # the file's own keys, checked here so that the error names the file (key=value words: below)
        for where, keys, known in (("", trainer, UnlearnConfig), (f"{method}.", options, cls.Options)):
            unknown = sorted(set(keys) - {f.name for f in dataclasses.fields(known)})
            if unknown:
                raise ValueError(f"--config {file}: unknown option(s) {', '.join(where + str(k) for k in unknown)}; "
                                 f"known: {', '.join(f.name for f in dataclasses.fields(known))}"
                                 + ("; method sections: " + ", ".join(available_methods()) if not where else ""))
        from_file = [(trainer, k, v) for k, v in trainer.items()] + [(options, k, v) for k, v in options.items()]
    for item in overrides:
        key, raw = item.split("=", 1)
        key = key.strip()
        name, dot, sub = key.partition(".")
        if dot:
            if name != method:
                raise ValueError(f"option {key}: addresses method {name!r}, but the method run is {method!r}"
                                 + ("" if name in available_methods() else
                                    f" (methods: {', '.join(available_methods())})"))
            options[sub] = _parse_value(key, raw)
        else:
            trainer[key] = _parse_value(key, raw)
    _one_source(trainer, "output_dir", "--output-dir", output_dir)
    _one_source(trainer, "device", "--device", device)
    try:
        config = from_mapping(UnlearnConfig, trainer, "option")
        method_options = from_mapping(cls.Options, options, f"{method} option")
    except ValueError as exc:  # about a value the file gave (no word replaced it): say which file
        import re

        if config_path and any(source.get(k) is v and re.search(rf"\b{re.escape(str(k))}\b", str(exc))
                               for source, k, v in from_file):
            raise ValueError(f"--config {file}: {exc}") from None
        raise
    return config, method_options


def options_help() -> str:
    """The ``unlearn`` epilog: every trainer option, then every registered method's options."""
    import textwrap

    from ..engine import UnlearnConfig
    from ..methods import available_methods, get_method
    from ..utils.options import help_lines, plain

    lines = ["trainer options (YAML keys of --config, or key=value words; output_dir and device are also "
             "--output-dir and --device, give each once):"] + help_lines(UnlearnConfig)
    for name in available_methods():
        cls = get_method(name)
        doc = plain(" ".join((cls.__doc__ or "").split())).rstrip(".:")
        lines += ["", f"{name} options (YAML: a mapping under '{name}:'; words: {name}.option=value; "
                  f"{cls.default_steps} steps unless steps= is given)" + (f" -- {doc}" if doc else "") + ":"]
        lines += help_lines(cls.Options, prefix=f"{name}.") or ["  (none)"]
    def wrap(line: str) -> str:  # long help wraps; "[default: x]" stays on one line
        if len(line) <= 118:
            return line
        return textwrap.fill(line.replace("[default: ", "[default:\u00a0"), 118,
                             subsequent_indent=" " * 28).replace("\u00a0", " ")

    return "\n".join(wrap(line) for line in lines)
