"""docs/cli.md is the parser's own reference (vkd_fast.cli.reference): it matches what the parser
generates today, and it names every subcommand, every option and every ``key=value`` option of
``unlearn`` -- walked here from the parser and the option dataclasses, apart from the generator."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from pathlib import Path

import pytest

from vkd_fast.cli.main import build_parser, parse_args
from vkd_fast.cli.reference import COMMAND, cli_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_docs_cli_md_is_the_generated_reference():
    expected = cli_reference()
    actual = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True), "docs/cli.md",
                                                 "cli_reference()"))[:60])
        pytest.fail(f"docs/cli.md is out of date with the parser; regenerate it with `{COMMAND}`\n{diff}")


def test_the_reference_does_not_depend_on_the_terminal(monkeypatch):
    first = cli_reference()
    monkeypatch.setenv("COLUMNS", "37")
    assert cli_reference() == first
    assert str(Path.home()) not in first and str(Path(__file__).resolve().parents[1]) not in first


def _walk(parser: argparse.ArgumentParser):
    """(subcommand or "", its parser) for the top level and every subcommand."""
    yield "", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _sections(text: str) -> dict[str, str]:
    head, *rest = text.split("\n## ")
    out = {"": head}
    for part in rest:
        title, _, body = part.partition("\n")
        out[title.strip().removeprefix("vkd-fast ").strip("`")] = body
    return out


def test_the_reference_names_every_subcommand_and_option():
    parser = build_parser()
    text = cli_reference(parser)
    sections = _sections(text)
    missing = []
    for name, sub in _walk(parser):
        if name not in sections:
            missing.append(f"subcommand {name!r} (no '## vkd-fast {name}' section)")
            continue
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"subcommand {c!r} in the overview" for c in action.choices if f"`{c}`" not in text]
                continue
            names = action.option_strings or [action.metavar or action.dest]
            missing += [f"{name or 'vkd-fast'}: {s}" for s in names if s not in sections[name]]
            if action.help and " ".join(action.help.split())[:40] not in sections[name].replace("\\", ""):
                missing.append(f"{name or 'vkd-fast'}: help of {names[0]}")
    assert not missing, "docs/cli.md (cli_reference) misses: " + "; ".join(missing)


def test_the_reference_names_every_key_value_option():
    from vkd_fast import UnlearnConfig
    from vkd_fast.methods import available_methods, get_method

    unlearn = _sections(cli_reference())["unlearn"]
    names = [f.name for f in dataclasses.fields(UnlearnConfig)]
    names += [f"{m}.{f.name}" for m in available_methods() for f in dataclasses.fields(get_method(m).Options)]
    assert not [n for n in names if f"`{n}`" not in unlearn]


def test_parse_args_reads_the_command_line_as_main_does(capsys):
    base = ["unlearn", "MODEL", "--forget", "f", "--retain", "r", "--output-dir", "o"]
    assert parse_args(base + ["steps=3", "vkd.lora={r: 4}"]).overrides == ["steps=3", "vkd.lora={r: 4}"]
    for argv in (base + ["stray"], ["eval", "toy:gold", "steps=3"]):
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
