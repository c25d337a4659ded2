"""Prometheus' grammar of the API's times and durations (recorder.query.promql.timing)."""

from __future__ import annotations

import pytest

from recorder.errors import QueryError
from recorder.query.promql.timing import parse_duration_ms, parse_time_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1714557600", 1_714_557_600_000),
        ("1714557600.123", 1_714_557_600_123),
        ("1714557600.1235", 1_714_557_600_124),  # rounded to the millisecond, half away
        ("-1.5", -1500),
        ("1e3", 1_000_000),
        ("2024-05-01T10:00:00Z", 1_714_557_600_000),
        ("2024-05-01T10:00:00.123456789Z", 1_714_557_600_123),
        ("2024-05-01T12:00:00+02:00", 1_714_557_600_000),
    ],
)
def test_times_are_unix_seconds_or_rfc3339(text: str, ms: int) -> None:
    assert parse_time_ms(text, "time") == ms


@pytest.mark.parametrize(
    "text", ["", "now", "nan", "inf", "1_0", "2024-13-01T00:00:00Z", "1e300", "x" * 1000]
)
def test_other_times_are_bad_data_naming_the_parameter(text: str) -> None:
    with pytest.raises(QueryError, match='invalid parameter "start": cannot parse'):
        parse_time_ms(text, "start")


@pytest.mark.parametrize(
    ("text", "ms"),
    [("15", 15_000), ("0.5", 500), ("15s", 15_000), ("1m30s", 90_000), ("1h", 3_600_000),
     ("100ms", 100), ("1d", 86_400_000), ("0.0001", 0)],
)  # fmt: skip
def test_durations_are_seconds_or_prometheus_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text, "step") == ms


@pytest.mark.parametrize("text", ["", "1.5m", "m", "1e30", "-", "15 s", "1h1h"])
def test_other_durations_are_bad_data(text: str) -> None:
    with pytest.raises(QueryError, match='invalid parameter "step"'):
        parse_duration_ms(text, "step")
