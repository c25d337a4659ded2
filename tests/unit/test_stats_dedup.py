"""The one deduplication rule: only exact (series, timestamp) duplicates collapse, to a winner
that does not depend on arrival order."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from recorder.stats import dedup
from recorder.stats.codec import ChunkSamples

rows = st.lists(
    st.tuples(
        st.integers(0, 50),  # few timestamps: many duplicates
        st.integers(0, 60_000),
        st.integers(0, 2**40),
        st.integers(0, 2**40),
    ),
    max_size=60,
)


def reference(found: list[dedup.Row]) -> list[dedup.Row]:
    """Per timestamp, the sample with the greatest (cpu, memory, window)."""
    best: dict[int, dedup.Row] = {}
    for row in found:
        held = best.get(row[0])
        if held is None or (row[2], row[3], row[1]) > (held[2], held[3], held[1]):
            best[row[0]] = row
    return [best[ts] for ts in sorted(best)]


@given(rows, st.randoms(use_true_random=False))
def test_collapse_keeps_one_winner_per_timestamp_whatever_the_order(
    found: list[dedup.Row], shuffle: random.Random
) -> None:
    collapsed, dropped = dedup.collapse(found)
    assert collapsed == reference(found)
    assert dropped == len(found) - len(collapsed)
    shuffled = list(found)
    shuffle.shuffle(shuffled)
    assert dedup.collapse(shuffled)[0] == collapsed


@given(rows, rows)
def test_merge_of_a_stored_chunk_and_late_rows_is_order_free(
    stored: list[dedup.Row], late: list[dedup.Row]
) -> None:
    chunk = dedup.columns_of(dedup.collapse(stored)[0]) if stored else None
    merged, _ = dedup.merge(chunk, late)
    assert dedup.rows_of(merged) == reference(stored + late)
    # The other way round: the late rows were compacted first, the stored ones came late.
    other = dedup.columns_of(dedup.collapse(late)[0]) if late else None
    assert dedup.merge(other, stored)[0] == merged


def test_an_older_sample_is_kept_and_an_equal_one_is_dropped() -> None:
    collapsed, dropped = dedup.collapse([(2_000, 1, 5, 5), (1_000, 1, 7, 7), (2_000, 1, 5, 5)])
    assert collapsed == [(1_000, 1, 7, 7), (2_000, 1, 5, 5)]
    assert dropped == 1


def test_the_greater_cpu_then_memory_then_window_wins() -> None:
    assert dedup.preferred((1, 10, 5, 1), (1, 99, 4, 9)) == (1, 10, 5, 1)
    assert dedup.preferred((1, 10, 5, 1), (1, 9, 5, 2)) == (1, 9, 5, 2)
    assert dedup.preferred((1, 10, 5, 2), (1, 11, 5, 2)) == (1, 11, 5, 2)
    assert dedup.preferred((1, 10, 5, 2), (1, 10, 5, 2)) == (1, 10, 5, 2)


@given(st.lists(rows, max_size=4))
def test_sum_runs_adds_every_series_at_each_instant(parts: list[list[dedup.Row]]) -> None:
    runs = [dedup.columns_of(dedup.collapse(p)[0]) for p in parts]
    total = dedup.sum_runs(runs)
    expected_cpu: dict[int, int] = {}
    expected_memory: dict[int, int] = {}
    expected_window: dict[int, int] = {}
    for run in runs:
        for ts, window, cpu, memory in dedup.rows_of(run):
            expected_cpu[ts] = expected_cpu.get(ts, 0) + cpu
            expected_memory[ts] = expected_memory.get(ts, 0) + memory
            expected_window[ts] = max(expected_window.get(ts, 0), window)
    assert total.timestamps_ms == sorted(expected_cpu)
    assert total.cpu_nanocores == [expected_cpu[t] for t in total.timestamps_ms]
    assert total.memory_bytes == [expected_memory[t] for t in total.timestamps_ms]
    assert total.windows_ms == [expected_window[t] for t in total.timestamps_ms]


def test_sum_of_no_runs_is_empty() -> None:
    assert dedup.sum_runs([]) == ChunkSamples([], [], [], [])


@given(rows, st.integers(-5, 55), st.integers(-5, 55))
def test_cut_keeps_exactly_the_samples_in_the_range(found: list[dedup.Row], a: int, b: int) -> None:
    run = dedup.columns_of(dedup.collapse(found)[0])
    low, high = min(a, b), max(a, b)
    inside = dedup.cut(run, low, high)
    assert dedup.rows_of(inside) == [r for r in dedup.rows_of(run) if low <= r[0] <= high]


@given(st.lists(rows, max_size=4))
def test_concat_of_disjoint_runs_equals_collapsing_them(parts: list[list[dedup.Row]]) -> None:
    runs = []
    for i, part in enumerate(parts):  # blocks of 100 ms: distinct, in order
        shifted = [(ts + 100 * i, w, c, m) for ts, w, c, m in part]
        runs.append(dedup.columns_of(dedup.collapse(shifted)[0]))
    everything = [r for run in runs for r in dedup.rows_of(run)]
    if runs:
        assert dedup.rows_of(dedup.concat(runs)) == dedup.collapse(everything)[0]
