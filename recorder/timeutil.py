"""Time and duration: millisecond constants, ``now_ms(clock)``, and the one grammar of the
durations and times users type in our CLI, environment (settings) and HTTP API.

Durations: bare seconds (``30``, ``0.5``), a number and a unit (``500ms``, ``30s``, ``5m``,
``1.5h``, ``14d``, ``2w``), or a compound of those (``1m30s``, ``1h30m``, ``2d12h``); whitespace
around is ignored. Values are computed exactly (``Fraction``) and rounded once, so ``1.5d`` is
129,600,000 ms exactly. Times (``start``, ``end``): RFC 3339, unix seconds, ``now``, or ``-``
and a duration (``-24h``, ``-1.5d``, ``-1w``) before now.

Anything else is a ``DurationError`` (or, for times, a ``QueryError`` naming the parameter):
never an ``OverflowError``, however many digits or however large the value. Exempt, with their
own grammars: the Metrics API's ``window`` (Go durations, ``units.parse_go_duration``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from recorder.errors import DurationError, QueryError

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS

MIN_TIME_MS = 0
"""1970-01-01T00:00:00Z: nothing is stored before the unix epoch."""
MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write."""
MAX_DURATION_MS = MAX_TIME_MS - MIN_TIME_MS
"""The longest duration the grammar accepts: every time the recorder can hold, and no more."""

Clock = Callable[[], float]
"""Seconds since the Unix epoch, as ``time.time``."""

DURATION_FORMS = (
    "use seconds (30, 0.5), a number and a unit ms, s, m, h, d or w (500ms, 1.5h, 14d, 2w), "
    "or a compound (1m30s, 2d12h)"
)

_UNIT_MS = {"ms": 1, "s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": WEEK_MS}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_SECONDS = re.compile(_NUMBER, re.ASCII)
_COMPOUND = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h|d|w))+", re.ASCII)
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d|w)", re.ASCII)
_LOOSE_PART = re.compile(r"([0-9.]*)([^0-9.]*)")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_FORMS = "RFC 3339 (2026-11-27T10:00:00Z), unix seconds, now, or relative (-24h, -7d)"
_TIME_RANGE = "times go from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"


def now_ms(clock: Clock = time.time) -> int:
    """The clock's current time in integer milliseconds since the Unix epoch."""
    return int(clock() * SECOND_MS)


def seconds_to_ms(seconds: float) -> int:
    """A duration in (possibly fractional) seconds, rounded to whole milliseconds."""
    return round(seconds * SECOND_MS)


def floor_to(ts_ms: int, period_ms: int) -> int:
    """The start of the ``period_ms``-long period (aligned to the epoch) holding ``ts_ms``."""
    return ts_ms - ts_ms % period_ms


# --- durations ----------------------------------------------------------------------------


def parse_duration_ms(text: str) -> int:
    """A duration (``30``, ``1.5d``, ``1m30s``) in whole milliseconds, rounded half up; zero
    or more, at most ``MAX_DURATION_MS``. Anything else is a ``DurationError``."""
    exact = _bounded_ms(text)
    return math.floor(exact + Fraction(1, 2))


def parse_duration_seconds(text: str) -> float:
    """A duration (``30``, ``0.5``, ``1.5d``, ``1m30s``) in seconds, the float nearest to the
    exact value (``10.043s`` is ``10.043``); zero or more, at most ``MAX_DURATION_MS``."""
    return float(_bounded_ms(text) / SECOND_MS)


def format_duration(ms: int) -> str:
    """``ms`` as a compound the grammar reads back exactly: ``2d12h``, ``1m30s``, ``1s500ms``,
    ``0s``."""
    if ms < 0:
        raise ValueError(f"a duration cannot be negative, got {ms} ms")
    if ms == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        count, ms = divmod(ms, _UNIT_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _bounded_ms(text: str) -> Fraction:
    exact = _exact_ms(text)
    if exact > MAX_DURATION_MS:
        raise DurationError(
            text,
            f"it is longer than {MAX_DURATION_MS // DAY_MS}d, the span from 1970 to the end "
            "of 9999",
            too_long=True,
        )
    return exact


def _exact_ms(text: str) -> Fraction:
    """The exact milliseconds ``text`` spells, however large (Python integers do not
    overflow, and ``Decimal`` reads any number of digits)."""
    value = text.strip()
    if _SECONDS.fullmatch(value):
        return Fraction(Decimal(value)) * SECOND_MS
    if not _COMPOUND.fullmatch(value):
        raise DurationError(text, f"{_why_not(value)}; {DURATION_FORMS}")
    return sum(
        (Fraction(Decimal(number)) * _UNIT_MS[unit] for number, unit in _PART.findall(value)),
        Fraction(0),
    )


def _why_not(value: str) -> str:
    if not value:
        return "it is empty"
    if value[0] in "+-":
        return "it has a sign (a duration is a length, 0 or more)"
    for number, unit in _LOOSE_PART.findall(value):
        if not number and not unit:
            continue
        if not _SECONDS.fullmatch(number):
            return f"{number!r} is not a number" if number else f"no number before {unit!r}"
        if unit not in _UNIT_MS:
            return f"{number!r} has no unit" if not unit else f"unknown unit {unit!r}"
    return "it is malformed"  # pragma: no cover - every refusal has a part to blame


# --- times --------------------------------------------------------------------------------


def parse_time_ms(text: str, name: str, now_ms: int) -> int:
    """RFC 3339 (``2026-11-27T10:00:00Z``), unix seconds (``1732701600.5``), ``now``, or a
    duration before now (``-24h``, ``-1.5d``, ``-90m``, ``-1w``) to unix milliseconds, between
    1970 and the end of year 9999; anything else is a ``QueryError`` naming ``name``."""
    value = text.strip()
    if value == "now":
        return now_ms
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise QueryError(f"{name}={text!r} is out of range for a unix time in seconds")
        if not MIN_TIME_MS <= seconds * SECOND_MS <= MAX_TIME_MS:
            raise QueryError(
                f"{name}={text!r} is out of range for a unix time in seconds: {_TIME_RANGE}"
            )
        return seconds_to_ms(seconds)
    if value.startswith("-"):  # no RFC 3339 time starts with a minus
        try:
            offset = _exact_ms(value[1:])
        except DurationError as exc:
            raise QueryError(f"{name}={text!r} is not {_TIME_FORMS}: {exc.problem}") from None
        if offset > MAX_TIME_MS:
            raise QueryError(f"{name}={text!r} reaches too far back: {_TIME_RANGE}")
        return _within_range(now_ms - math.floor(offset + Fraction(1, 2)), name, text)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name}={text!r} is not {_TIME_FORMS}") from None
    if moment.tzinfo is None:
        raise QueryError(f"{name}={text!r} needs a time zone (e.g. Z or +02:00)")
    # Subtracting aware datetimes never overflows, unlike astimezone() near year 1 or 9999.
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return _within_range((micros + 500) // 1000, name, text)


def _within_range(ms: int, name: str, text: str) -> int:
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise QueryError(f"{name}={text!r} is out of range: {_TIME_RANGE}")
    return ms
