"""The evaluation over steps (recorder.query.promql.evaluation), on series in memory: the
closed 5-minute lookback, offset and @, step alignment, result types."""

from __future__ import annotations

import pytest

from recorder.errors import QueryError
from recorder.query.promql.evaluation import Evaluator, range_query
from recorder.query.promql.source import MemorySource
from recorder.query.promql.syntax import parse
from recorder.query.promql.values import Steps
from recorder.query.promql.wire import result_data
from tests.promql_support import instant, raw

MINUTE = 60_000
SERIES = [raw({"__name__": "m"}, [(0, 1), (MINUTE, 2), (10 * MINUTE, 3)])]


def value_at(query: str, time_ms: int) -> list[str]:
    return [r["value"][1] for r in instant(SERIES, query, time_ms)["result"]]


def test_the_lookback_holds_samples_exactly_five_minutes_old() -> None:
    assert value_at("m", 6 * MINUTE) == ["2"]  # Prometheus 2.x: [t - 5m, t]
    assert value_at("m", 6 * MINUTE + 1) == []
    assert value_at("m", 10 * MINUTE - 1) == []  # a gap: the series ends by lookback alone
    assert value_at("m", -1) == []


def test_offset_and_at_move_the_reference_time() -> None:
    assert value_at("m offset 9m", 10 * MINUTE) == ["2"]
    assert value_at("m offset -10m", 0) == ["3"]
    assert value_at("m @ 60", 10 * MINUTE) == ["2"]
    assert value_at("m @ start()", 30 * MINUTE) == []  # an instant query's start is its time


def test_a_range_query_steps_from_start_and_never_past_end() -> None:
    data = result_data(range_query(MemorySource(SERIES), "m", 0, 11 * MINUTE, 5 * MINUTE))
    assert data["result"][0]["values"] == [[0, "1"], [300, "2"], [600, "3"]]
    data = result_data(range_query(MemorySource(SERIES), "m @ end()", 0, 3 * MINUTE, MINUTE))
    assert [v for _t, v in data["result"][0]["values"]] == ["2"] * 4


def test_ranges_hold_both_ends_in_prometheus_2() -> None:
    assert value_at("count_over_time(m[1m])", MINUTE) == ["2"]
    assert value_at("count_over_time(m[1m] offset 1ms)", MINUTE) == ["1"]


def test_a_vector_holds_at_most_max_values() -> None:
    many = [raw({"__name__": "m", "i": str(i)}, [(0, i)]) for i in range(30)]
    steps = Steps.of(0, 9 * MINUTE, MINUTE)  # 10 steps
    source = MemorySource(many)
    assert len(Evaluator(source, steps, max_values=300).evaluate(parse("m")).series) == 30  # type: ignore[union-attr]
    with pytest.raises(QueryError, match="30 series x 10 steps, more than 299 values"):
        Evaluator(source, steps, max_values=299).evaluate(parse("m"))
    with pytest.raises(QueryError, match="more than 299 values"):
        Evaluator(source, steps, max_values=299).evaluate(parse("max_over_time(m[1m])"))
