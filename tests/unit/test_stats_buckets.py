"""Accumulators: raw samples and whole blocks' statistics give the same aggregations."""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.domain import Agg
from recorder.errors import QueryError
from recorder.stats import block
from recorder.stats.block import BlockStats
from recorder.stats.buckets import (
    Accumulator,
    _bucketed_one_by_one,
    aggregate,
    aligned,
    bucketed,
    parts_of,
    whole,
)
from recorder.stats.codec import ChunkSamples
from recorder.stats.sketch import RELATIVE_ACCURACY, exact_quantile

values = st.lists(st.integers(0, 2**50), min_size=1, max_size=60)


def run(cpu: list[int], offset: int = 0) -> ChunkSamples:
    stamps = [offset + i * 15_000 for i in range(len(cpu))]
    return ChunkSamples(stamps, [15_000] * len(cpu), cpu, cpu)


@given(st.lists(values, min_size=1, max_size=4))
def test_statistics_and_samples_agree_on_every_aggregation(parts: list[list[int]]) -> None:
    exact = Accumulator(exact=True)
    from_stats = Accumulator(exact=False)
    everything: list[int] = []
    for i, cpu in enumerate(parts):
        samples = run(cpu, offset=i * 10**9)
        exact.add_values(samples.timestamps_ms, cpu)
        stats = BlockStats.of(samples)
        from_stats.add_stats(
            stats.cpu,
            count=stats.count,
            first_ms=stats.first_ms,
            last_ms=stats.last_ms,
            interval_ms=stats.interval_ms,
        )
        everything += cpu
    for agg in (Agg.AVG, Agg.MIN, Agg.MAX, Agg.SUM, Agg.COUNT, Agg.LAST):
        assert aggregate(exact, agg) == aggregate(from_stats, agg)
    assert aggregate(exact, Agg.AVG) == Fraction(sum(everything), len(everything))
    stddev = statistics.pstdev(everything)
    assert aggregate(exact, Agg.STDDEV) == pytest.approx(stddev, rel=1e-9, abs=1e-6)
    assert aggregate(from_stats, Agg.STDDEV) == aggregate(exact, Agg.STDDEV)
    for agg in (Agg.P50, Agg.P75, Agg.P90, Agg.P95, Agg.P99):
        assert agg.quantile is not None
        reference = exact_quantile(everything, agg.quantile)
        assert aggregate(exact, agg) == reference
        assert math.isclose(aggregate(from_stats, agg), reference, rel_tol=RELATIVE_ACCURACY) or (
            reference == 0
        )


def test_stddev_of_blocks_without_sums_of_squares_is_a_clear_error() -> None:
    stats = BlockStats.of(run([1, 2, 3]))
    acc = Accumulator(exact=False)
    acc.add_stats(
        type(stats.cpu)(stats.cpu.total, None, 1, 3, 3, stats.cpu.sketch),
        count=3,
        first_ms=0,
        last_ms=30_000,
        interval_ms=15_000,
    )
    assert aggregate(acc, Agg.MAX) == 3
    with pytest.raises(QueryError, match="sums of squares"):
        aggregate(acc, Agg.STDDEV)


def test_bucket_functions() -> None:
    assert aligned(60_000)(125_000) == 120_000
    assert whole(7)(10**12) == 7


def test_merged_sketch_holds_every_value_exact_or_not() -> None:
    for exact in (True, False):
        acc = Accumulator(exact=exact)
        acc.add_values([1, 2, 3], [10, 20, 10**6])
        sketch = acc.merged_sketch()
        assert sketch.count == 3
        assert math.isclose(sketch.quantile(1.0), 10**6, rel_tol=RELATIVE_ACCURACY)


def test_every_aggregation_says_what_it_reads() -> None:
    for agg in Agg:
        assert set(parts_of(agg)) <= set(block.RESOURCE_PARTS)
    assert parts_of(Agg.P95) == ("sketch",)
    assert parts_of(Agg.STDDEV) == ("sum", "sumsq")


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Time-ordered distinct timestamps (before and after the epoch) and values from small
    to 2**63 - 1, negative ones too, and now and then one of 64 bits or more."""
    stamps = sorted(draw(st.sets(st.integers(-(10**7), 10**7), max_size=60)))
    value = st.one_of(
        st.integers(0, 10**9),
        st.integers(2**53 - 5, 2**53 + 5),
        st.integers(2**62, 2**63 - 1),
        st.integers(-(2**63), -1),
    )
    if draw(st.booleans()):
        value = st.one_of(value, st.just(2**63), st.integers(2**63, 2**70))
    return stamps, draw(st.lists(value, min_size=len(stamps), max_size=len(stamps)))


@given(runs(), st.sampled_from([1, 7, 1000, 60_000]), st.sampled_from(list(Agg)))
def test_bucketed_equals_one_exact_accumulator_per_bucket(
    run: tuple[list[int], list[int]], step: int, agg: Agg
) -> None:
    stamps, values = run
    if agg is Agg.STDDEV and any(v < 0 for v in values):
        values = [abs(v) for v in values]
    want = _bucketed_one_by_one(stamps, values, step, agg)
    got = bucketed(stamps, values, step, agg)
    assert got == want
    assert [type(v) for _b, v in got] == [type(v) for _b, v in want]


def test_bucketed_sums_past_64_bits_exactly() -> None:
    big = 2**63 - 1
    assert bucketed([0, 1, 2], [big, big, big], 10, Agg.SUM) == [(0, 3 * big)]
    assert bucketed([0, 1, 2], [big, big, 1], 10, Agg.AVG) == [(0, Fraction(2 * big + 1, 3))]
    assert bucketed([], [], 10, Agg.AVG) == []


def test_last_of_samples_before_1970() -> None:
    """A fresh accumulator's last_ms (-1) is no timestamp: a sample at -1 ms is its last."""
    acc = Accumulator(exact=True)
    acc.add_values([-5, -1], [7, 9])
    assert (acc.last_ms, aggregate(acc, Agg.LAST)) == (-1, 9)
    assert bucketed([-1, 0], [1, 0], 1, Agg.LAST) == [(-1, 1), (0, 0)]
