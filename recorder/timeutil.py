"""Time and duration: the one home of millisecond constants and of ``now_ms(clock)``.

(The duration grammar users type in the CLI, the environment and the HTTP API is added here by
the duration work; see README "Durations and times".)
"""

from __future__ import annotations

import time
from collections.abc import Callable

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS

Clock = Callable[[], float]
"""Seconds since the Unix epoch, as ``time.time``."""


def now_ms(clock: Clock = time.time) -> int:
    """The clock's current time in integer milliseconds since the Unix epoch."""
    return int(clock() * SECOND_MS)


def seconds_to_ms(seconds: float) -> int:
    """A duration in (possibly fractional) seconds, rounded to whole milliseconds."""
    return round(seconds * SECOND_MS)


def floor_to(ts_ms: int, period_ms: int) -> int:
    """The start of the ``period_ms``-long period (aligned to the epoch) holding ``ts_ms``."""
    return ts_ms - ts_ms % period_ms
