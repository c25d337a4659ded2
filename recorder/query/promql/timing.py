"""Prometheus' HTTP API grammar of times (``time``, ``start``, ``end``) and durations
(``step``): a time is unix seconds as a decimal number (rounded to the millisecond) or RFC 3339
(``2026-11-28T16:00:00Z``, fractions of a second allowed); a duration is seconds as a decimal
number or a Prometheus duration (``1h30m``, ``15s``, ``100ms``, units ``y w d h m s ms``).
Errors are ``QueryError`` with Prometheus' words, naming the parameter."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from recorder.errors import QueryError
from recorder.timeutil import MAX_TIME_MS

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DURATION = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?"
)
_UNITS_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)")
MAX_TEXT = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time_ms(text: str, name: str) -> int:
    """A time parameter in milliseconds since the epoch, rounded as Prometheus rounds it."""
    value = text.strip() if len(text) <= MAX_TEXT else ""
    if _NUMBER.fullmatch(value):
        seconds = float(value)
        if math.isfinite(seconds) and abs(seconds) * 1000 <= MAX_TIME_MS:
            whole = math.trunc(seconds)
            fraction = _round_half_away(1000 * (seconds - whole)) / 1000
            nanos = math.trunc(fraction * 1e9)
            return (whole * 1_000_000_000 + nanos) // 1_000_000
    elif _RFC3339.fullmatch(value):
        head, dot, rest = value.upper().partition(".")
        if dot:  # Python reads at most microseconds: milliseconds are what we keep
            digits = re.match(r"\d+", rest)
            assert digits is not None
            rest = digits.group()[:6].ljust(6, "0") + rest[digits.end() :]
            value = f"{head}.{rest}"
        try:
            parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
            return (parsed - _EPOCH) // timedelta(milliseconds=1)
        except (ValueError, OverflowError):
            pass
    raise QueryError(
        f'invalid parameter "{name}": cannot parse {text[:MAX_TEXT]!r} to a valid timestamp'
    )


def _round_half_away(x: float) -> float:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def parse_duration_ms(text: str, name: str) -> int:
    """A duration parameter in milliseconds (truncated, as Prometheus does)."""
    value = text.strip() if len(text) <= MAX_TEXT else ""
    if _NUMBER.fullmatch(value):
        seconds = float(value)
        if math.isfinite(seconds) and abs(seconds) * 1e9 < 2**63:
            return math.trunc(seconds * 1000)
        raise QueryError(
            f'invalid parameter "{name}": cannot parse {text[:MAX_TEXT]!r} to a valid duration. '
            "It overflows int64"
        )
    found = _DURATION.fullmatch(value)
    if value and found is not None:
        total = sum(int(g) * unit for g, unit in zip(found.groups(), _UNITS_MS, strict=True) if g)
        if total * 1_000_000 < 2**63:
            return total
    raise QueryError(
        f'invalid parameter "{name}": cannot parse {text[:MAX_TEXT]!r} to a valid duration'
    )
