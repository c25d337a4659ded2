"""The *_over_time windows (recorder.query.promql.windows): closed at both ends, exact integer
sums, sparse-table extremes equal to brute force."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from recorder.query.promql.values import RangeValue
from recorder.query.promql.windows import (
    bounds,
    over_time,
    quantile,
    window_extremes,
    window_quantiles,
)
from tests.promql_support import raw


def test_a_window_holds_both_of_its_ends() -> None:
    series = raw({"__name__": "m"}, [(0, 1), (60_000, 2), (120_000, 3)])
    low, high = bounds(series, np.array([120_000], np.int64), 120_000)
    assert (int(low[0]), int(high[0])) == (0, 3)


def test_sums_are_exact_and_names_dropped_except_by_last_over_time() -> None:
    series = raw({"__name__": "m", "a": "1"}, [(0, 1), (1, 2**53), (2, 1)], scale=1e9)
    matrix = RangeValue((series,), 10, np.array([2], np.int64))
    (summed,) = over_time("sum_over_time", matrix)
    assert summed.values[0] == (2**53 + 2) / 1e9 and summed.labels == (("a", "1"),)
    (last,) = over_time("last_over_time", matrix)
    assert last.labels == (("__name__", "m"), ("a", "1"))
    big = raw({"__name__": "m"}, [(0, 2**62), (1, 2**62)])  # past int64 sums: fsum
    (total,) = over_time("sum_over_time", RangeValue((big,), 10, np.array([1], np.int64)))
    assert total.values[0] == float(2**63)


@given(
    st.lists(st.integers(-1000, 1000), min_size=1, max_size=60),
    st.lists(st.tuples(st.integers(0, 59), st.integers(1, 60)), min_size=1, max_size=20),
)
def test_extremes_equal_brute_force(values: list[int], windows: list[tuple[int, int]]) -> None:
    data = np.array(values, np.float64)
    spans = [(a, min(a + n, len(values))) for a, n in windows if a < len(values)]
    if not spans:
        return
    low = np.array([a for a, _b in spans], np.int64)
    high = np.array([b for _a, b in spans], np.int64)
    assert window_extremes(data, low, high, np.minimum).tolist() == [
        min(values[a:b]) for a, b in spans
    ]
    assert window_extremes(data, low, high, np.maximum).tolist() == [
        max(values[a:b]) for a, b in spans
    ]


def test_quantile_interpolates_between_ranks() -> None:
    assert quantile(0.5, np.array([4.0, 1.0, 2.0, 3.0])) == 2.5
    assert quantile(2, np.array([1.0])) == float("inf")


@given(
    st.lists(st.integers(-1000, 1000), min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 39), st.integers(1, 40)), min_size=1, max_size=15),
    st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, -0.5, 1.5]),
)
def test_window_quantiles_equal_quantile_of_each_window(
    values: list[int], windows: list[tuple[int, int]], q: float
) -> None:
    data = np.array(values, np.float64)
    spans = [(a, min(a + n, len(values))) for a, n in windows if a < len(values)]
    if not spans:
        return
    low = np.array([a for a, _b in spans], np.int64)
    high = np.array([b for _a, b in spans], np.int64)
    got = window_quantiles(data, low, high, np.full(len(spans), q))
    assert got.tolist() == [quantile(q, data[a:b]) for a, b in spans]
