"""The ``vkd-fast`` command-line reference (docs/cli.md), generated from the parser itself so that it
cannot drift: ``python -m vkd_fast.cli.reference > docs/cli.md``.

Every subcommand with its description, usage line and options (help text and default), then the
``key=value`` options of ``vkd-fast unlearn``: the trainer's and each registered method's, from the
same option dataclasses ``vkd-fast unlearn --help`` lists. The output does not depend on the terminal
(fixed width) or on this machine; it documents the methods and tasks registered when it runs (run it
without plug-ins for the shipped ones).
"""

from __future__ import annotations

import argparse
import dataclasses

COMMAND = "python -m vkd_fast.cli.reference > docs/cli.md"
WIDTH = 100  # the usage lines' width, whatever the terminal


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog=parser.prog, width=WIDTH)


def _cell(text: str) -> str:
    """One line of text for a Markdown table cell (``|`` and ``<`` escaped)."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "\\<")


def _code(text: str) -> str:
    return "`" + str(text).replace("|", "\\|") + "`"


def _usage(parser: argparse.ArgumentParser) -> str:
    fmt = _formatter(parser)
    fmt.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return fmt.format_help().strip()


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return _formatter(parser)._expand_help(action) if action.help else ""


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
                           argparse._VersionAction)):
        return "flag"
    if action.default is None or action.default == argparse.SUPPRESS or action.default == []:
        return ""
    return _code(action.default)


def _actions_table(parser: argparse.ArgumentParser) -> list[str]:
    fmt = _formatter(parser)
    positionals = [a for a in parser._actions if not a.option_strings
                   and not isinstance(a, argparse._SubParsersAction)]
    optionals = [a for a in parser._actions if a.option_strings]
    lines = []
    if positionals:
        lines += ["", "| Argument | Help |", "|---|---|"]
        lines += [f"| {_code(fmt._format_action_invocation(a))} | {_cell(_help(parser, a))} |" for a in positionals]
    if optionals:
        lines += ["", "| Option | Help | Default |", "|---|---|---|"]
        lines += [f"| {_code(fmt._format_action_invocation(a))} | {_cell(_help(parser, a))} | {_default(a)} |"
                  for a in optionals]
    return lines


def _options_table(cls, prefix: str = "") -> list[str]:
    """An option dataclass as a table: ``key=value`` name, help, the effective default (as ``--help``)."""
    from ..utils.options import effective_defaults, plain

    values = effective_defaults(cls)
    rows = [f"| {_code(prefix + f.name)} | {_cell(plain(f.metadata.get('help', '')))} | {_code(repr(values[f.name]))} |"
            for f in dataclasses.fields(cls)]
    return ["| Option | Help | Default |", "|---|---|---|", *rows] if rows else ["(none)"]


def _unlearn_options() -> list[str]:
    from ..engine import UnlearnConfig
    from ..methods import available_methods, get_method
    from ..utils.options import plain

    lines = ["", "### Trainer and method options (`--config` YAML, `key=value` words)", "",
             "Every option below may be set in the YAML file of `--config` or as a `key=value` word anywhere after "
             "`unlearn` (the words win over the file). A method's options are addressed under its name: "
             "`vkd.forget_target=nearest_retain`, or in YAML a mapping `vkd: {forget_target: ...}`; only the "
             "section of the method being run is used. `vkd-fast unlearn --help` prints the same list.", "",
             "#### Trainer options", "",
             "`output_dir` and `device` are also `--output-dir` and `--device`; give each once.", "",
             *_options_table(UnlearnConfig)]
    for name in available_methods():
        cls = get_method(name)
        doc = plain(" ".join((cls.__doc__ or "").split())).rstrip(".:")
        lines += ["", f"#### `{name}` options", ""]
        if doc:
            lines += [_cell(doc) + ".", ""]
        lines += [f"YAML: a mapping under `{name}:`; words: `{name}.option=value`; {cls.default_steps} steps unless "
                  "`steps=` is given.", "", *_options_table(cls.Options, prefix=f"{name}.")]
    return lines


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """docs/cli.md: the Markdown reference of ``parser`` (default: :func:`~vkd_fast.cli.main.build_parser`'s)."""
    from .main import build_parser

    parser = build_parser() if parser is None else parser
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = dict(sub_action.choices)
    helps = {choice.dest: choice.help for choice in sub_action._choices_actions}  # the one-line help of each
    lines = ["# `vkd-fast` command-line reference", "",
             f"Generated from the command line's parser by `{COMMAND}`; do not edit it by hand.", "",
             parser.description + ".", "", "```text", _usage(parser), "```", *_actions_table(parser), "",
             "| Subcommand | What it does |", "|---|---|"]
    lines += [f"| [`{name}`](#vkd-fast-{name}) | {_cell(helps.get(name, ''))} |" for name in commands]
    for name, sub in commands.items():
        lines += ["", f"## vkd-fast {name}", "", _cell(helps.get(name) or "") + "."]
        if sub.description:
            lines += ["", _cell(sub.description)]
        lines += ["", "```text", _usage(sub), "```", *_actions_table(sub)]
        if name == "unlearn":
            lines += _unlearn_options()
        elif sub.epilog:
            lines += ["", "```text", sub.epilog.strip(), "```"]
    return "\n".join(line.rstrip() for line in lines) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(cli_reference())
