"""Progress output for a terminal and for logs: every progress bar of the project comes from ``progress_bar``.

On a terminal it is an ordinary tqdm bar. In a pipe or a file tqdm would write a new carriage-return update many
times a second, which a log keeps as thousands of lines; there the same bar writes one plain line (no bar, no
carriage return) at most every ``interval`` seconds, and one last line when it closes.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # seconds between two progress lines in a log


class LogLines(tqdm):
    """tqdm that writes whole lines: at most one per ``mininterval`` seconds and only after progress (none at 0),
    whatever asks for a refresh (``update``, ``set_postfix``), and the last one at close."""

    _written = 0  # self.n at the last line (class defaults: tqdm displays inside __init__)
    _line_at: float | None = None  # time of the last line
    _closing = False

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None or self.n == self._written:  # msg '' clears a terminal line: a log has none to clear
            return False
        now = time.time()
        if not self._closing and now - (self.start_t if self._line_at is None else self._line_at) < self.mininterval:
            return False
        self._written, self._line_at = self.n, now
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if not self.disable:
            self._closing = True
            with self._lock:
                self.display()
        super().close()


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, leave: bool = True,
                 interval: float = LOG_INTERVAL_S, file: IO[str] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm over ``iterable`` (or a manual one with ``total=``), written to ``file`` (default stderr).

    ``enabled=False`` shows nothing; ``leave`` keeps a terminal bar after it closes; ``interval`` is the time
    between lines in a pipe or a file. Other keywords (``desc``, ``unit``, ``total``) go to tqdm.
    """
    stream = sys.stderr if file is None else file
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if is_terminal(stream):
        return tqdm(iterable, file=stream, leave=leave, dynamic_ncols=True, **kwargs)
    return LogLines(iterable, file=stream, leave=False, ncols=0, smoothing=0, mininterval=interval,
                    maxinterval=interval, **kwargs)
