"""Retention by tier: full-resolution payloads for one period, block statistics for a longer
one, then nothing. Dropping a payload is the downsampling: the chunk keeps its count, sums,
minima, maxima, last values and sketches, which answer long-range queries on their own.

Day rollups (``rollups``) can be kept longer still. Retention works on whole blocks and days:
a block's payload goes once the *end* of the block is older than the full-resolution period,
so up to one block more than the period is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, delete, exists, select, update

from recorder.store import schema
from recorder.timeutil import DAY_MS


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    full_resolution_ms: int = 14 * DAY_MS
    statistics_ms: int = 400 * DAY_MS
    rollups_ms: int = 400 * DAY_MS

    def __post_init__(self) -> None:
        if min(self.full_resolution_ms, self.statistics_ms, self.rollups_ms) <= 0:
            raise ValueError("retention periods must be positive")
        if self.statistics_ms < self.full_resolution_ms:
            raise ValueError("statistics must be kept at least as long as full resolution")
        if self.rollups_ms < self.statistics_ms:
            raise ValueError("day rollups must be kept at least as long as block statistics")


@dataclass
class RetentionReport:
    payloads_dropped: int = 0
    chunks_deleted: int = 0
    workload_stats_deleted: int = 0
    rollups_deleted: int = 0
    series_deleted: int = 0


def apply_retention(
    engine: Engine, now_ms: int, policy: RetentionPolicy, block_ms: int
) -> RetentionReport:
    c, s, h, pl = schema.chunks, schema.series, schema.samples_head, schema.pod_labels
    report = RetentionReport()
    full_cutoff = now_ms - policy.full_resolution_ms - block_ms
    stats_cutoff = now_ms - policy.statistics_ms - block_ms
    with engine.begin() as conn:
        report.payloads_dropped = conn.execute(
            update(c)
            .where(c.c.block_start_ms <= full_cutoff, c.c.payload.is_not(None))
            .values(payload=None)
        ).rowcount
        report.chunks_deleted = conn.execute(
            delete(c).where(c.c.block_start_ms <= stats_cutoff)
        ).rowcount
        w = schema.workload_stats  # kept as long as the pods' block statistics
        report.workload_stats_deleted = conn.execute(
            delete(w).where(w.c.block_start_ms <= stats_cutoff)
        ).rowcount
        b = schema.workload_blocks
        conn.execute(delete(b).where(b.c.block_start_ms <= stats_cutoff))
        r = schema.rollups
        report.rollups_deleted = conn.execute(
            delete(r).where(r.c.day_start_ms + DAY_MS <= now_ms - policy.rollups_ms)
        ).rowcount
        gone = (
            select(s.c.id)
            .where(s.c.last_seen_ms < now_ms - policy.rollups_ms)
            .where(~exists().where(c.c.series_id == s.c.id))
            .where(~exists().where(r.c.series_id == s.c.id))
            .where(s.c.id.not_in(select(h.c.series_id).distinct()))
        )
        report.series_deleted = conn.execute(delete(s).where(s.c.id.in_(gone))).rowcount
        if report.series_deleted:
            conn.execute(
                delete(pl).where(
                    ~exists().where(
                        s.c.cluster == pl.c.cluster,
                        s.c.namespace == pl.c.namespace,
                        s.c.pod == pl.c.pod,
                    )
                )
            )
    return report
