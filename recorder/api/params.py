"""Parsing and validation of history query parameters (pure).

Every function either returns a value the store can use as it is (integers of milliseconds
within ``MIN_TIME_MS..MAX_TIME_MS``, a step no longer than the longest range) or raises
``QueryError`` with a message that names the parameter. No client input reaches the store as
an overflowing integer, an infinite or NaN float, or a date ``datetime`` cannot represent.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from recorder import units
from recorder.errors import QuantityError, QueryError
from recorder.selectors import LabelSelector, parse_label_selector

MIN_TIME_MS = 0
"""1970-01-01T00:00:00Z: nothing is stored before the unix epoch."""
MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write."""
MIN_STEP_MS = 1000
DAY_MS = 86_400_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RELATIVE = re.compile(r"-([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)", re.ASCII)
_DAYS = re.compile(r"([0-9]+)d", re.ASCII)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}
_TIME_FORMS = "RFC 3339 (2026-11-27T10:00:00Z), unix seconds, now, or relative (-24h, -7d)"
_TIME_RANGE = "times go from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"


def _within_range(ms: float, name: str, text: str) -> int:
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise QueryError(f"{name}={text!r} is out of range: {_TIME_RANGE}")
    return round(ms)


def parse_time_ms(text: str, name: str, now_ms: int) -> int:
    """RFC 3339 (``2026-11-27T10:00:00Z``), unix seconds (``1732701600.5``), ``now``, or a time
    relative to now (``-24h``, ``-7d``, ``-90m``, ``-1w``) to unix milliseconds, between
    1970 and the end of year 9999; anything else is a ``QueryError`` naming ``name``."""
    value = text.strip()
    if value == "now":
        return now_ms
    relative = _RELATIVE.fullmatch(value)
    if relative:
        # float() of at most a few hundred ASCII digits is finite or inf, never an error
        offset_ms = float(relative.group(1)) * _UNIT_MS[relative.group(2)]
        if not offset_ms <= MAX_TIME_MS:
            raise QueryError(f"{name}={text!r} reaches too far back: {_TIME_RANGE}")
        return _within_range(now_ms - round(offset_ms), name, text)
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise QueryError(f"{name}={text!r} is out of range for a unix time in seconds")
        if not MIN_TIME_MS <= seconds * 1000 <= MAX_TIME_MS:
            raise QueryError(
                f"{name}={text!r} is out of range for a unix time in seconds: {_TIME_RANGE}"
            )
        return round(seconds * 1000)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name}={text!r} is not {_TIME_FORMS}") from None
    if moment.tzinfo is None:
        raise QueryError(f"{name}={text!r} needs a time zone (e.g. Z or +02:00)")
    # Subtracting aware datetimes never overflows, unlike astimezone() near year 1 or 9999.
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return _within_range((micros + 500) // 1000, name, text)


def parse_range(
    start: str | None, end: str | None, *, now_ms: int, default_ms: int, max_range_ms: int
) -> tuple[int, int]:
    """``start`` and ``end`` (absent: ``now`` and ``default_ms`` before ``end``), checked to be
    in order and no further apart than ``max_range_ms``."""
    end_ms = parse_time_ms(end, "end", now_ms) if end else now_ms
    if start:
        start_ms = parse_time_ms(start, "start", now_ms)
    else:
        start_ms = max(end_ms - default_ms, MIN_TIME_MS)
    if start_ms > end_ms:
        raise QueryError("start must not be after end")
    if end_ms - start_ms > max_range_ms:
        raise QueryError(
            f"the range is longer than the maximum of {max_range_ms // DAY_MS} days "
            f"({max_range_ms // 1000}s): narrow it"
        )
    return start_ms, end_ms


def parse_step_ms(text: str | None, *, max_ms: int = 400 * DAY_MS) -> int | None:
    """``30s``, ``5m``, ``1h``, ``1d`` or seconds (``300``); at least one second and at most
    ``max_ms`` (the longest range a query may ask for)."""
    if text is None or text == "":
        return None
    value = text.strip()
    days = _DAYS.fullmatch(value)
    if days:
        step = float(days.group(1)) * DAY_MS  # float() of ASCII digits: finite or inf
    else:
        try:
            step = units.parse_interval_seconds(value) * 1000
        except QuantityError as exc:
            raise QueryError(f"step={text!r}: {exc}") from None
        except OverflowError:
            step = math.inf
    if not step <= max_ms:
        raise QueryError(
            f"step={text!r} is longer than the longest range a query may cover "
            f"({max_ms // 1000}s): use a shorter step"
        )
    step_ms = round(step)
    if step_ms < MIN_STEP_MS:
        raise QueryError(f"step={text!r} is shorter than 1s")
    return step_ms


def parse_selector(text: str | None) -> LabelSelector | None:
    """A Kubernetes label selector (``app=web,tier!=db``); blank means none."""
    if text is None or text.strip() == "":
        return None
    return parse_label_selector(text)


def parse_group_by(text: str) -> str:
    """``namespace``, ``pod``, ``container``, ``node`` or ``label:<key>`` with a valid
    Kubernetes label key (the same rule as a selector's keys)."""
    if text in ("namespace", "pod", "container", "node"):
        return text
    key = text.removeprefix("label:")
    if key != text and key.strip() == key and key:
        try:
            selector = parse_label_selector(key)
        except QueryError as exc:
            raise QueryError(f"group_by={text!r}: {exc}") from None
        requirements = selector.requirements
        if len(requirements) == 1 and (requirements[0].key, requirements[0].operator) == (
            key,
            "exists",
        ):
            return text
    raise QueryError(f"group_by={text!r}: use namespace, pod, container, node or label:<key>")
