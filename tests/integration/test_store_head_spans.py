"""The head found by time without a time index (SQLite: ``head_spans``; PostgreSQL: its
partitions and BRIN index): every read by time returns exactly the rows a full scan finds,
through late rows, compaction of blocks and deletion of series; on SQLite each statement
that reads the head by time walks a rowid range, never the whole table."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, event, select

from recorder.domain import (
    DEFAULT_CLUSTER,
    Batch,
    Kind,
    QueryKind,
    Sample,
    SeriesFilter,
    SeriesKey,
)
from recorder.store import Store, deletion, head, open_store, schema, series

T0 = 1_714_521_600_000  # a block boundary
STEP = 15_000
Row = tuple[int, int, int, int, int]


def _all_rows(conn: Connection) -> list[Row]:
    h = schema.samples_head
    found = conn.execute(
        select(h.c.ts_ms, h.c.series_id, h.c.window_ms, h.c.cpu_nanocores, h.c.memory_bytes)
    )
    return [tuple(row) for row in found]  # type: ignore[misc]


def _check_reads(store: Store, rng: random.Random, block: int, end: int) -> None:
    """Random time ranges read through ``head`` equal a full scan filtered in Python."""
    with store.reading() as conn:
        rows = _all_rows(conn)
        ids = sorted({row[1] for row in rows}) or [1]
        for _ in range(25):
            low = T0 + rng.randrange(-block, end - T0)
            high = low + rng.choice((0, STEP, 7 * STEP, block, 3 * block))
            want = sorted(
                (sid, (ts, window, cpu, memory))
                for ts, sid, window, cpu, memory in rows
                if low <= ts <= high
            )
            assert sorted(head.read(conn, ids, low, high)) == want, (low, high)
            before = low + rng.choice((block, 2 * block, 5 * block))
            after = rng.choice((None, low))
            held = [ts for ts, *_ in rows if ts < before and (after is None or ts >= after)]
            first = None if not held else min(held) - min(held) % block
            assert head.first_block(conn, block, before, after) == first, (before, after)
        oldest = head.oldest(conn)
        if rows:
            assert oldest is not None and oldest <= min(ts for ts, *_ in rows)
        else:
            assert oldest is None


def test_reads_by_time_find_every_row_through_late_rows_compaction_and_deletions(
    store: Store,
) -> None:
    rng = random.Random(1913)
    block = store.block_ms
    now = T0
    dropped: list[int] = []
    for round_ in range(40):
        now += rng.randrange(1, 6) * STEP
        count = rng.randrange(1, 40)
        # Rows about now (a spread of scrape times), now and then one from blocks back.
        rows = [
            (now - rng.randrange(0, 15_000), rng.randrange(1, 30), 15_000, i, round_)
            for i in range(count)
        ]
        if rng.random() < 0.2:
            rows.append((now - rng.randrange(1, 4) * block, rng.randrange(1, 30), 15_000, 0, 0))
        with store.engine.begin() as conn:
            store.head.append(conn, rows)
        if rng.random() < 0.15:  # a series' rows deleted, as ``recorder delete`` does
            with store.engine.begin() as conn:
                conn.execute(
                    schema.samples_head.delete().where(
                        schema.samples_head.c.series_id == rng.randrange(1, 30)
                    )
                )
                head.prune_spans(conn)
        if rng.random() < 0.1:  # a block compacted (dropped from the head)
            start = now - now % block - rng.randrange(0, 3) * block
            with store.engine.begin() as conn:
                store.head.drop_block(conn, start, start + block)
                if conn.dialect.name == "sqlite":  # the block's spans went with it
                    spans = conn.execute(
                        select(schema.head_spans.c.min_ts_ms, schema.head_spans.c.max_ts_ms)
                    ).all()
                    assert spans and all(
                        high < start
                        or low >= start + block
                        or (low < start and high >= start + block)
                        for low, high in spans
                    )
            dropped.append(start)
        if round_ % 8 == 7:
            _check_reads(store, rng, block, now + STEP)
    _check_reads(store, rng, block, now + STEP)
    assert len(dropped) >= 3  # the seed compacts some blocks


def _sqlite_store(tmp_path: object) -> Store:
    store = open_store(f"sqlite:///{tmp_path}/recorder.db")
    store.migrate()
    return store


def test_every_statement_that_reads_the_head_by_time_walks_a_rowid_range(
    tmp_path: object,
) -> None:
    """Poll, read, compact and find the newest of series as the recorder does, then ask
    SQLite how it walks each statement on ``samples_head`` that names a time bound: by the
    rowid (the spans' range), not by a scan of the table."""
    store = _sqlite_store(tmp_path)
    statements: list[tuple[str, object]] = []

    def seen(
        _conn: object, _cursor: object, statement: str, parameters: object, *_: object
    ) -> None:
        if "samples_head" in statement and ("ts_ms <" in statement or "ts_ms >" in statement):
            statements.append((statement, parameters))

    try:
        event.listen(store.engine, "before_cursor_execute", seen)
        keys = [SeriesKey.for_container("ns", f"pod-{i}", "app") for i in range(20)]
        for poll in range(12):
            ts = T0 + poll * STEP
            samples = tuple(Sample(key, ts, STEP, poll + 1, 1024) for key in keys)
            store.write(Batch(Kind.CONTAINER, samples), now_ms=ts)
        with store.reading() as conn:
            ids = [int(sid) for sid in conn.execute(select(schema.series.c.id)).scalars()]
            assert len(list(head.read(conn, ids, T0, T0 + 5 * STEP))) == 20 * 6
            stored = series.select_series(conn, [Kind.CONTAINER], SeriesFilter(QueryKind.CONTAINER))
            newest = series.newest_in_head(conn, stored)
            assert sorted(newest.values()) == [T0 + 11 * STEP] * 20
            head.first_block(conn, store.block_ms, T0 + store.block_ms)
            head.oldest(conn)
        store.maintain(now_ms=T0 + 3 * store.block_ms, grace_ms=0)
        event.remove(store.engine, "before_cursor_execute", seen)
        assert len(statements) >= 4
        with store.engine.connect() as conn:
            for statement, parameters in statements:
                plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
                walks = [str(step[-1]) for step in plan if "samples_head" in str(step[-1])]
                assert walks, statement
                for walk in walks:
                    assert walk.startswith("SEARCH samples_head USING INTEGER PRIMARY KEY"), (
                        statement,
                        walks,
                    )
        with store.reading() as conn:
            assert _all_rows(conn) == []  # compacted: the head and its spans are empty
            assert conn.execute(select(schema.head_spans)).all() == []
    finally:
        store.close()


@pytest.fixture
def polled(tmp_path: object) -> Iterator[Store]:
    store = _sqlite_store(tmp_path)
    for namespace in ("keep", "gone"):
        for poll in range(3):
            ts = T0 + poll * STEP
            key = SeriesKey.for_container(namespace, "web", "app")
            store.write(Batch(Kind.CONTAINER, (Sample(key, ts, STEP, 1, 1),)), now_ms=ts)
    yield store
    store.close()


def test_deleting_a_namespace_deletes_the_spans_left_without_a_row(polled: Store) -> None:
    with polled.reading() as conn:
        assert len(conn.execute(select(schema.head_spans)).all()) == 6  # one per write
    with polled.engine.begin() as conn:
        report = deletion.delete_history(conn, deletion.Doomed(DEFAULT_CLUSTER, "gone"))
    assert report.head_rows == 3
    with polled.reading() as conn:
        spans = conn.execute(select(schema.head_spans)).all()
        assert len(spans) == 3
        assert len(_all_rows(conn)) == 3
        ids = [int(sid) for sid in conn.execute(select(schema.series.c.id)).scalars()]
        assert len(list(head.read(conn, ids, T0, T0 + 2 * STEP))) == 3


def test_rows_appended_without_a_span_are_covered_by_the_next_append_or_compaction(
    tmp_path: object,
) -> None:
    """A release before migration 0009 still running beside a migrated file appends head rows
    without a span: the next append covers them, and so does compaction when none comes."""
    store = _sqlite_store(tmp_path)
    try:
        block = store.block_ms
        old_release = "INSERT INTO samples_head VALUES (?, ?, ?, ?, ?)"
        with store.engine.begin() as conn:
            store.head.append(conn, [(T0, 1, STEP, 1, 1)])
            conn.exec_driver_sql(old_release, (T0 + STEP, 2, STEP, 2, 2))
        with store.reading() as conn:
            assert head.has_unspanned(conn)
            assert [sid for sid, _ in head.read(conn, [1, 2], T0, T0 + STEP)] == [1]
        with store.engine.begin() as conn:
            store.head.append(conn, [(T0 + 2 * STEP, 1, STEP, 3, 3)])
        with store.reading() as conn:
            assert not head.has_unspanned(conn)
            assert [sid for sid, _ in head.read(conn, [1, 2], T0, T0 + STEP)] == [1, 2]

        with store.engine.begin() as conn:  # then nothing appends after the old release
            conn.exec_driver_sql(old_release, (T0 + block + STEP, 2, STEP, 4, 4))
        with store.reading() as conn:
            assert head.first_block(conn, block, T0 + 9 * block, T0 + block) is None
        report = store.maintain(now_ms=T0 + 3 * block, grace_ms=0)
        assert report.compaction.blocks == 2
        with store.reading() as conn:
            assert _all_rows(conn) == []
            assert not head.has_unspanned(conn)
    finally:
        store.close()
