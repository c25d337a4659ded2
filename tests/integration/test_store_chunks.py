"""Reads of the chunk tier (``recorder.store.chunks``) on SQLite and PostgreSQL: block statistics
with and without the days rollups answer, whether a chunk still has its samples, and decoded
samples that skip the chunks retention has emptied."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.store import Store, chunks, open_store, schema
from recorder.store.retention import RetentionPolicy
from recorder.timeutil import DAY_MS, HOUR_MS

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z, a day boundary
STEP = 60_000
NOW = T0 + 3 * DAY_MS
OLD = (T0, T0 + HOUR_MS)  # blocks past full resolution at NOW
RECENT = (NOW - 3 * HOUR_MS, NOW - 2 * HOUR_MS)  # blocks still at full resolution
WEB = SeriesKey.for_container("shop", "web", "app")
DNS = SeriesKey.for_container("kube-system", "dns", "coredns")


@pytest.fixture
def expiring(database_url: str) -> Iterator[Store]:
    """A store keeping full resolution one day and statistics ten, holding ``WEB`` and ``DNS``
    in two blocks three days old and two recent ones, compacted and expired at ``NOW``."""
    store = open_store(
        database_url,
        retention=RetentionPolicy(full_resolution_ms=DAY_MS, statistics_ms=10 * DAY_MS),
    )
    store.migrate()
    for block in (*OLD, *RECENT):
        for i in range(60):
            ts = block + i * STEP
            samples = (Sample(WEB, ts, 30_000, 1_000 + i, 2_000 + i), Sample(DNS, ts, 30_000, i, i))
            store.write(Batch(Kind.CONTAINER, samples), now_ms=ts)
    report = store.maintain(now_ms=NOW, grace_ms=0)
    assert report.retention.payloads_dropped == 2 * 2  # both containers' two old blocks
    yield store
    store.close()


def series_ids(store: Store) -> dict[tuple[str, str], int]:
    """(kind, pod) -> id"""
    s = schema.series
    with store.engine.connect() as conn:
        rows = conn.execute(select(s.c.kind, s.c.pod, s.c.id))
        return {(str(kind), str(pod)): int(sid) for kind, pod, sid in rows}


def test_statistics_of_every_chunk_in_range_with_their_samples_or_not(expiring: Store) -> None:
    ids = series_ids(expiring)
    web, pod = ids[("container", "web")], ids[("pod", "web")]
    with expiring.reading() as conn:
        found = {
            (c.series_id, c.block_start_ms): c
            for c in chunks.read_stats(conn, [web, pod], T0, NOW, block_ms=HOUR_MS)
        }
    assert sorted(found) == sorted((sid, b) for sid in (web, pod) for b in (*OLD, *RECENT))
    for (sid, start), chunk in found.items():
        assert (chunk.stats.count, chunk.stats.first_ms) == (60, start)
        assert chunk.stats.last_ms == start + 59 * STEP
        assert chunk.stats.cpu.maximum == 1_059
        # Retention dropped the old blocks' samples; a pod never has its own.
        assert chunk.has_payload is (sid == web and start in RECENT), (sid, start)


def test_a_range_cutting_blocks_finds_the_chunks_with_samples_inside_it(
    expiring: Store,
) -> None:
    web = series_ids(expiring)[("container", "web")]
    with expiring.reading() as conn:
        # From the last sample of the first old block to the first of the second.
        cut = chunks.read_stats(conn, [web], OLD[0] + 59 * STEP, OLD[1], block_ms=HOUR_MS)
        assert sorted(c.block_start_ms for c in cut) == list(OLD)
        # After the first block's last sample, before the second's first: no chunk.
        gap = chunks.read_stats(conn, [web], OLD[0] + 59 * STEP + 1, OLD[1] - 1, block_ms=HOUR_MS)
        assert list(gap) == []


def test_skip_leaves_out_the_blocks_that_start_in_it(expiring: Store) -> None:
    web = series_ids(expiring)[("container", "web")]
    with expiring.reading() as conn:
        found = chunks.read_stats(conn, [web], T0, NOW, block_ms=HOUR_MS, skip=(T0, T0 + DAY_MS))
        assert sorted(c.block_start_ms for c in found) == list(RECENT)
        # [first, end): a block starting at the end of the skipped span is read.
        found = chunks.read_stats(conn, [web], T0, NOW, block_ms=HOUR_MS, skip=(T0, OLD[1]))
        assert sorted(c.block_start_ms for c in found) == [OLD[1], *RECENT]


def test_samples_are_decoded_only_from_chunks_that_still_have_them(expiring: Store) -> None:
    ids = series_ids(expiring)
    web, dns, pod = ids[("container", "web")], ids[("container", "dns")], ids[("pod", "web")]
    wanted = [(sid, block) for sid in (web, dns, pod) for block in (*OLD, *RECENT)]
    with expiring.reading() as conn:
        found = {(sid, block): samples for sid, block, samples in chunks.read_samples(conn, wanted)}
        assert sorted(found) == sorted((sid, block) for sid in (web, dns) for block in RECENT)
        samples = found[(web, RECENT[0])]
        assert samples.timestamps_ms == [RECENT[0] + i * STEP for i in range(60)]
        assert samples.cpu_nanocores == [1_000 + i for i in range(60)]
        assert samples.memory_bytes == [2_000 + i for i in range(60)]
        assert set(samples.windows_ms) == {30_000}


def test_samples_in_a_range_skip_expired_chunks_in_series_and_block_order(
    expiring: Store,
) -> None:
    ids = series_ids(expiring)
    web, dns, pod = ids[("container", "web")], ids[("container", "dns")], ids[("pod", "web")]
    with expiring.reading() as conn:
        found = list(chunks.read_samples_in_range(conn, [web, dns, pod], T0, NOW, block_ms=HOUR_MS))
        assert [(sid, block) for sid, block, _ in found] == sorted(
            (sid, block) for sid in (web, dns) for block in RECENT
        )
        # A range inside the second recent block reads that block's chunk whole.
        inside = list(
            chunks.read_samples_in_range(
                conn, [web], RECENT[1] + 10 * STEP, RECENT[1] + 20 * STEP, block_ms=HOUR_MS
            )
        )
        assert [(sid, block, len(s.timestamps_ms)) for sid, block, s in inside] == [
            (web, RECENT[1], 60)
        ]
        assert (
            list(chunks.read_samples_in_range(conn, [web], T0, OLD[1] + HOUR_MS, block_ms=HOUR_MS))
            == []
        )


def test_expired_names_the_chunks_of_those_blocks_without_samples(expiring: Store) -> None:
    ids = series_ids(expiring)
    containers = [ids[("container", "web")], ids[("container", "dns")]]
    pods = [ids[("pod", "web")], ids[("pod", "dns")]]
    with expiring.reading() as conn:
        old = chunks.expired(conn, [OLD[0], RECENT[0]])
        recent = chunks.expired(conn, list(RECENT))
    # Pods' statistics never have samples of their own: they count as expired everywhere.
    assert old == {(sid, OLD[0]) for sid in containers + pods} | {(sid, RECENT[0]) for sid in pods}
    assert recent == {(sid, b) for sid in pods for b in RECENT}
