"""The pages a newcomer reads -- README.md and every docs/*.md, found when the tests run -- say only
what works:

* every ``vkd-fast ...`` line of a ```bash / ```sh / ```console block parses with the real command
  line parser, as ``vkd-fast`` reads it (``unlearn``'s ``key=value`` words included; the command is
  not run). Placeholders (``MODEL_DIR``, ``/models/llava-1.5-7b-hf``) are fine as values; a ``...``
  word stands for omitted arguments (required options are then not demanded); a line whose
  ``--plugin`` is not in the repository (an illustration) cannot be checked and is skipped;
* every ```python block compiles (a block whose first line is ``# fragment`` is skipped);
* every relative Markdown link, and every repository path in inline code (``benchmarks/....py``,
  ``examples/...``, ``docs/....md``, ``vkd_fast/....py``, ``vkd_fast/configs/...``, ``tests/....py``),
  exists;
* every ``make TARGET`` (in those shell blocks, or inline code that is just ``make`` and targets) names
  a target of the Makefile.

Failures name the page and line.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console", "shell-session", "zsh"}
OPERATORS = {"&&", "||", ";", "|", "&"}
INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)  # within a paragraph
REPO_PATH = re.compile(r"(?:benchmarks/[\w./-]+\.py|examples/[\w./-]+|docs/[\w./-]+\.md|vkd_fast/configs/[\w./-]+"
                       r"|vkd_fast/[\w./-]+\.py|tests/[\w./-]+\.py)")


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.name


def _blocks(text: str):
    """(language, first content line number, lines) of every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i + 1
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            i += 1
        yield lang, start + 1, lines[start:i]
        i += 1


def _prose(text: str) -> str:
    """``text`` with every fenced block's lines blanked (line numbers kept)."""
    out = text.splitlines()
    for _, first, body in _blocks(text):
        for k in range(first - 2, first - 1 + len(body) + 1):
            if 0 <= k < len(out):
                out[k] = ""
    return "\n".join(out)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _inline_code(prose: str):
    """(line, content) of every inline code span outside fenced blocks."""
    for m in re.finditer(INLINE_CODE, prose):
        yield _line_of(prose, m.start()), m.group(2).strip()


def _commands(page: Path):
    """(line, words) of every simple command in the page's shell blocks (prompts stripped, ``\\``
    continuations joined, comments dropped, split at ``&&`` / ``|`` / ``;``, redirections cut)."""
    for lang, first, body in _blocks(page.read_text(encoding="utf-8")):
        if lang not in SHELL:
            continue
        k = 0
        while k < len(body):
            line_no, line = first + k, body[k]
            while line.rstrip().endswith("\\") and k + 1 < len(body):
                k += 1
                line = line.rstrip()[:-1] + " " + body[k].strip()
            k += 1
            stripped = line.strip()
            if stripped.startswith("$ "):
                stripped = stripped[2:]
            elif lang == "console":
                continue  # output, not a command
            try:
                words = shlex.split(stripped, comments=True)
            except ValueError as exc:
                yield line_no, exc
                continue
            command: list[str] = []
            for word in [*words, ";"]:
                if word in OPERATORS:
                    if command:
                        yield line_no, command
                    command = []
                else:
                    command.append(word)


def _cut_redirections(words: list[str]) -> list[str]:
    for i, w in enumerate(words):
        if re.match(r"^(\d|&)?(>|<)", w) and not re.match(r"^<[^<>]+>", w):  # <folder>: a placeholder
            return words[:i]
    return words


def _env_and_argv(words: list[str]) -> tuple[dict, list[str]]:
    env = {}
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        key, _, value = words[0].partition("=")
        env[key] = value
        words = words[1:]
    return env, _cut_redirections(words)


