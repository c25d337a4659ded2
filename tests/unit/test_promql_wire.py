"""Prometheus' JSON (recorder.query.promql.wire): values as Go formats them, result types."""

from __future__ import annotations

import math

import pytest

from recorder.errors import QueryError
from recorder.query.promql.evaluation import instant_query, range_query
from recorder.query.promql.source import MemorySource
from recorder.query.promql.values import format_value
from recorder.query.promql.wire import result_data
from tests.promql_support import instant, raw


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "1"), (0.5, "0.5"), (-0.0, "-0"), (1e-7, "0.0000001"), (1e21, "1000000000000000000000"),
     (1.5e16, "15000000000000000"), (0.1 + 0.2, "0.30000000000000004"), (math.nan, "NaN"),
     (math.inf, "+Inf"), (-math.inf, "-Inf"), (487558164 / 1e9, "0.487558164")],
)  # fmt: skip
def test_values_are_formatted_as_go_without_exponent(value: float, text: str) -> None:
    assert format_value(value) == text


def test_result_types() -> None:
    series = [raw({"__name__": "m"}, [(1000, 1), (1500, 2)])]
    assert instant(series, "1", 2000) == {"resultType": "scalar", "result": [2, "1"]}
    assert instant(series, '"s"', 2000) == {"resultType": "string", "result": [2, "s"]}
    assert instant(series, "m", 2000)["result"] == [
        {"metric": {"__name__": "m"}, "value": [2, "2"]}
    ]
    assert instant(series, "m[1s]", 2000)["result"] == [
        {"metric": {"__name__": "m"}, "values": [[1, "1"], [1.5, "2"]]}
    ]
    ranged = result_data(range_query(MemorySource(series), "2 * 3", 1000, 2000, 500))
    assert ranged == {
        "resultType": "matrix",
        "result": [{"metric": {}, "values": [[1, "6"], [1.5, "6"], [2, "6"]]}],
    }


def test_a_response_holds_at_most_max_points() -> None:
    series = [raw({"__name__": "m", "i": str(i)}, [(1000, 1), (1500, 2)]) for i in range(3)]
    ranged = range_query(MemorySource(series), "m", 1000, 2000, 500)  # 3 series x 3 steps
    assert len(result_data(ranged, max_points=9)["result"]) == 3
    with pytest.raises(QueryError, match="9 points, more than 8"):
        result_data(ranged, max_points=8)
    matrix = instant_query(MemorySource(series), "m[1s]", 2000)  # 3 series x 2 samples
    with pytest.raises(QueryError, match="6 points, more than 5"):
        result_data(matrix, max_points=5)
