"""Prometheus' JSON for query results: ``{"resultType": ..., "result": ...}``, sample values
as strings the way Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` writes them (no exponent;
``NaN``, ``+Inf``, ``-Inf``), timestamps as unix seconds."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from recorder.errors import QueryError
from recorder.query.promql.evaluation import Result
from recorder.query.promql.values import (
    Labels,
    RangeValue,
    RawSeries,
    ScalarValue,
    StepSeries,
    StringValue,
    VectorValue,
    format_value,
)
from recorder.query.promql.windows import bounds


def _seconds(ms: int) -> float | int:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def _metric(labels: Labels) -> dict[str, str]:
    return dict(labels)


def point_count(result: Result) -> int:
    """How many points (samples) the answer holds."""
    value = result.value
    if isinstance(value, VectorValue):
        return sum(int(s.present.sum()) for s in value.series)
    if isinstance(value, RangeValue):
        total = 0
        for series in value.series:
            low, high = bounds(series, value.ends_ms, value.range_ms)
            total += max(int(high[0]) - int(low[0]), 0)
        return total
    return result.steps.count


def result_data(result: Result, max_points: int | None = None) -> dict[str, Any]:
    """The ``data`` of a ``query`` or ``query_range`` answer; ``QueryError`` when it would
    hold more than ``max_points`` points."""
    if max_points is not None and (count := point_count(result)) > max_points:
        raise QueryError(
            f"the response would hold {count} points, more than {max_points}: use a larger "
            "step, a shorter range or fewer series"
        )
    value, steps = result.value, result.steps
    times = steps.times_ms.tolist()
    instant = steps.step_ms == 0
    if isinstance(value, StringValue):
        return {"resultType": "string", "result": [_seconds(times[0]), value.text]}
    if isinstance(value, ScalarValue):
        if instant:
            return {
                "resultType": "scalar",
                "result": [_seconds(times[0]), format_value(float(value.values[0]))],
            }
        points = [
            [_seconds(t), format_value(v)]
            for t, v in zip(times, value.values.tolist(), strict=True)
        ]
        return {"resultType": "matrix", "result": [{"metric": {}, "values": points}]}
    if isinstance(value, RangeValue):
        return {"resultType": "matrix", "result": _range_samples(value)}
    assert isinstance(value, VectorValue)
    if instant:
        series = value.series if result.ordered else sorted(value.series, key=_by_labels)
        return {
            "resultType": "vector",
            "result": [
                {
                    "metric": _metric(s.labels),
                    "value": [_seconds(times[0]), format_value(float(s.values[0]))],
                }
                for s in series
                if s.present[0]
            ],
        }
    out = []
    seconds = [_seconds(t) for t in times]
    for s in sorted(value.series, key=_by_labels):
        where = np.flatnonzero(s.present).tolist()
        if not where:
            continue
        values = s.values.tolist()
        out.append(
            {
                "metric": _metric(s.labels),
                "values": [[seconds[i], format_value(values[i])] for i in where],
            }
        )
    return {"resultType": "matrix", "result": out}


def _by_labels(series: StepSeries | RawSeries) -> Labels:
    return series.labels


def _range_samples(value: RangeValue) -> list[dict[str, Any]]:
    """A range selector at the top of an instant query: its samples in the window, at their
    own timestamps."""
    out = []
    for series in sorted(value.series, key=_by_labels):
        low, high = bounds(series, value.ends_ms, value.range_ms)
        a, b = int(low[0]), int(high[0])
        if b <= a:
            continue
        stamps = series.timestamps_ms[a:b].tolist()
        values = series.values[a:b].tolist()
        out.append(
            {
                "metric": _metric(series.labels),
                "values": [
                    [_seconds(t), format_value(v)] for t, v in zip(stamps, values, strict=True)
                ],
            }
        )
    return out


def dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