@contextlib.contextmanager
def _plugins_loaded(specs: list[str]):
    """Load the plug-ins a command names, then put every registry back as it was."""
    from vkd_fast.adapters.registry import ADAPTERS
    from vkd_fast.eval.protocols.registry import PROTOCOLS
    from vkd_fast.methods.registry import METHODS
    from vkd_fast.methods.vkd.targets import _TARGETS
    from vkd_fast.tasks import TASKS
    from vkd_fast.utils.plugins import load_plugin

    registries = (ADAPTERS, PROTOCOLS, METHODS, _TARGETS, TASKS)
    saved = [dict(r._entries) for r in registries]
    modules = {name: m for name, m in sys.modules.items() if name.startswith("vkd_fast_plugin_")}
    try:
        for spec in specs:
            if spec.endswith(".py"):
                load_plugin(str(ROOT / spec))
            elif spec in sys.modules:  # imported before (its registrations since undone): register again
                importlib.reload(sys.modules[spec])
            else:
                load_plugin(spec)
        yield
    finally:
        for r, entries in zip(registries, saved):
            r._entries.clear()
            r._entries.update(entries)
        for name in [n for n in sys.modules if n.startswith("vkd_fast_plugin_")]:
            if name in modules:
                sys.modules[name] = modules[name]
            else:
                del sys.modules[name]


def _unavailable_plugin(spec: str) -> bool:
    if spec.endswith(".py"):
        return not (ROOT / spec).is_file()
    try:
        return importlib.util.find_spec(spec) is None
    except (ImportError, ValueError):
        return True


def check_vkd_fast_command(argv: list[str], env: dict) -> str | None:
    """None when ``vkd-fast ARGV`` parses as the command reads it, else argparse's message."""
    import argparse

    from vkd_fast.cli.main import build_parser, parse_args, subcommands
    from vkd_fast.cli.options import plugin_specs

    specs = plugin_specs(argv, env)
    missing = [s for s in specs if _unavailable_plugin(s)]
    if missing:
        return f"skip: plug-in {', '.join(missing)} is not in the repository"
    err, out = io.StringIO(), io.StringIO()
    with _plugins_loaded(specs):
        parser = build_parser()
        elided = "..." in argv
        if elided:  # "..." stands for omitted arguments: keep it only as an option's value
            subs = subcommands(parser)
            sub = subs.get(next((w for w in argv if not w.startswith("-")), ""), parser)
            kept = []
            for w in argv:
                prev = kept[-1] if kept else ""
                takes_value = prev in sub._option_string_actions and sub._option_string_actions[prev].nargs != 0
                if w != "..." or takes_value:
                    kept.append(w)
            argv = kept
            for p in [parser, *subs.values()]:
                for action in p._actions:
                    if action.option_strings:
                        action.required = False
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                parse_args(argv, parser)
        except SystemExit as exc:
            if exc.code not in (0, None):
                return " ".join(err.getvalue().strip().splitlines()[-1:]) or f"exit {exc.code}"
        except argparse.ArgumentError as exc:
            return str(exc)
    return None


def _makefile_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([^\s#=:][^=:]*?)\s*::?(?!=)", line)
        if m:
            targets.update(t for t in m.group(1).split() if "%" not in t and "$" not in t)
    return targets


def _make_targets(words: list[str]) -> list[str]:
    """The targets of a ``make`` command's words (options and VAR=value dropped)."""
    out, skip = [], False
    for w in words[1:]:
        if skip:
            skip = False
        elif w in ("-C", "-f", "-j", "-o", "-W"):
            skip = True
        elif not w.startswith("-") and "=" not in w:
            out.append(w)
    return out


def command_failures(page: Path) -> list[str]:
    out = []
    for line, words in _commands(page):
        if isinstance(words, Exception):
            out.append(f"{_name(page)}:{line}: cannot split the line: {words}")
            continue
        env, argv = _env_and_argv(words)
        if not argv or os.path.basename(argv[0]) != "vkd-fast":
            continue
        problem = check_vkd_fast_command(argv[1:], env)
        if problem and not problem.startswith("skip:"):
            out.append(f"{_name(page)}:{line}: `{shlex.join(argv)}`: {problem}")
    return out


def python_failures(page: Path) -> list[str]:
    out = []
    for lang, first, body in _blocks(page.read_text(encoding="utf-8")):
        if lang not in ("python", "py", "python3") or body and re.match(r"^\s*#\s*fragment\b", body[0]):
            continue
        try:
            compile("\n".join(body) + "\n", f"{_name(page)}:{first}", "exec")
        except SyntaxError as exc:
            out.append(f"{_name(page)}:{first + (exc.lineno or 1) - 1}: {exc.msg}")
    return out


def path_failures(page: Path) -> list[str]:
    prose = _prose(page.read_text(encoding="utf-8"))
    code_free = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)
    out = []
    links = [(m.start(), m.group(1)) for m in re.finditer(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)",
                                                          code_free)]
    links += [(m.start(), m.group(1)) for m in re.finditer(r"(?m)^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", code_free)]
    for offset, target in links:
        if re.match(r"^[a-z][\w+.-]*:", target, flags=re.I) or target.startswith("#"):
            continue  # a URL, mailto: or an anchor on the same page
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (page.parent / path).exists():
            out.append(f"{_name(page)}:{_line_of(code_free, offset)}: link to {target}: no such file")
    for line, code in _inline_code(prose):
        for word in code.split():
            word = re.sub(r"(::|:\d|#).*$", "", word.strip("\"'(),;:.`"))
            if any(c in word for c in "*<>{}$[]") or not REPO_PATH.fullmatch(word):
                continue
            if not (ROOT / word).exists():
                out.append(f"{_name(page)}:{line}: `{word}`: no such file in the repository")
    return out


