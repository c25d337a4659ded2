"""Retention by tier (``recorder.store.retention``): full-resolution payloads dropped, block
statistics kept, then deleted, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from recorder.domain import Resource
from recorder.store import open_store, schema
from recorder.store.retention import DAY_MS, RetentionPolicy
from tests.integration.test_store_compactor import (
    HOUR,
    T0,
    expected,
    keys,
    read_all,
    synthetic,
    write_polls,
)


def test_retention_keeps_statistics_and_drops_old_full_resolution(database_url: str) -> None:
    now = T0 + 3 * DAY_MS
    store = open_store(
        database_url,
        retention=RetentionPolicy(full_resolution_ms=DAY_MS, statistics_ms=3 * DAY_MS + 2 * HOUR),
    )
    store.migrate()
    series = keys(2)
    old = synthetic(series, T0, T0 + 2 * HOUR, seed=5)  # 3 days old
    recent = synthetic(series, now - 2 * HOUR, now - HOUR, seed=6)
    write_polls(store, old + recent)
    report = store.maintain(now_ms=now, grace_ms=0)
    assert report.retention.payloads_dropped == 2 * len(series)
    # No full-resolution data older than a day is left...
    assert read_all(store, Resource.CPU, 0, now - DAY_MS) == {}
    assert read_all(store, Resource.CPU) == expected(recent, Resource.CPU)
    # ...but the old blocks' statistics are, and equal the raw samples', for the containers'
    # chunks as for the pods' (one container each here, so the same sums).
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(schema.chunks, schema.series.c.kind)
            .join(schema.series, schema.series.c.id == schema.chunks.c.series_id)
            .where(schema.chunks.c.block_start_ms < T0 + DAY_MS)
        ).all()
    assert all(r.payload is None for r in rows)
    for kind in ("container", "pod"):
        mine = [r for r in rows if r.kind == kind]
        assert len(mine) == 2 * len(series), kind
        assert sum(r.cpu_sum for r in mine) == sum(s.cpu_nanocores for s in old)
        assert sum(r.count for r in mine) == len(old)
        assert max(r.memory_max for r in mine) == max(s.memory_bytes for s in old)
        assert min(r.cpu_min for r in mine) == min(s.cpu_nanocores for s in old)
    # After the statistics period, even they go (both blocks' container and pod chunks).
    later = store.maintain(now_ms=T0 + 4 * DAY_MS + 4 * HOUR, grace_ms=0)
    assert later.retention.chunks_deleted == 2 * 2 * len(series)
    store.close()
