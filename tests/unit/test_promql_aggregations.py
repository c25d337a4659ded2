"""Aggregations (recorder.query.promql.aggregations): grouping, NaN and infinities, topk and
bottomk's order and their int64 parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recorder.query.promql.aggregations import column_quantiles
from recorder.query.promql.failures import ExecutionError
from tests.promql_support import instant, raw

T = 1_000_000
SERIES = [
    raw({"__name__": "m", "ns": "a", "pod": "p1"}, [(T, 1)]),
    raw({"__name__": "m", "ns": "a", "pod": "p2"}, [(T, 10)]),
    raw({"__name__": "m", "ns": "b", "pod": "p3"}, [(T, 4)]),
    raw({"__name__": "n", "ns": "b", "pod": "p3"}, [(T, 7)]),
]


def values(query: str) -> list[tuple[dict[str, str], str]]:
    return [(r["metric"], r["value"][1]) for r in instant(SERIES, query, T)["result"]]


def test_by_and_without() -> None:
    assert values("sum by (ns) (m)") == [({"ns": "a"}, "11"), ({"ns": "b"}, "4")]
    assert values("sum without (pod) ({ns=~'.+'})") == [({"ns": "a"}, "11"), ({"ns": "b"}, "11")]
    assert values("count by (__name__) ({ns='b'})") == [
        ({"__name__": "m"}, "1"),
        ({"__name__": "n"}, "1"),
    ]


def test_topk_and_bottomk_keep_their_labels_in_prometheus_order() -> None:
    assert values("topk(2, m)") == [
        ({"__name__": "m", "ns": "a", "pod": "p2"}, "10"),
        ({"__name__": "m", "ns": "b", "pod": "p3"}, "4"),
    ]
    assert [v for _m, v in values("bottomk by (ns) (1, m)")] == ["1", "4"]
    assert values("topk(0, m)") == []


def test_topk_with_a_nan_parameter_fails_as_prometheus_does() -> None:
    with pytest.raises(ExecutionError, match="Scalar value NaN overflows int64"):
        instant(SERIES, "topk(scalar(m), m)", T)


def test_avg_min_max_with_nan_and_infinities() -> None:
    assert values("avg(m / 0)") == [({}, "+Inf")]
    assert values("min(m - m / 0)") == [({}, "-Inf")]
    assert values("max(m * 0 / 0)") == [({}, "NaN")]
    assert values("max((m - 1) / 0)") == [({}, "+Inf")]  # NaN (0/0) skipped, +Inf wins


def test_quantile_of_columns_is_prometheus_quantile() -> None:
    columns = np.array([[1.0, 5.0, np.nan], [3.0, 0.0, 2.0], [2.0, 0.0, 9.0]])
    present = np.array([[True, True, True], [True, False, True], [True, False, False]])
    got = column_quantiles(columns, present, np.array([0.5, 0.5, 0.0]))
    assert got[0] == 2.0 and got[1] == 5.0
    assert math.isnan(got[2])  # NaN sorts first
    assert column_quantiles(columns, present, np.array([1.5, -1.0, np.nan])).tolist()[:2] == [
        math.inf,
        -math.inf,
    ]