def make_failures(page: Path) -> list[str]:
    targets = _makefile_targets()
    uses = [(line, _env_and_argv(words)[1]) for line, words in _commands(page) if not isinstance(words, Exception)]
    uses += [(line, shlex.split(code)) for line, code in _inline_code(_prose(page.read_text(encoding="utf-8")))
             if re.match(r"^make(\s+[\w.-]+)+$", code)]  # `make demo`; not `make VAR=value target`
    return [f"{_name(page)}:{line}: `make {target}`: no such target in the Makefile"
            for line, words in uses if words and words[0] == "make"
            for target in _make_targets(words) if target not in targets]


@pytest.fixture(params=PAGES, ids=_name)
def page(request) -> Path:
    return request.param


def test_every_vkd_fast_command_parses(page):
    failures = command_failures(page)
    assert not failures, "commands that vkd-fast would refuse:\n" + "\n".join(failures)


def test_every_python_block_compiles(page):
    failures = python_failures(page)
    assert not failures, ("python blocks that do not compile (mark a fragment with a first line `# fragment`):\n"
                          + "\n".join(failures))


def test_every_linked_and_quoted_path_exists(page):
    failures = path_failures(page)
    assert not failures, "paths that do not exist:\n" + "\n".join(failures)


def test_every_make_target_exists(page):
    failures = make_failures(page)
    assert not failures, "make targets that do not exist:\n" + "\n".join(failures)


BAD_PAGE = """# A page with one mistake of each kind

See [the method](method.md), [nothing](no-such-page.md#x), [a site](https://example.org) and
`vkd_fast/no_such_module.py`, `benchmarks/*.py` (a glob) and `docs/method.md`.

```bash
$ vkd-fast unlearn MODEL_DIR --forget <folder> --retain data/retain/ --output-dir runs/x \\
    steps=3 vkd.forget_target=retain_mean
vkd-fast unlearn MODEL ... --output-dir runs/x --resume   # elided: required options not demanded
vkd-fast eval toy:gold --protocol nope
vkd-fast unlearn MODEL_DIR --forget a --retain b --output-dir o stray
OMP_NUM_THREADS=1 vkd-fast demo --no-such-flag > log.txt && make no-such-target
make test-fast PYTEST_ARGS=-x
```

```python
# fragment
x = (
```

```python
def f(:
    pass
```
"""


def test_the_checks_find_each_kind_of_mistake(tmp_path):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "bad.md"
    page.write_text(BAD_PAGE, encoding="utf-8")
    (tmp_path / "docs" / "method.md").write_text("", encoding="utf-8")
    commands = command_failures(page)
    assert [c.split(":")[1] for c in commands] == ["10", "11", "12"], commands
    assert "invalid choice: 'nope'" in commands[0] and "unrecognized arguments: stray" in commands[1]
    assert "unrecognized arguments: --no-such-flag" in commands[2]
    assert python_failures(page) == ["bad.md:22: invalid syntax"]
    assert path_failures(page) == ["bad.md:3: link to no-such-page.md#x: no such file",
                                   "bad.md:4: `vkd_fast/no_such_module.py`: no such file in the repository"]
    assert make_failures(page) == ["bad.md:12: `make no-such-target`: no such target in the Makefile"]
