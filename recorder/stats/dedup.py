"""The one deduplication rule, used by the writer, the compactor and every read.

Only an exact (series, timestamp) duplicate collapses. Of two samples of one series with the
same timestamp, the one with the greater ``(cpu_nanocores, memory_bytes, window_ms)`` wins (the
tuples compared in that order): the winner depends only on the values, never on which sample
arrived first, was written by which replica, or sits in the head or in a chunk, so every read
returns the same value before and after compaction. Greater is the conservative choice for a
tool that sizes workloads: a duplicate never hides a peak. Samples at different timestamps are
all kept, however old.

A sample here is a ``Row``: ``(timestamp_ms, window_ms, cpu_nanocores, memory_bytes)``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence

from recorder.stats.codec import ChunkSamples

Row = tuple[int, int, int, int]
"""(timestamp_ms, window_ms, cpu_nanocores, memory_bytes)"""


def rank(row: Row) -> tuple[int, int, int]:
    """What decides between two samples with the same timestamp: greater wins."""
    return row[2], row[3], row[1]


def preferred(a: Row, b: Row) -> Row:
    """The winner of two samples with the same timestamp (``a`` when they are equal)."""
    return b if rank(b) > rank(a) else a


def collapse(rows: Iterable[Row]) -> tuple[list[Row], int]:
    """``rows`` of one series in time order with one sample per timestamp (each the winner of
    its duplicates), and how many duplicates were dropped."""
    by_ts: dict[int, Row] = {}
    dropped = 0
    for row in rows:
        held = by_ts.get(row[0])
        if held is None:
            by_ts[row[0]] = row
        else:
            dropped += 1
            by_ts[row[0]] = preferred(held, row)
    return [by_ts[ts] for ts in sorted(by_ts)], dropped


def rows_of(samples: ChunkSamples) -> list[Row]:
    return list(
        zip(
            samples.timestamps_ms,
            samples.windows_ms,
            samples.cpu_nanocores,
            samples.memory_bytes,
            strict=True,
        )
    )


def columns_of(rows: list[Row]) -> ChunkSamples:
    """Time-ordered, deduplicated rows as a chunk's four columns."""
    return ChunkSamples(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]
    )


def merge(existing: ChunkSamples | None, rows: Iterable[Row]) -> tuple[ChunkSamples, int]:
    """A stored chunk's samples and late ``rows`` of the same series, collapsed by the rule."""
    everything = rows_of(existing) if existing is not None else []
    everything.extend(rows)
    collapsed, dropped = collapse(everything)
    return columns_of(collapsed), dropped


def sum_runs(runs: Iterable[ChunkSamples]) -> ChunkSamples:
    """The sum of several series at each timestamp any of them has (a pod: its containers).
    Each run must already be deduplicated; a timestamp's window is the largest of its parts."""
    runs = list(runs)
    if len(runs) == 1:
        return runs[0]
    cpu: dict[int, int] = {}
    memory: dict[int, int] = {}
    window: dict[int, int] = {}
    for run in runs:
        for ts, w, c, m in zip(
            run.timestamps_ms, run.windows_ms, run.cpu_nanocores, run.memory_bytes, strict=True
        ):
            cpu[ts] = cpu.get(ts, 0) + c
            memory[ts] = memory.get(ts, 0) + m
            if w > window.get(ts, -1):
                window[ts] = w
    order = sorted(cpu)
    return ChunkSamples(
        order, [window[t] for t in order], [cpu[t] for t in order], [memory[t] for t in order]
    )


def cut(run: ChunkSamples, start_ms: int, end_ms: int) -> ChunkSamples:
    """The samples of a time-ordered run with ``start_ms <= timestamp <= end_ms``."""
    stamps = run.timestamps_ms
    low, high = bisect_left(stamps, start_ms), bisect_right(stamps, end_ms)
    if low == 0 and high == len(stamps):
        return run
    return ChunkSamples(
        stamps[low:high],
        run.windows_ms[low:high],
        run.cpu_nanocores[low:high],
        run.memory_bytes[low:high],
    )


def concat(runs: Sequence[ChunkSamples]) -> ChunkSamples:
    """Time-ordered, deduplicated runs of one series that do not overlap (chunks of distinct
    blocks, in block order), as one run: nothing to collapse, so nothing is compared."""
    if len(runs) == 1:
        return runs[0]
    out = ChunkSamples([], [], [], [])
    for run in runs:
        out.timestamps_ms.extend(run.timestamps_ms)
        out.windows_ms.extend(run.windows_ms)
        out.cpu_nanocores.extend(run.cpu_nanocores)
        out.memory_bytes.extend(run.memory_bytes)
    return out
