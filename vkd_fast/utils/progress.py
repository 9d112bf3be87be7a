"""Progress on stderr: a live bar (tqdm) on a terminal; elsewhere -- a log file, CI, ``make demo >
log`` -- a plain line every ~10% of the work or every 30 s, never carriage-return frames."""

from __future__ import annotations

import sys
import time


class PlainProgress:
    """tqdm's small surface (``update``, ``set_postfix``, ``total``, ``refresh``, ``close``) as lines."""

    def __init__(self, total: int, desc: str, file=None, every_seconds: float = 30.0):
        self.total, self.desc, self.n = total, desc, 0
        self.file = file or sys.stderr
        self.every = every_seconds
        self.postfix = ""
        self._t0 = self._last_time = time.perf_counter()
        self._last_share = 0.0
        self._last_postfix = ""
        self._closed = False

    def _line(self) -> None:
        share = self.n / self.total if self.total else 1.0
        elapsed = time.perf_counter() - self._t0
        extra = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} ({share:.0%}) in {elapsed:.0f} s{extra}", file=self.file,
              flush=True)
        self._last_time, self._last_share, self._last_postfix = time.perf_counter(), share, self.postfix

    def update(self, n: int = 1) -> None:
        self.n += n
        share = self.n / self.total if self.total else 1.0
        if int(share * 10 + 1e-9) > int(self._last_share * 10 + 1e-9) or \
                time.perf_counter() - self._last_time >= self.every:
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def refresh(self) -> None:
        pass

    def write(self, message: str) -> None:
        print(message, file=self.file, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            share = self.n / self.total if self.total else 1.0
            if self.n != 0 and (share != self._last_share or self.postfix != self._last_postfix):
                self._line()  # the final state (e.g. the last check's accuracy), once


def is_terminal(file=None) -> bool:
    file = file or sys.stderr
    return bool(getattr(file, "isatty", lambda: False)())


def progress_bar(total: int, desc: str, unit: str = "it", file=None):
    """A live tqdm bar on a terminal, a :class:`PlainProgress` elsewhere."""
    file = file or sys.stderr
    if is_terminal(file):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=file, dynamic_ncols=True, leave=True)
    return PlainProgress(total, desc, file)


def log_line(message: str, file=None) -> None:
    """A message that keeps an active terminal bar intact (tqdm.write), a plain line elsewhere."""
    file = file or sys.stderr
    if is_terminal(file):
        from tqdm.auto import tqdm

        tqdm.write(message, file=file)
    else:
        print(message, file=file, flush=True)
