"""Compaction: closed time blocks move from the head into one chunk row per series per block.

For each closed block, in one transaction: read the block's head rows ordered by series and
time (streamed, so memory stays bounded), merge them with the chunk already stored for that
series and block if any (late samples), drop duplicate timestamps, encode the samples, compute
the statistics and sketches, upsert the chunks, advance ``series.last_seen_ms``, and remove the
block from the head. A crash rolls the whole block back; running it again is harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby, pairwise
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, update

from recorder.stats.codec import ChunkSamples, decode_samples, encode_samples
from recorder.stats.sketch import QuantileSketch
from recorder.store import schema
from recorder.store.engine import dialect_insert
from recorder.store.head import Head

log = logging.getLogger(__name__)

_UPSERT_BATCH = 2_000


@dataclass
class CompactionReport:
    blocks: int = 0
    block_starts: list[int] = field(default_factory=list)
    rollup_days: int = 0
    series: int = 0
    samples: int = 0
    duplicates_dropped: int = 0
    expired_dropped: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """The statistics and payload of one series over one block."""

    series_id: int
    block_start_ms: int
    samples: ChunkSamples

    def values(self) -> dict[str, Any]:
        s = self.samples
        cpu, memory = s.cpu_nanocores, s.memory_bytes
        return {
            "series_id": self.series_id,
            "block_start_ms": self.block_start_ms,
            "first_ms": s.timestamps_ms[0],
            "last_ms": s.timestamps_ms[-1],
            "count": len(s),
            "interval_ms": smallest_gap(s.timestamps_ms),
            "cpu_sum": sum(cpu),
            "cpu_min": min(cpu),
            "cpu_max": max(cpu),
            "cpu_last": cpu[-1],
            "memory_sum": sum(memory),
            "memory_min": min(memory),
            "memory_max": max(memory),
            "memory_last": memory[-1],
            "cpu_sketch": QuantileSketch.of(cpu).to_bytes(),
            "memory_sketch": QuantileSketch.of(memory).to_bytes(),
            "payload": encode_samples(
                s.timestamps_ms, s.windows_ms, s.cpu_nanocores, s.memory_bytes
            ),
        }


def smallest_gap(timestamps_ms: Sequence[int]) -> int:
    """The smallest gap between consecutive timestamps (sorted, distinct); 0 for fewer than 2."""
    return min(
        (later - earlier for earlier, later in pairwise(timestamps_ms)),
        default=0,
    )


def block_start(ts_ms: int, block_ms: int) -> int:
    return ts_ms - ts_ms % block_ms


def merge_samples(
    rows: Sequence[tuple[int, int, int, int]], existing: ChunkSamples | None
) -> tuple[ChunkSamples, int]:
    """Samples of one series in time order, one per timestamp (the stored chunk's value wins
    over a late duplicate), and how many duplicates were dropped."""
    by_ts: dict[int, tuple[int, int, int]] = {}
    if existing is not None:
        for ts, window, cpu, memory in zip(
            existing.timestamps_ms,
            existing.windows_ms,
            existing.cpu_nanocores,
            existing.memory_bytes,
            strict=True,
        ):
            by_ts[ts] = (window, cpu, memory)
    duplicates = 0
    for ts, window, cpu, memory in rows:
        if ts in by_ts:
            duplicates += 1
            continue
        by_ts[ts] = (window, cpu, memory)
    ordered = sorted(by_ts.items())
    return (
        ChunkSamples(
            [ts for ts, _ in ordered],
            [v[0] for _, v in ordered],
            [v[1] for _, v in ordered],
            [v[2] for _, v in ordered],
        ),
        duplicates,
    )


class Compactor:
    def __init__(self, engine: Engine, head: Head, block_ms: int):
        self._engine = engine
        self._head = head
        self.block_ms = block_ms

    def closed_blocks(self, now_ms: int, grace_ms: int) -> Iterator[int]:
        """Starts of the blocks that have head rows and ended at least ``grace_ms`` ago."""
        h = schema.samples_head
        limit = block_start(now_ms - grace_ms, self.block_ms)
        after = None
        while True:
            with self._engine.connect() as conn:
                query = select(func.min(h.c.ts_ms)).where(h.c.ts_ms < limit)
                if after is not None:
                    query = query.where(h.c.ts_ms >= after)
                first = conn.execute(query).scalar()
            if first is None:
                return
            start = block_start(int(first), self.block_ms)
            yield start
            after = start + self.block_ms

    def compact(self, now_ms: int, grace_ms: int, lock: Any = None) -> CompactionReport:
        report = CompactionReport()
        begun = time.perf_counter()
        for start in self.closed_blocks(now_ms, grace_ms):
            if lock is not None:
                with lock:
                    self.compact_block(start, report)
            else:
                self.compact_block(start, report)
        report.seconds = time.perf_counter() - begun
        return report

    def compact_block(self, start: int, report: CompactionReport) -> None:
        end = start + self.block_ms
        h = schema.samples_head
        with self._engine.begin() as conn:
            existing_ids = set(
                conn.execute(
                    select(schema.chunks.c.series_id).where(schema.chunks.c.block_start_ms == start)
                ).scalars()
            )
            rows = conn.execute(
                select(h.c.series_id, h.c.ts_ms, h.c.window_ms, h.c.cpu_nanocores, h.c.memory_bytes)
                .where(h.c.ts_ms >= start, h.c.ts_ms < end)
                .order_by(h.c.series_id, h.c.ts_ms)
                .execution_options(stream_results=True, yield_per=50_000)
            )
            pending: list[ChunkRow] = []
            for series_id, group in groupby(rows, key=itemgetter(0)):
                samples = [(r[1], r[2], r[3], r[4]) for r in group]
                existing = None
                if series_id in existing_ids:
                    existing = self._stored(conn, series_id, start)
                    if existing is None:
                        # This block's full resolution has already expired: its statistics
                        # cannot take samples whose duplicates can no longer be detected.
                        report.expired_dropped += len(samples)
                        continue
                merged, duplicates = merge_samples(samples, existing)
                report.series += 1
                report.samples += len(samples) - duplicates
                report.duplicates_dropped += duplicates
                pending.append(ChunkRow(series_id, start, merged))
                if len(pending) >= _UPSERT_BATCH:
                    self._upsert(conn, pending)
                    pending = []
            rows.close()
            if pending:
                self._upsert(conn, pending)
            self._head.drop_block(conn, start, end)
        report.blocks += 1
        report.block_starts.append(start)
        if report.expired_dropped:
            log.warning(
                "dropped %d late samples for block %d whose full resolution already expired",
                report.expired_dropped,
                start,
            )

    def _stored(self, conn: Connection, series_id: int, start: int) -> ChunkSamples | None:
        c = schema.chunks
        payload = conn.execute(
            select(c.c.payload).where(c.c.series_id == series_id, c.c.block_start_ms == start)
        ).scalar()
        return None if payload is None else decode_samples(payload)

    def _upsert(self, conn: Connection, chunk_rows: Sequence[ChunkRow]) -> None:
        c = schema.chunks
        values = [row.values() for row in chunk_rows]
        insert = dialect_insert(conn, c)
        replace = {
            name: insert.excluded[name]
            for name in values[0]
            if name not in ("series_id", "block_start_ms")
        }
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=[c.c.series_id, c.c.block_start_ms], set_=replace
            ),
            values,
        )
        s = schema.series
        conn.execute(
            update(s)
            .where(s.c.id == bindparam("sid"), s.c.last_seen_ms < bindparam("last"))
            .values(last_seen_ms=bindparam("last")),
            [{"sid": v["series_id"], "last": v["last_ms"]} for v in values],
        )
