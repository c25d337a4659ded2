"""Parsing and validation of history query parameters (pure)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from recorder import units
from recorder.errors import QuantityError, QueryError
from recorder.selectors import LabelSelector, parse_label_selector

_RELATIVE = re.compile(r"-(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MIN_STEP_MS = 1000


def parse_time_ms(text: str, name: str, now_ms: int) -> int:
    """RFC 3339 (``2026-11-27T10:00:00Z``), unix seconds (``1732701600.5``), ``now``, or a time
    relative to now (``-24h``, ``-7d``, ``-90m``, ``-1w``) to unix milliseconds."""
    value = text.strip()
    if value == "now":
        return now_ms
    relative = _RELATIVE.fullmatch(value)
    if relative:
        return now_ms - round(float(relative.group(1)) * _UNIT_MS[relative.group(2)])
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
            raise QueryError(f"{name}={text!r} is out of range for a unix time in seconds")
        return round(seconds * 1000)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"{name}={text!r} is not RFC 3339 (2026-11-27T10:00:00Z), unix seconds, now, "
            "or relative (-24h, -7d)"
        ) from None
    if moment.tzinfo is None:
        raise QueryError(f"{name}={text!r} needs a time zone (e.g. Z or +02:00)")
    return round(moment.astimezone(UTC).timestamp() * 1000)


def parse_range(
    start: str | None, end: str | None, *, now_ms: int, default_ms: int, max_range_ms: int
) -> tuple[int, int]:
    end_ms = parse_time_ms(end, "end", now_ms) if end else now_ms
    start_ms = parse_time_ms(start, "start", now_ms) if start else end_ms - default_ms
    if start_ms > end_ms:
        raise QueryError("start must not be after end")
    if end_ms - start_ms > max_range_ms:
        raise QueryError(
            f"the range is longer than the maximum of {max_range_ms // 86_400_000} days "
            f"({max_range_ms // 1000}s): narrow it"
        )
    return start_ms, end_ms


def parse_step_ms(text: str | None) -> int | None:
    """``30s``, ``5m``, ``1h``, ``1d`` or seconds (``300``); at least one second."""
    if text is None or text == "":
        return None
    value = text.strip()
    try:
        if value.endswith("d") and value[:-1].isdigit():
            seconds = int(value[:-1]) * 86_400.0
        else:
            seconds = units.parse_interval_seconds(value)
    except QuantityError as exc:
        raise QueryError(f"step={text!r}: {exc}") from None
    step_ms = round(seconds * 1000)
    if step_ms < MIN_STEP_MS:
        raise QueryError(f"step={text!r} is shorter than 1s")
    return step_ms


def parse_selector(text: str | None) -> LabelSelector | None:
    if text is None or text.strip() == "":
        return None
    return parse_label_selector(text)


def parse_group_by(text: str) -> str:
    if text in ("namespace", "pod", "container", "node"):
        return text
    if text.startswith("label:") and len(text) > len("label:"):
        return text
    raise QueryError(f"group_by={text!r}: use namespace, pod, container, node or label:<key>")
