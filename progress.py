"""Progress reporting without printing from library code.

Library functions that loop for long take ``progress: ProgressFactory | None``; they call
``bar = progress(total=N, desc="train")`` and then ``bar.update(1)``,
``bar.set_postfix(loss=...)`` and ``bar.close()``. The CLI passes :func:`cli_progress`;
the default :func:`null_progress` does nothing.

:func:`cli_progress` draws tqdm bars when stderr is a terminal. Otherwise (a log file, CI, nohup,
a job scheduler) it writes plain lines without control codes: one when a bar closes (one per
epoch, per evaluation) and, for long loops, at most one every :data:`LINE_INTERVAL_S` seconds.
:func:`configure_output` sets what the CLI's ``-q`` / ``-v`` mean for logs and bars.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Protocol, TextIO

#: Seconds between two progress lines of one loop when stderr is not a terminal.
LINE_INTERVAL_S = 10.0
_quiet = False


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, **values: Any) -> Any: ...

    def close(self) -> Any: ...


class ProgressFactory(Protocol):
    def __call__(self, *, total: int | None, desc: str) -> ProgressBar: ...


class _NullBar:
    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, **values: Any) -> None:
        return None

    def close(self) -> None:
        return None


def null_progress(*, total: int | None = None, desc: str = "") -> ProgressBar:
    """A progress factory that reports nothing (the library default)."""
    return _NullBar()


def tqdm_progress(*, total: int | None = None, desc: str = "") -> ProgressBar:
    """A progress factory drawing a tqdm bar on stderr (for a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)


class LineProgress:
    """A progress bar for logs: plain text lines, no cursor movement.

    Prints ``desc: n/total (p%) in Xs [postfix]`` when closed, and while running at most one
    line every ``interval`` seconds.
    """

    def __init__(self, *, total: int | None = None, desc: str = "", interval: float = LINE_INTERVAL_S,
                 stream: TextIO | None = None) -> None:
        self.total, self.desc, self.interval = total, desc or "progress", float(interval)
        self.stream = stream
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.start = self.last = time.monotonic()
        self.closed = False

    def _line(self, state: str) -> str:
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = " ".join(f"{k}={_short(v)}" for k, v in self.postfix.items())
        return (f"{self.desc}: {state} {count}{pct} in {time.monotonic() - self.start:.0f}s"
                + (f" [{post}]" if post else ""))

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._write(self._line("at"))

    def set_postfix(self, **values: Any) -> None:
        self.postfix.update(values)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(self._line("done"))


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cli_progress(*, total: int | None = None, desc: str = "") -> ProgressBar:
    """The CLI's progress factory: nothing under ``-q``, a tqdm bar on a terminal, plain
    :class:`LineProgress` lines otherwise."""
    if _quiet:
        return _NullBar()
    if sys.stderr.isatty():
        return tqdm_progress(total=total, desc=desc)
    return LineProgress(total=total, desc=desc)


def configure_output(*, quiet: bool = False, verbose: bool = False) -> None:
    """Set up logging and progress for the CLI: ``quiet`` leaves warnings and errors only (no
    bars, no INFO lines), ``verbose`` adds DEBUG messages; the default logs INFO."""
    global _quiet
    _quiet = bool(quiet)
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    root.setLevel(level)
