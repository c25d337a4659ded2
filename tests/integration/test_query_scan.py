"""Planning (``recorder.query.scan``): which tier answers which part of a query, on SQLite and
PostgreSQL. Each test proves the tier by taking the others away: chunks deleted under
rollups, rollups falsified under chunks, and ``max_samples`` (how much was decoded)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import Connection, delete, update

from recorder.domain import Agg, Batch, Kind, QueryKind, Resource, Sample, SeriesFilter, SeriesKey
from recorder.errors import QueryError
from recorder.query.engine import units_of
from recorder.query.scan import Scan, Unit
from recorder.stats.buckets import aggregate, aligned, whole
from recorder.store import Store, head, open_store, schema
from recorder.store.retention import RetentionPolicy
from recorder.timeutil import DAY_MS, HOUR_MS

D0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z, a day boundary
D2 = D0 + 2 * DAY_MS
STEP = 10 * 60_000
PER_BLOCK = HOUR_MS // STEP
NODE = SeriesKey.for_node("n1")
AGGS = (Agg.COUNT, Agg.SUM, Agg.MIN, Agg.MAX)

Summary = dict[int, tuple[float | int | None, ...]]
"""bucket start -> (count, sum, min, max) of CPU"""


def cpu_at(ts: int) -> int:
    return 1_000 + (ts - D0) // STEP % 97


@pytest.fixture
def store(store: Store) -> Store:
    """The shared store with node ``n1`` sampled every 10 minutes over two days from ``D0``,
    compacted and rolled up (both days closed)."""
    for ts in range(D0, D2, STEP):
        sample = Sample(NODE, ts, 30_000, cpu_at(ts), ts // STEP)
        store.write(Batch(Kind.NODE, (sample,)), now_ms=ts)
    report = store.maintain(now_ms=D2 + HOUR_MS, grace_ms=0)
    assert (report.compaction.blocks, report.compaction.rollup_days) == (48, 2)
    return store


def units(conn: Connection, kind: QueryKind = QueryKind.NODE) -> list[Unit]:
    return units_of(conn, SeriesFilter(kind))[1]


def statistics(
    store: Store,
    start_ms: int,
    end_ms: int,
    step_ms: int,
    *,
    max_samples: int = 10**6,
    kind: QueryKind = QueryKind.NODE,
) -> tuple[Summary, int]:
    """The one unit's CPU summary per bucket of ``step_ms``, and how many samples the scan
    read (head rows and decoded chunk samples)."""
    with store.reading() as conn:
        scan = Scan(
            units(conn, kind),
            start_ms=start_ms,
            end_ms=end_ms,
            block_ms=store.block_ms,
            max_samples=max_samples,
        )
        found = scan.statistics(conn, aligned(step_ms), (Resource.CPU,))[Resource.CPU]
    assert {unit for unit, _ in found} <= {0}
    summary = {
        bucket: tuple(aggregate(acc, agg) for agg in AGGS) for (_, bucket), acc in found.items()
    }
    return summary, scan.decoded


def truth(samples: Sequence[tuple[int, int]], step_ms: int) -> Summary:
    """What ``statistics`` should answer for ``(timestamp, cpu)`` samples."""
    buckets: dict[int, list[int]] = {}
    for ts, cpu in samples:
        buckets.setdefault(ts - ts % step_ms, []).append(cpu)
    return {b: (len(v), sum(v), min(v), max(v)) for b, v in buckets.items()}


def written(start_ms: int = D0, end_ms: int = D2) -> list[tuple[int, int]]:
    return [(ts, cpu_at(ts)) for ts in range(start_ms, end_ms, STEP)]


def test_a_step_of_one_day_over_rolled_days_reads_the_rollups(store: Store) -> None:
    found, decoded = statistics(store, D0, D2 - 1, DAY_MS, max_samples=0)
    assert found == truth(written(), DAY_MS)
    assert decoded == 0

    with store.engine.begin() as conn:
        conn.execute(delete(schema.chunks))

    assert statistics(store, D0, D2 - 1, DAY_MS, max_samples=0) == (found, 0)
    # An hour's step cannot use day rollups: with the chunks gone, nothing answers it.
    assert statistics(store, D0, D2 - 1, HOUR_MS) == ({}, 0)


def test_a_late_head_row_in_a_rolled_day_skips_rollups_and_counts_once(store: Store) -> None:
    late = (D0 + 5 * HOUR_MS + STEP // 2, 50_000)  # between two samples of a compacted block
    result = store.write(
        Batch(Kind.NODE, (Sample(NODE, late[0], 30_000, late[1], 1),)), now_ms=D2 + HOUR_MS
    )
    assert result.written == 1
    with store.engine.begin() as conn:  # rollups that would show if they were read
        conn.execute(update(schema.rollups).values(count=schema.rollups.c.count + 1_000))

    found, decoded = statistics(store, D0, D2 - 1, DAY_MS)

    assert found == truth([*written(), late], DAY_MS)
    assert found[D0][0] == 24 * PER_BLOCK + 1
    assert decoded == 1 + PER_BLOCK  # the head row, and its block decoded to merge it


def test_a_block_with_a_chunk_and_head_rows_is_decoded_and_merged(store: Store) -> None:
    """Another replica appended an exact duplicate of a compacted sample and, at another
    compacted instant, a greater one: by the one dedup rule the greater wins, once."""
    block = D0 + HOUR_MS
    first, second = block, block + STEP
    with store.engine.begin() as conn:
        [sid] = [u.sample_ids[0] for u in units(conn)]
        store.head.append(
            conn,
            [(first, sid, 30_000, cpu_at(first), first // STEP), (second, sid, 30_000, 9_999, 0)],
        )
    expected = [(ts, 9_999 if ts == second else cpu) for ts, cpu in written(D0, D0 + 3 * HOUR_MS)]

    found, decoded = statistics(store, D0, D0 + 3 * HOUR_MS - 1, HOUR_MS)

    assert found == truth(expected, HOUR_MS)
    in_block = [c for ts, c in expected if block <= ts < block + HOUR_MS]
    assert found[block] == (PER_BLOCK, sum(in_block), min(in_block), 9_999)
    assert decoded == 2 + PER_BLOCK  # two head rows, one block decoded; the others' statistics
    with store.reading() as conn:
        [run] = (
            Scan(
                units(conn),
                start_ms=block,
                end_ms=block + HOUR_MS - 1,
                block_ms=HOUR_MS,
                max_samples=99,
            )
            .samples(conn)
            .values()
        )
    assert run.timestamps_ms == [ts for ts, _ in written(block, block + HOUR_MS)]
    assert run.cpu_nanocores == [9_999 if ts == second else cpu_at(ts) for ts in run.timestamps_ms]


def test_a_pod_whose_containers_samples_expired_is_answered_whole_by_its_statistics(
    database_url: str,
) -> None:
    store = open_store(
        database_url,
        retention=RetentionPolicy(full_resolution_ms=DAY_MS, statistics_ms=10 * DAY_MS),
    )
    store.migrate()
    try:
        containers = ("app", "sidecar")
        for ts in range(D0, D0 + HOUR_MS, STEP):
            samples = tuple(
                Sample(SeriesKey.for_container("shop", "web", c), ts, 30_000, n * cpu_at(ts), 1)
                for n, c in enumerate(containers, 1)
            )
            store.write(Batch(Kind.CONTAINER, samples), now_ms=ts)
        report = store.maintain(now_ms=D0 + 3 * DAY_MS, grace_ms=0)
        assert report.retention.payloads_dropped == len(containers)
        summed = [(ts, 3 * cpu) for ts, cpu in written(D0, D0 + HOUR_MS)]

        # The range cuts the block; no whole day in it, so no rollups: the pod's statistics
        # answer the whole block (its containers have nothing left to decode).
        found, decoded = statistics(
            store, D0 + 15 * 60_000, D0 + 2 * HOUR_MS, DAY_MS, kind=QueryKind.POD
        )
        assert found == truth(summed, DAY_MS)
        assert decoded == 0
        with store.reading() as conn:
            [unit] = units(conn, QueryKind.POD)
            assert (len(unit.stats_ids), len(unit.sample_ids)) == (1, 2)
            scan = Scan(
                [unit], start_ms=D0, end_ms=D0 + 2 * HOUR_MS, block_ms=HOUR_MS, max_samples=0
            )
            assert scan.samples(conn) == {}

        # A late duplicate of a compacted instant lands in the head of that expired block: it
        # can no longer be told from a duplicate, so compaction will drop it, and reads agree
        # now (counted once, not on top of the statistics) and after compaction.
        at = D0 + 2 * STEP  # inside the range below
        late = Sample(SeriesKey.for_container("shop", "web", "app"), at, 30_000, 10**12, 1)
        store.write(Batch(Kind.CONTAINER, (late,)), now_ms=D0 + 3 * DAY_MS)
        dropped = []
        for _ in range(2):
            found, decoded = statistics(
                store, D0 + 15 * 60_000, D0 + 2 * HOUR_MS, DAY_MS, kind=QueryKind.POD
            )
            assert found == truth(summed, DAY_MS)
            assert decoded == 0
            report = store.maintain(now_ms=D0 + 3 * DAY_MS, grace_ms=0)
            dropped.append(report.compaction.expired_dropped)
        assert dropped == [1, 0]
    finally:
        store.close()


def test_max_samples_bounds_what_a_scan_decodes(store: Store) -> None:
    start, end = D0, D0 + 2 * HOUR_MS - 1  # two blocks, 2 * PER_BLOCK samples
    with store.reading() as conn:
        found = units(conn)

        def scan(max_samples: int, *, points_only: bool = False) -> Scan:
            return Scan(
                found,
                start_ms=start,
                end_ms=end,
                block_ms=HOUR_MS,
                max_samples=max_samples,
                points_only=points_only,
            )

        [run] = scan(2 * PER_BLOCK).samples(conn).values()
        assert len(run.timestamps_ms) == 2 * PER_BLOCK
        with pytest.raises(QueryError, match=f"more than {2 * PER_BLOCK - 1} raw samples"):
            scan(2 * PER_BLOCK - 1).samples(conn)
        with pytest.raises(QueryError, match=f"more than {2 * PER_BLOCK - 1} points"):
            scan(2 * PER_BLOCK - 1, points_only=True).samples(conn)
        # A step of 90 minutes puts a block boundary inside a bucket: samples answer it.
        with pytest.raises(QueryError, match="raw samples"):
            scan(PER_BLOCK - 1).statistics(conn, aligned(90 * 60_000), (Resource.CPU,))
        # A step of one hour: each block's statistics, nothing decoded.
        assert scan(0).statistics(conn, aligned(HOUR_MS), (Resource.CPU,))


def test_a_head_window_beyond_max_samples_is_refused_before_it_is_all_read(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Head rows used to be held all before they were counted: a window of a large cluster's
    head (millions of rows, ~250 bytes each) was read whole only to be refused. Now the
    reading stops at the first row past the limit (the seam: ``head.read``, counted)."""
    store = open_store(database_url)
    store.migrate()
    nodes = [SeriesKey.for_node(f"n{i}") for i in range(10)]
    start = D0 + 3 * DAY_MS
    for ts in range(start, start + 20 * 15_000, 15_000):
        store.write(Batch(Kind.NODE, tuple(Sample(k, ts, 15_000, 1, 1) for k in nodes)), now_ms=ts)
    pulled = 0
    real = head.read

    def counted(*args: object, **kwargs: object) -> Iterator[object]:
        nonlocal pulled
        for row in real(*args, **kwargs):  # type: ignore[arg-type]
            pulled += 1
            yield row

    monkeypatch.setattr(head, "read", counted)
    try:
        with store.reading() as conn:
            found = units(conn)

            def scan(max_samples: int) -> Scan:
                end = start + HOUR_MS - 1
                return Scan(
                    found, start_ms=start, end_ms=end, block_ms=HOUR_MS, max_samples=max_samples
                )

            runs = scan(200).samples(conn)
            assert sum(len(r.timestamps_ms) for r in runs.values()) == 200 and pulled == 200
            pulled = 0
            with pytest.raises(QueryError, match="more than 50 raw samples"):
                scan(50).samples(conn)
            assert pulled == 51  # not 200
            pulled = 0
            with pytest.raises(QueryError, match="more than 50 raw samples"):
                scan(50).statistics(conn, whole(start), (Resource.CPU,))
            assert pulled == 51
    finally:
        store.close()


