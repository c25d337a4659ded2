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
from recorder.stats.buckets import Accumulator, aggregate, aligned, parts_of, whole
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
