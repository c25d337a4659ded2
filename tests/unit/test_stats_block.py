"""The one block-statistics record: taken from samples, merged, stored and read back."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.stats import block
from recorder.stats.block import BlockStats, smallest_gap, squares_from_bytes, squares_to_bytes
from recorder.stats.codec import ChunkSamples
from recorder.stats.sketch import RELATIVE_ACCURACY, QuantileSketch, exact_quantile

values = st.lists(st.integers(0, 2**62), min_size=1, max_size=80)


def samples_of(cpu: list[int], memory: list[int] | None = None, step: int = 15_000) -> ChunkSamples:
    memory = memory if memory is not None else [v // 3 for v in cpu]
    return ChunkSamples([1_000 + i * step for i in range(len(cpu))], [step] * len(cpu), cpu, memory)


@given(values)
def test_statistics_of_samples_are_exact(cpu: list[int]) -> None:
    stats = BlockStats.of(samples_of(cpu))
    assert (stats.count, stats.first_ms, stats.last_ms) == (
        len(cpu),
        1_000,
        1_000 + (len(cpu) - 1) * 15_000,
    )
    assert stats.interval_ms == (15_000 if len(cpu) > 1 else 0)
    part = stats.cpu
    assert (part.total, part.minimum, part.maximum, part.last) == (
        sum(cpu),
        min(cpu),
        max(cpu),
        cpu[-1],
    )
    assert part.squares == sum(v * v for v in cpu)


@given(st.lists(values, min_size=1, max_size=5))
def test_merging_blocks_equals_the_statistics_of_all_their_samples(parts: list[list[int]]) -> None:
    blocks = []
    everything: list[int] = []
    for i, cpu in enumerate(parts):
        run = samples_of(cpu)
        shifted = ChunkSamples(
            [t + i * 10**9 for t in run.timestamps_ms],
            run.windows_ms,
            run.cpu_nanocores,
            run.memory_bytes,
        )
        blocks.append(BlockStats.of(shifted))
        everything += cpu
    merged = block.merge(reversed(blocks))  # any order
    assert merged.count == len(everything)
    assert merged.cpu.total == sum(everything)
    assert merged.cpu.squares == sum(v * v for v in everything)
    assert (merged.cpu.minimum, merged.cpu.maximum) == (min(everything), max(everything))
    assert merged.cpu.last == parts[-1][-1]
    sketch = QuantileSketch.from_bytes(merged.cpu.sketch)
    for q in (0.5, 0.75, 0.95):
        exact = exact_quantile(everything, q)
        assert math.isclose(sketch.quantile(q), exact, rel_tol=RELATIVE_ACCURACY) or exact == 0


def test_columns_round_trip_and_name_every_stored_column() -> None:
    stats = BlockStats.of(samples_of([5, 9, 2**62], [1, 2, 3]))
    columns = stats.to_columns()
    assert tuple(columns) == block.COLUMNS
    assert BlockStats.from_values([columns[name] for name in block.COLUMNS]) == stats


def test_a_block_without_sums_of_squares_reads_back_as_unknown() -> None:
    columns = BlockStats.of(samples_of([1, 2])).to_columns()
    columns["cpu_sumsq"] = None
    assert BlockStats.from_values([columns[n] for n in block.COLUMNS]).cpu.squares is None
    merged = block.merge(
        [
            BlockStats.from_values([columns[n] for n in block.COLUMNS]),
            BlockStats.of(samples_of([3])),
        ]
    )
    assert merged.cpu.squares is None


@given(st.integers(0, 2**200))
def test_sums_of_squares_outgrow_64_bits_and_round_trip(value: int) -> None:
    assert squares_from_bytes(squares_to_bytes(value)) == value
    assert squares_to_bytes(None) is None


def test_population_stddev_from_the_record_is_exact() -> None:
    cpu = [3, 7, 7, 19, 2**40]
    part = BlockStats.of(samples_of(cpu)).cpu
    n = len(cpu)
    assert part.squares is not None
    variance = (n * part.squares - part.total**2) / n**2
    assert math.sqrt(variance) == pytest.approx(statistics.pstdev(cpu), rel=1e-12)


def test_smallest_gap() -> None:
    assert smallest_gap([]) == 0
    assert smallest_gap([5]) == 0
    assert smallest_gap([0, 10, 15, 40]) == 5


def test_merge_needs_a_block() -> None:
    with pytest.raises(ValueError):
        block.merge([])