@pytest.mark.parametrize("late", [False, True])
def test_sample_columns_equal_the_samples(store: Store, late: bool) -> None:
    """Batch-decoded columns (one series per unit, no head row) and the lists (a head row in
    the range) hold the same samples, cut to the range, counted the same against
    ``max_samples``."""
    if late:
        sample = Sample(NODE, D0 + HOUR_MS + 1, 30_000, 5, 5)
        store.write(Batch(Kind.NODE, (sample,)), now_ms=D2 + HOUR_MS)
    start, end = D0 + HOUR_MS // 2, D0 + 30 * HOUR_MS + 1
    with store.reading() as conn:
        found = units(conn)
        scan = Scan(found, start_ms=start, end_ms=end, block_ms=store.block_ms, max_samples=10**6)
        want = scan.samples(conn)
        other = Scan(found, start_ms=start, end_ms=end, block_ms=store.block_ms, max_samples=10**6)
        got = other.sample_columns(conn)
        assert other.decoded == scan.decoded
        assert got.keys() == want.keys() == {0}
        stamps, cpu, memory = got[0]
        assert (list(stamps), list(cpu), list(memory)) == (
            want[0].timestamps_ms,
            want[0].cpu_nanocores,
            want[0].memory_bytes,
        )
        assert min(stamps) >= start and max(stamps) <= end
        tight = Scan(found, start_ms=start, end_ms=end, block_ms=store.block_ms, max_samples=10)
        with pytest.raises(QueryError, match="more than 10 raw samples"):
            tight.sample_columns(conn)
