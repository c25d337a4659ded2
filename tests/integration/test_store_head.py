"""Reads of the head (``recorder.store.head.read``) on SQLite and PostgreSQL: by series then
time, both ends of the range inclusive, exact duplicates all returned, thousands of ids in one
statement."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.store import Store, head, schema

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z, a block boundary
STEP = 15_000


def ids_by_node(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.series.c.node, schema.series.c.id))
        return {str(node): int(sid) for node, sid in rows}


def read(store: Store, series_ids: list[int], start_ms: int, end_ms: int) -> list:
    with store.reading() as conn:
        return list(head.read(conn, series_ids, start_ms, end_ms))


def test_rows_come_by_series_then_time_within_an_inclusive_range(store: Store) -> None:
    nodes = ("node-a", "node-b", "node-c")
    for i in range(5):  # one poll per instant: the head holds the series interleaved
        samples = [
            Sample(SeriesKey.for_node(node), T0 + i * STEP, 10_000, 100 * n + i, 1_000 * n + i)
            for n, node in enumerate(nodes)
        ]
        store.write(Batch(Kind.NODE, tuple(samples)), now_ms=T0 + i * STEP)
    ids = ids_by_node(store)
    a, b = ids["node-a"], ids["node-b"]

    found = read(store, [b, a], T0 + STEP, T0 + 3 * STEP)  # node-c not asked for

    assert found == [
        (sid, (T0 + i * STEP, 10_000, 100 * n + i, 1_000 * n + i))
        for sid, n in sorted([(a, 0), (b, 1)])
        for i in (1, 2, 3)
    ]
    assert read(store, [a], T0 + 4 * STEP + 1, T0 + 9 * STEP) == []
    assert read(store, [], T0, T0 + 9 * STEP) == []


def test_exact_duplicates_are_all_returned_for_the_reader_to_collapse(store: Store) -> None:
    key = SeriesKey.for_node("node-a")
    store.write(Batch(Kind.NODE, (Sample(key, T0, 10_000, 5, 7),)), now_ms=T0)
    [sid] = ids_by_node(store).values()
    with store.engine.begin() as conn:  # another replica appended the same instant twice
        store.head.append(conn, [(T0, sid, 10_000, 5, 7), (T0, sid, 10_000, 9, 7)])

    found = read(store, [sid], T0, T0)

    assert sorted(row for _, row in found) == [
        (T0, 10_000, 5, 7),
        (T0, 10_000, 5, 7),
        (T0, 10_000, 9, 7),
    ]


def test_thousands_of_series_are_read_in_one_statement(store: Store) -> None:
    samples = [Sample(SeriesKey.for_node(f"n{i:04}"), T0, 10_000, i, i) for i in range(2_345)]
    store.write(Batch(Kind.NODE, tuple(samples)), now_ms=T0)
    ids = ids_by_node(store)
    assert len(ids) == 2_345

    found = read(store, sorted(ids.values()), T0, T0)

    assert [sid for sid, _ in found] == sorted(ids.values())
    cpu_of = {sid: row[2] for sid, row in found}
    assert all(cpu_of[sid] == int(node[1:]) for node, sid in ids.items())


def test_only_the_series_asked_for_among_more_ids_than_a_statement_may_bind(
    store: Store,
) -> None:
    samples = [Sample(SeriesKey.for_node(f"n{i:04}"), T0, 10_000, i, i) for i in range(100)]
    store.write(Batch(Kind.NODE, tuple(samples)), now_ms=T0)
    ids = sorted(ids_by_node(store).values())
    unknown = range(max(ids) + 1, max(ids) + 40_001)  # past SQLite's 32,766 variables

    found = read(store, [*ids[::2], *unknown], T0, T0)

    assert [sid for sid, _ in found] == ids[::2]


def test_appended_rows_come_back_exactly_at_the_limits_of_their_columns(store: Store) -> None:
    """PostgreSQL's rows go in as one binary COPY stream made a column at a time: every field
    at the edges of its column type, rows as columns and as tuples, across two blocks."""
    from recorder.store.writer import HeadRows

    keys = [SeriesKey.for_node(f"node-{i}") for i in range(3)]
    store.write(Batch(Kind.NODE, tuple(Sample(k, T0, 1, 1, 1) for k in keys)), now_ms=T0)
    a, b, c = (ids_by_node(store)[f"node-{i}"] for i in range(3))
    later = T0 + store.block_ms
    big, int4 = 2**63 - 1, 2**31 - 1
    rows = HeadRows()
    rows.append((T0 + 1, a, int4, big, 0))
    columns = ([T0 + 2, later], [b, c], [1, 2], [0, big - 1], [big, 3])
    arrays = (np.array(column, np.int64) for column in columns)
    rows.add_columns(*arrays, source=(columns, None))
    plain = [(T0 + 3, c, -1, -big - 1, 5)]
    with store.engine.begin() as conn:
        store.head.append(conn, rows)
        store.head.append(conn, plain)

    found = sorted(read(store, [a, b, c], T0 + 1, later))

    assert found == sorted(
        [
            (a, (T0 + 1, int4, big, 0)),
            (b, (T0 + 2, 1, 0, big)),
            (c, (later, 2, big - 1, 3)),
            (c, (T0 + 3, -1, -big - 1, 5)),
        ]
    )


def test_a_value_outside_its_column_is_refused_by_postgresql(postgres_url: str) -> None:
    """The binary stream is made only of values that fit; a row with one that does not is
    refused as content, which the writer isolates (psycopg's own binary int4 stored 2**31 as
    -2**31)."""
    from recorder.store import open_store
    from recorder.store.engine import is_content_error

    store = open_store(postgres_url)
    try:
        store.migrate()
        key = SeriesKey.for_node("n")
        store.write(Batch(Kind.NODE, (Sample(key, T0, 1, 1, 1),)), now_ms=T0)
        [sid] = ids_by_node(store).values()
        for row in [(T0 + 1, sid, 2**31, 1, 1), (T0 + 1, sid, 1, 2**63, 1)]:
            try:
                with store.engine.begin() as conn:
                    store.head.append(conn, [row])
            except Exception as exc:  # the error the writer isolates
                assert is_content_error(exc), repr(exc)
            else:
                raise AssertionError(f"{row} was stored")
        assert read(store, [sid], T0 + 1, T0 + 1) == []
    finally:
        store.close()


def _append(store: Store, rows: list[tuple[int, int, int, int, int]]) -> None:
    with store.engine.begin() as conn:
        store.head.append(conn, rows)


def _late(store: Store, row: tuple[int, int, int, int, int]) -> None:
    """A late row of a block whose partition is gone (PostgreSQL: in the DEFAULT partition)."""
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                f"INSERT INTO {head.DEFAULT_PARTITION} "
                "(ts_ms, series_id, window_ms, cpu_nanocores, memory_bytes) "
                "VALUES (%s, %s, %s, %s, %s)",
                row,
            )
        else:
            store.head.append(conn, [row])


def test_the_first_block_with_rows_and_the_oldest_row_are_found(store: Store) -> None:
    block = store.block_ms
    _append(store, [(T0 + 2 * block + 5_000, 1, 15_000, 1, 1), (T0 + 3 * block, 2, 15_000, 1, 1)])
    with store.reading() as conn:
        postgres = conn.dialect.name == "postgresql"
        assert head.first_block(conn, block, T0 + 9 * block) == T0 + 2 * block
        assert head.first_block(conn, block, T0 + 9 * block, T0 + 3 * block) == T0 + 3 * block
        assert head.first_block(conn, block, T0 + 3 * block, T0 + 3 * block) is None
        assert head.first_block(conn, block, T0 + 2 * block) is None
        assert head.first_block(conn, block, T0 + 9 * block, T0 + 4 * block) is None
        # PostgreSQL: the start of the oldest partition holding a row (a lower bound).
        assert head.oldest(conn) == T0 + 2 * block + (0 if postgres else 5_000)

    _late(store, (T0 + 1_000, 3, 15_000, 1, 1))
    with store.reading() as conn:
        assert head.first_block(conn, block, T0 + 9 * block) == T0
        assert head.first_block(conn, block, T0 + 9 * block, T0 + block) == T0 + 2 * block
        assert head.oldest(conn) == T0 + 1_000


def test_empty_and_odd_sized_partitions_are_read_right_on_postgresql(postgres_url: str) -> None:
    from recorder.store import open_store

    store = open_store(postgres_url)
    store.migrate()
    try:
        block = store.block_ms
        with store.engine.begin() as conn:  # a block whose rows were all deleted
            store.head.append(conn, [(T0 + block, 1, 15_000, 1, 1)])
            conn.exec_driver_sql("DELETE FROM samples_head")
            # A partition two blocks wide (made when the block size was larger), its one row
            # in its second block.
            conn.exec_driver_sql(
                f'CREATE TABLE "{head.partition_name(T0 + 4 * block, T0 + 6 * block)}" '
                f"PARTITION OF samples_head FOR VALUES FROM ({T0 + 4 * block}) "
                f"TO ({T0 + 6 * block})"
            )
        _append(store, [(T0 + 5 * block + 7, 2, 15_000, 1, 1), (T0 + 8 * block, 3, 15_000, 1, 1)])
        with store.reading() as conn:
            assert head.first_block(conn, block, T0 + 9 * block) == T0 + 5 * block
            assert head.first_block(conn, block, T0 + 5 * block) is None
            assert head.first_block(conn, block, T0 + 9 * block, T0 + 6 * block) == T0 + 8 * block
            assert head.oldest(conn) == T0 + 4 * block  # the partition's start: a lower bound
            indexes = conn.exec_driver_sql(
                "SELECT pg_get_indexdef(indexrelid) FROM pg_index "
                "WHERE indrelid = 'samples_head'::regclass"
            ).scalars()
            assert [" USING brin (ts_ms)" in text for text in indexes] == [True]
    finally:
        store.close()


def test_a_partition_dropped_while_the_blocks_are_sought_counts_as_empty(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction in another process may drop a block's partition between the listing of the
    partitions and the question to each: the answer must come without an error."""
    from recorder.store import open_store

    store = open_store(postgres_url)
    store.migrate()
    try:
        block = store.block_ms
        _append(store, [(T0 + block, 1, 15_000, 1, 1), (T0 + 3 * block, 2, 15_000, 1, 1)])
        with store.reading() as conn:
            listed = head._partitions(conn)
        assert (T0 + block, T0 + 2 * block) in listed
        with store.engine.begin() as conn:
            store.head.drop_block(conn, T0 + block, T0 + 2 * block)
        monkeypatch.setattr(head, "_partitions", lambda conn: listed)  # the listing before
        with store.reading() as conn:
            assert head.first_block(conn, block, T0 + 9 * block) == T0 + 3 * block
            assert head.oldest(conn) == T0 + 3 * block
    finally:
        store.close()
