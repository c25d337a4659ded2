"""Progress of the long commands (``recorder copy``, ``recorder maintain``): what is being done,
how much of it, the rate and the time left, drawn on stderr and only when stderr is a terminal,
so logs and pipes get none of it; the commands' summaries still go to stdout.

tqdm draws it: one small, long-maintained pure-Python library without dependencies of its own,
which gives rate and ETA and redraws in place. rich draws as well, but would bring Pygments and
markdown-it-py into the image for a progress bar.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm


class Bars:
    """A ``recorder.store.compactor.Progress`` that draws one bar per task, ``(what, done,
    total)`` at a time: a new ``what`` ends the previous bar (left on screen with its time).
    Draws nothing when the stream is not a terminal (``enabled`` is False)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = sys.stderr if stream is None else stream
        self.enabled = _is_terminal(self._stream)
        self._bar: tqdm[Any] | None = None
        self._what: str | None = None

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:  # nothing to do is not drawn
            return
        if self._bar is None or what != self._what:
            self.close()
            self._what = what
            sized = _sized(self._stream)
            self._bar = tqdm(
                desc=what,
                total=total,
                unit=f" {what.split()[-1]}",
                unit_scale=total >= 10_000,  # 12.3k, but 8 rather than 8.00
                file=self._stream,
                # Follows the terminal's size; one that tells none (a pseudo-terminal nobody
                # sized) would get nothing drawn, so it is taken as 80 x 24.
                dynamic_ncols=sized,
                ncols=None if sized else 80,
                nrows=None if sized else 24,
                mininterval=0.2,
            )
        bar = self._bar
        if bar.total != total:
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._what = None

    def __enter__(self) -> Bars:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


def _sized(stream: TextIO) -> bool:
    """Whether the terminal says how large it is."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0
