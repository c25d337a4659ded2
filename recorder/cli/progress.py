"""Progress of the long commands (``recorder copy``, ``recorder maintain``): what is being done,
how much of it, the rate and the time left, drawn on stderr and only when stderr is a terminal,
so logs and pipes get none of it; the commands' summaries still go to stdout.

tqdm draws it: one small, long-maintained pure-Python library without dependencies of its own,
which gives rate and ETA and redraws in place. rich draws as well, but would bring Pygments and
markdown-it-py into the image for a progress bar.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm


class Bars:
    """A ``recorder.store.compactor.Progress`` that draws one bar per task, ``(what, done,
    total)`` at a time: a new ``what`` ends the previous bar (left on screen with its time)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = sys.stderr if stream is None else stream
        self.enabled = _is_terminal(self._stream)
        self._bar: tqdm[Any] | None = None
        self._what: str | None = None

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None or what != self._what:
            self.close()
            self._what = what
            self._bar = tqdm(
                desc=what,
                total=total,
                unit=f" {what.split()[-1]}",
                unit_scale=True,
                file=self._stream,
                dynamic_ncols=True,
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
