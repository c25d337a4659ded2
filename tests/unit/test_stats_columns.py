"""Statistics rows added as columns make the accumulators adding them one by one makes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.domain import Agg
from recorder.stats import block, columns
from recorder.stats.block import BlockStats
from recorder.stats.buckets import Accumulator, aggregate, aggregate_many, aligned, parts_of
from recorder.stats.codec import ChunkSamples

HOUR = 3_600_000

block_values = st.lists(
    st.one_of(st.integers(0, 10**9), st.integers(2**53, 2**62)), min_size=1, max_size=8
)
rows_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 30), block_values), min_size=1, max_size=40
)


def stats_row(series: int, hour: int, values: list[int], squares: bool) -> tuple[Any, ...]:
    stamps = [hour * HOUR + i * 15_000 for i in range(len(values))]
    stats = BlockStats.of(ChunkSamples(stamps, [15_000] * len(values), values, values[::-1]))
    found = stats.to_columns()
    return (series, hour * HOUR, *(found[name] for name in columns.names(squares)))


def one_by_one(
    rows: list[tuple[Any, ...]], squares: bool, step: int
) -> dict[str, dict[tuple[int, int], Accumulator]]:
    out: dict[str, dict[tuple[int, int], Accumulator]] = {"cpu": {}, "memory": {}}
    for series, start, *values in rows:
        stats = columns.block_stats(columns.names(squares), values)
        for resource in ("cpu", "memory"):
            acc = out[resource].setdefault((series, start - start % step), Accumulator(False))
            acc.add_stats(
                stats.resource(resource),
                count=stats.count,
                first_ms=stats.first_ms,
                last_ms=stats.last_ms,
                interval_ms=stats.interval_ms,
            )
    return out


@settings(max_examples=100, deadline=None)
@given(rows_strategy, st.booleans(), st.sampled_from([HOUR, 6 * HOUR, 24 * HOUR]))
def test_columns_equal_rows_one_by_one(
    found: list[tuple[int, int, list[int]]], squares: bool, step: int
) -> None:
    seen: set[tuple[int, int]] = set()
    rows = []
    for series, hour, values in found:
        if (series, hour) not in seen:  # one chunk per series and block
            seen.add((series, hour))
            rows.append(stats_row(series, hour, values, squares))
    units = np.array([row[0] for row in rows], np.int64)
    starts = np.array([row[1] for row in rows], np.int64)
    got = columns.accumulate(
        rows, columns.names(squares), units, aligned(step).many(starts), ["cpu", "memory"]
    )
    want = one_by_one(rows, squares, step)
    for resource in ("cpu", "memory"):
        assert got[resource].keys() == want[resource].keys()
        for key, acc in want[resource].items():
            if not squares:
                acc.squares = None
            assert got[resource][key] == acc


def test_sums_past_64_bits_are_exact() -> None:
    big = 2**62
    rows = [stats_row(1, hour, [big, big], True) for hour in range(4)]
    units = np.ones(4, np.int64)
    got = columns.accumulate(rows, columns.names(True), units, np.zeros(4, np.int64), ["cpu"])[
        "cpu"
    ][(1, 0)]
    assert got.total == 8 * big
    assert got.squares == 8 * big * big


def test_names_leave_out_squares_unless_asked() -> None:
    assert "cpu_sumsq" not in columns.names(False)
    assert set(columns.names(True)) == set(block.COLUMNS)


@settings(max_examples=60, deadline=None)
@given(rows_strategy, st.sampled_from(list(Agg)), st.sampled_from(["cpu", "memory"]))
def test_a_read_of_an_aggregations_parts_answers_it_as_a_whole_read_does(
    found: list[tuple[int, int, list[int]]], agg: Agg, resource: str
) -> None:
    rows = list({(s, h): stats_row(s, h, v, True) for s, h, v in found}.values())
    full = columns.names(True)
    part = columns.names(agg is Agg.STDDEV, [resource], parts_of(agg))
    assert set(part) <= set(full)
    narrow = [(r[0], r[1], *(r[2 + full.index(name)] for name in part)) for r in rows]
    units = np.array([row[0] for row in rows], np.int64)
    buckets = np.zeros(len(rows), np.int64)
    whole = columns.accumulate(rows, full, units, buckets, [resource])[resource]
    got = columns.accumulate(narrow, part, units, buckets, [resource])[resource]
    assert got.keys() == whole.keys()
    keys = sorted(whole)
    want = aggregate_many([whole[k] for k in keys], agg)
    assert aggregate_many([got[k] for k in keys], agg) == want
    assert [aggregate(got[k], agg) for k in keys] == want

    # A held block read in part adds up as the whole read does, for that aggregation.
    def accumulated(names: Any, row: Any) -> Accumulator:
        stats = columns.block_stats(names, row[2:])
        acc = Accumulator(False)
        acc.add_stats(
            stats.resource(resource),
            count=stats.count,
            first_ms=stats.first_ms,
            last_ms=stats.last_ms,
            interval_ms=stats.interval_ms,
        )
        return acc

    assert aggregate(accumulated(part, narrow[0]), agg) == aggregate(
        accumulated(full, rows[0]), agg
    )


def test_names_of_parts_read_only_those() -> None:
    assert columns.names(False, ["cpu"], ("sum",)) == (*block.BLOCK_FIELDS, "cpu_sum")
    assert columns.names(False, ["memory"], ()) == block.BLOCK_FIELDS


@settings(max_examples=80, deadline=None)
@given(
    rows_strategy,
    st.sampled_from([Agg.AVG, Agg.MIN, Agg.MAX, Agg.SUM, Agg.COUNT, Agg.LAST]),
    st.sampled_from(["cpu", "memory"]),
    st.sampled_from([HOUR, 6 * HOUR, 24 * HOUR]),
)
def test_aggregated_equals_the_aggregate_of_each_accumulator(
    found: list[tuple[int, int, list[int]]], agg: Agg, resource: str, step: int
) -> None:
    rows = list({(s, h): stats_row(s, h, v, False) for s, h, v in found}.values())
    names = columns.names(False)
    units = np.array([row[0] for row in rows], np.int64)
    buckets = aligned(step).many(np.array([row[1] for row in rows], np.int64))
    accs = columns.accumulate(rows, names, units, buckets, [resource])[resource]
    keys, values = columns.aggregated(rows, names, units, buckets, resource, agg)
    assert keys == sorted(accs)
    want = [aggregate(accs[key], agg) for key in keys]
    assert values == want
    assert [type(v) for v in values] == [type(v) for v in want]


def test_aggregated_leaves_percentiles_and_stddev_to_accumulators() -> None:
    for agg in (Agg.P95, Agg.STDDEV):
        with pytest.raises(ValueError, match="accumulators"):
            columns.aggregated([], (), np.zeros(0, np.int64), np.zeros(0, np.int64), "cpu", agg)
    assert columns.aggregated(
        [], (), np.zeros(0, np.int64), np.zeros(0, np.int64), "cpu", Agg.AVG
    ) == ([], [])
