"""Query-parameter parsing for times: RFC 3339 or unix seconds."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from recorder.errors import QueryError


def parse_time_ms(text: str, name: str) -> int:
    """``2026-11-27T10:00:00Z`` or ``1732701600`` (``.5`` fractions allowed) to unix ms."""
    value = text.strip()
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
            f"{name}={text!r} is neither RFC 3339 (2026-11-27T10:00:00Z) nor unix seconds"
        ) from None
    if moment.tzinfo is None:
        raise QueryError(f"{name}={text!r} needs a time zone (e.g. Z or +02:00)")
    return round(moment.astimezone(UTC).timestamp() * 1000)
