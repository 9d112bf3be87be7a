"""Progress output (vkd_fast.utils.progress): plain lines, no carriage returns, when stderr is not a
terminal -- every ~10% or 30 s -- and a live bar only on a terminal."""

from __future__ import annotations

import io

from vkd_fast.utils.progress import PlainProgress, is_terminal, log_line, progress_bar


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_every_tenth_and_at_the_end():
    out = io.StringIO()
    bar = progress_bar(100, "[x] training", file=out)
    assert isinstance(bar, PlainProgress) and not is_terminal(out)
    for _ in range(95):
        bar.update(1)
    bar.set_postfix(loss="0.1")
    bar.close()
    bar.close()  # once only
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 10
    assert lines[0].startswith("[x] training: 10/100 (10%)") and lines[-1].startswith("[x] training: 95/100 (95%)")
    assert lines[-1].endswith("(loss=0.1)")


def test_the_last_line_shows_the_final_postfix():
    out = io.StringIO()
    bar = PlainProgress(10, "build", out)
    for _ in range(10):
        bar.update(1)  # the 100% line is printed here, with the postfix of the previous check
    bar.set_postfix(acc="0.97")  # the final check
    bar.close()
    assert out.getvalue().splitlines()[-1].endswith("10/10 (100%) in 0 s (acc=0.97)")


def test_a_slow_run_still_reports_every_30_seconds(monkeypatch):
    import vkd_fast.utils.progress as P

    now = [0.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: now[0])
    out = io.StringIO()
    bar = PlainProgress(1000, "slow", out)
    for _ in range(3):
        now[0] += 31
        bar.update(1)
    assert len(out.getvalue().splitlines()) == 3


def test_a_terminal_gets_the_live_bar():
    tty = _Tty()
    bar = progress_bar(3, "t", file=tty)
    assert not isinstance(bar, PlainProgress)
    bar.close()
    log_line("hello", file=io.StringIO())
