"""The head: where new samples are appended before compaction, one strategy per dialect.

- SQLite: a plain table without an index; ``executemany`` of tuples. Each append also writes
  a row to ``head_spans``: the first and last rowid it took (rowids are given in order, each
  the table's greatest plus one, and one writer at a time holds the file) and its least and
  greatest timestamp. Rows are appended in about time order, so the rows of a time range lie
  in the rowid range of the spans that overlap it: each statement that reads the head by time
  walks that rowid range (``in_time``, ``_rowids``) instead of a B-tree entry per row, which
  cost a 150,000-pod poll's insert about as much as the rows themselves. Spans only ever
  cover more than their rows (a deleted row leaves its span; compaction deletes or narrows
  the spans of its block), so a range read may walk more rows than it returns, never fewer.
- PostgreSQL: a table partitioned by time, one partition per block plus a DEFAULT partition
  for anything else; rows go in with binary ``COPY`` (measured ~10x faster than
  ``executemany``), the stream made with numpy a column at a time; compaction drops the
  block's partition instead of deleting rows, so there is no vacuum churn. Its time index is a
  BRIN index (migration 0008), which finds a time range but cannot give the least timestamp
  at once: the oldest block and the first closed one are found from the partitions
  (``first_block``, ``oldest``), each asked whether it holds a row.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Generator, Iterator, Sequence
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, Connection, Engine, and_, func, literal_column, select
from sqlalchemy.exc import SQLAlchemyError

from recorder.store import schema
from recorder.timeutil import floor_to

log = logging.getLogger(__name__)

HeadRow = tuple[int, int, int, int, int]
"""(ts_ms, series_id, window_ms, cpu_nanocores, memory_bytes)"""
SampleRow = tuple[int, int, int, int]
"""(ts_ms, window_ms, cpu_nanocores, memory_bytes): ``recorder.stats.dedup.Row``"""

_COLUMNS = "ts_ms, series_id, window_ms, cpu_nanocores, memory_bytes"
_SAMPLE_COLUMNS = "ts_ms, window_ms, cpu_nanocores, memory_bytes"


class Rows(Protocol):
    """Head rows that can be counted and iterated more than once (a list, ``HeadRows``)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[HeadRow]: ...


Column = Sequence[int] | npt.NDArray[np.int64]
Columns = tuple[Column, Column, Column, Column, Column]
"""Head rows as columns: (ts_ms, series_id, window_ms, cpu_nanocores, memory_bytes). Rows that
have a ``column_parts()`` method (``writer.HeadRows``) are read so by PostgreSQL's append."""


class Head(Protocol):
    def append(self, conn: Connection, rows: Rows) -> None:
        """Insert ``rows`` (iterated once by SQLite; read as columns by PostgreSQL)."""
        ...

    def drop_block(self, conn: Connection, start_ms: int, end_ms: int) -> None: ...

    def forget(self) -> None:
        """Drop what the head remembers of the database: the transaction of the last
        ``append`` rolled back."""

    def cover_strays(self, engine: Engine) -> None:
        """Before compaction: make rows appended behind the head's back findable by time
        (SQLite: ``cover_unspanned``; PostgreSQL's partitions need nothing)."""


class SqliteHead:
    def append(self, conn: Connection, rows: Rows) -> None:
        count = len(rows)
        if not count:
            return
        least, greatest = _time_bounds(rows)
        cover_unspanned(conn)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            # The span first: the connection holds the file's write lock until it commits,
            # so the rows take the rowids after the greatest, one after another. A span never
            # covers less than its rows: should the insert stop halfway and the transaction
            # still commit, it covers more.
            cursor.execute(
                "INSERT INTO head_spans (first_row, last_row, min_ts_ms, max_ts_ms) "
                "SELECT coalesce(max(rowid), 0) + 1, coalesce(max(rowid), 0) + ?, ?, ? "
                "FROM samples_head",
                (count, least, greatest),
            )
            # The driver's own executemany reads the rows as it inserts them: no list of them
            # all beside the columns they are made from (SQLAlchemy's wants one).
            cursor.executemany(
                f"INSERT INTO samples_head ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                iter(rows),  # type: ignore[arg-type]  # sqlite3 takes any iterable
            )
        finally:
            cursor.close()

    def drop_block(self, conn: Connection, start_ms: int, end_ms: int) -> None:
        rowids, parameters = _rowids(start_ms, end_ms - 1)
        conn.exec_driver_sql(
            f"DELETE FROM samples_head WHERE {rowids} AND ts_ms >= ? AND ts_ms < ?",
            (*parameters, start_ms, end_ms),
        )
        # The block's spans go, and those that reach into it from one side no longer do; one
        # that holds it in the middle (rows before and after it) keeps its bounds.
        conn.exec_driver_sql(
            "DELETE FROM head_spans WHERE min_ts_ms >= ? AND max_ts_ms < ?", (start_ms, end_ms)
        )
        conn.exec_driver_sql(
            "UPDATE head_spans SET min_ts_ms = ? "
            "WHERE min_ts_ms >= ? AND min_ts_ms < ? AND max_ts_ms >= ?",
            (end_ms, start_ms, end_ms, end_ms),
        )
        conn.exec_driver_sql(
            "UPDATE head_spans SET max_ts_ms = ? "
            "WHERE max_ts_ms >= ? AND max_ts_ms < ? AND min_ts_ms < ?",
            (start_ms - 1, start_ms, end_ms, start_ms),
        )

    def forget(self) -> None:
        pass

    def cover_strays(self, engine: Engine) -> None:
        with engine.connect() as conn:
            strays = has_unspanned(conn)
        if strays:  # a read first: the write lock only when there is something to cover
            with engine.begin() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                cover_unspanned(conn)


def cover_unspanned(conn: Connection) -> None:
    """SQLite: a span for the rows past the last span's, if any: rows appended without one
    (by a release before migration 0009 still running beside a migrated file, or by hand)
    would be found by no read by time. A seek past the spans' greatest rowid, which finds
    nothing in the common case. Takes the file's write lock."""
    conn.exec_driver_sql(
        "INSERT INTO head_spans (first_row, last_row, min_ts_ms, max_ts_ms) "
        "SELECT min(rowid), max(rowid), min(ts_ms), max(ts_ms) FROM samples_head "
        "WHERE rowid > (SELECT coalesce(max(last_row), 0) FROM head_spans) "
        "HAVING count(*) > 0"
    )


def has_unspanned(conn: Connection) -> bool:
    """SQLite: whether rows lie past the last span's (``cover_unspanned`` would cover them)."""
    return bool(
        conn.exec_driver_sql(
            "SELECT EXISTS (SELECT 1 FROM samples_head "
            "WHERE rowid > (SELECT coalesce(max(last_row), 0) FROM head_spans))"
        ).scalar()
    )


def _time_bounds(rows: Rows) -> tuple[int, int]:
    """The least and greatest ``ts_ms`` of ``rows`` (not empty), a column at a time when they
    come as columns."""
    column_parts = getattr(rows, "column_parts", None)
    if column_parts is not None:
        columns = [columns[0] for columns in column_parts() if len(columns[0])]
        return min(int(np.min(ts)) for ts in columns), max(int(np.max(ts)) for ts in columns)
    timestamps = [row[0] for row in rows]
    return min(timestamps), max(timestamps)


def _rowids(low_ms: int | None, high_ms: int | None) -> tuple[str, tuple[int, ...]]:
    """SQLite: the condition (and its parameters) that keeps a statement on ``samples_head``
    to the rowids of the spans that may hold rows with ``low_ms <= ts_ms <= high_ms`` (either
    bound None: open); no span, no row."""
    where, parameters = _where((("max_ts_ms >= ?", low_ms), ("min_ts_ms <= ?", high_ms)))
    return (
        f"samples_head.rowid BETWEEN (SELECT min(first_row) FROM head_spans{where}) "
        f"AND (SELECT max(last_row) FROM head_spans{where})",
        (*parameters, *parameters),
    )


def in_time(dialect: str, low_ms: int | None, high_ms: int | None) -> ColumnElement[bool]:
    """The head rows with ``low_ms <= ts_ms <= high_ms`` (either bound None: open), for a
    statement on ``samples_head``: on SQLite kept to the rowids of the spans that may hold
    them (see the module's docstring), so the statement walks those rows, not the table."""
    h, spans = schema.samples_head, schema.head_spans
    conditions: list[ColumnElement[bool]] = []
    matching: list[ColumnElement[bool]] = []
    if low_ms is not None:
        conditions.append(h.c.ts_ms >= low_ms)
        matching.append(spans.c.max_ts_ms >= low_ms)
    if high_ms is not None:
        conditions.append(h.c.ts_ms <= high_ms)
        matching.append(spans.c.min_ts_ms <= high_ms)
    if dialect == "sqlite":
        rowid: ColumnElement[int] = literal_column("samples_head.rowid")
        first = select(func.min(spans.c.first_row)).where(*matching).scalar_subquery()
        last = select(func.max(spans.c.last_row)).where(*matching).scalar_subquery()
        conditions += [rowid >= first, rowid <= last]
    return and_(*conditions)


def partition_name(start_ms: int, end_ms: int) -> str:
    return f"samples_head_{start_ms}_{end_ms}"


class PostgresHead:
    def __init__(self, block_ms: int):
        self.block_ms = block_ms
        self._known: set[int] = set()

    def append(self, conn: Connection, rows: Rows) -> None:
        parts = [(_int64(columns[0], 0), columns) for columns in _column_parts(rows)]
        blocks: set[int] = set()
        for ts, _columns in parts:
            blocks.update(np.unique(ts - ts % self.block_ms).tolist())
        for start in blocks - self._known:
            self._ensure_partition(conn, start)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(f"COPY samples_head ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(_COPY_SIGNATURE)
                for ts, columns in parts:
                    for start in range(0, len(ts), _COPY_PART_ROWS):
                        end = start + _COPY_PART_ROWS
                        rest = [column[start:end] for column in columns[1:]]
                        copy.write(_encoded(ts[start:end], rest))
                copy.write(_COPY_TRAILER)
        finally:
            cursor.close()

    def _ensure_partition(self, conn: Connection, start: int) -> None:
        end = start + self.block_ms
        name = partition_name(start, end)
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(
                f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF samples_head '
                f"FOR VALUES FROM ({start}) TO ({end})"
            )
            savepoint.commit()
        except SQLAlchemyError as exc:
            # Overlapping bounds (the block size changed) or rows of this block already in the
            # DEFAULT partition (a late sample after compaction): the DEFAULT one takes them.
            savepoint.rollback()
            log.debug("head partition %s not created, using the default one: %s", name, exc)
        self._known.add(start)

    def forget(self) -> None:
        # A partition created in a transaction that rolled back is gone: without this, every
        # later sample of its block would go to the DEFAULT partition.
        self._known.clear()

    def cover_strays(self, engine: Engine) -> None:
        pass

    def drop_block(self, conn: Connection, start_ms: int, end_ms: int) -> None:
        name = partition_name(start_ms, end_ms)
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
        self._known.discard(start_ms)
        conn.exec_driver_sql(
            "DELETE FROM samples_head WHERE ts_ms >= %s AND ts_ms < %s", (start_ms, end_ms)
        )


# PostgreSQL's binary COPY format: a signature, each row as its field count and each field as
# its length and big-endian value, a trailer. Made with numpy, a column at a time: writing the
# rows one by one through psycopg took 0.2 s of a steady poll's 0.4 s write at 150,000 pods.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # no flags, no header extension
_COPY_TRAILER = b"\xff\xff"
_COPY_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("ts_len", ">i4"),
        ("ts", ">i8"),
        ("sid_len", ">i4"),
        ("sid", ">i4"),
        ("window_len", ">i4"),
        ("window", ">i4"),
        ("cpu_len", ">i4"),
        ("cpu", ">i8"),
        ("memory_len", ">i4"),
        ("memory", ">i8"),
    ]
)
_COPY_PART_ROWS = 50_000
"""Rows encoded into one piece of the COPY stream at a time (2.7 MB, and their columns as
arrays: 2 MB)."""
_INT4 = (-(2**31), 2**31 - 1)
_INT8 = (-(2**63), 2**63 - 1)
_NAMES = ("ts_ms", "series_id", "window_ms", "cpu_nanocores", "memory_bytes")
_RANGES = (_INT8, _INT4, _INT4, _INT8, _INT8)


def _column_parts(rows: Rows) -> list[Columns]:
    """``rows`` as parts of columns, none empty (``HeadRows`` has them; a list is one part)."""
    column_parts = getattr(rows, "column_parts", None)
    if column_parts is not None:
        return [columns for columns in column_parts() if len(columns[0])]
    return [cast(Columns, tuple(zip(*rows, strict=True)))] if len(rows) else []


def _int64(column: Column, index: int) -> npt.NDArray[np.int64]:
    """``column`` (the ``index``-th of the head's) as an array, refused as the database refuses
    content (the writer isolates the row) when a value does not fit the column's type:
    psycopg's own binary int4 wrapped 2**31 around to -2**31 silently."""
    low, high = _RANGES[index]
    try:
        array = np.asarray(column, dtype=np.int64)
    except OverflowError:
        array = None
    if array is None or int(array.min()) < low or int(array.max()) > high:
        from psycopg.errors import NumericValueOutOfRange  # (PostgreSQL only: imported then)

        raise NumericValueOutOfRange(
            f"a value of {_NAMES[index]} is out of its column's range ({low} to {high})"
        )
    return array


def _encoded(ts: npt.NDArray[np.int64], rest: Sequence[Column]) -> bytes:
    """Head rows given as columns (``ts_ms`` checked already, then the others), in the COPY
    format's binary rows."""
    rows = np.empty(len(ts), _COPY_ROW)
    rows["fields"] = 5
    rows["ts_len"], rows["cpu_len"], rows["memory_len"] = 8, 8, 8
    rows["sid_len"], rows["window_len"] = 4, 4
    rows["ts"] = ts
    for index, field in enumerate(("sid", "window", "cpu", "memory"), start=1):
        rows[field] = _int64(rest[index - 1], index)
    return rows.tobytes()


def read(
    conn: Connection, series_ids: Sequence[int], start_ms: int, end_ms: int
) -> Generator[tuple[int, SampleRow], None, None]:
    """Head rows of some series with ``start_ms <= ts_ms <= end_ms`` as ``(series id, (ts_ms,
    window_ms, cpu_nanocores, memory_bytes))``, ordered by series and time. Exact duplicates are
    all returned: the reader collapses them by the one rule (``recorder.stats.dedup``).

    One statement whatever the number of series, the ids passed as one parameter (a JSON
    array on SQLite, an array on PostgreSQL): the head is found by time only, so every
    statement walks the whole time range, and batches of ids walked it once per batch (30 times for
    30,000 series: 6.7 s of a 8.9 s query on SQLite)."""
    if not series_ids:
        return
    if conn.dialect.name == "sqlite":
        rowids, bounds = _rowids(start_ms, end_ms)
        statement = (
            f"SELECT series_id, {_SAMPLE_COLUMNS} FROM samples_head WHERE {rowids} "
            "AND ts_ms >= ? AND ts_ms <= ? AND series_id IN (SELECT value FROM json_each(?)) "
            "ORDER BY series_id, ts_ms"
        )
        ids: object = json.dumps([int(sid) for sid in series_ids])
        parameters: tuple[object, ...] = (*bounds, start_ms, end_ms, ids)
    else:
        statement = (
            f"SELECT series_id, {_SAMPLE_COLUMNS} FROM samples_head "
            "WHERE ts_ms >= %s AND ts_ms <= %s AND series_id = ANY(%s) "
            "ORDER BY series_id, ts_ms"
        )
        parameters = (start_ms, end_ms, [int(sid) for sid in series_ids])
    # Streamed in slices (a server-side cursor on PostgreSQL): a raw query may read hundreds
    # of thousands of rows, and the driver would otherwise hold them all at once.
    rows = conn.exec_driver_sql(
        statement, parameters, execution_options={"stream_results": True, "max_row_buffer": 5000}
    )
    try:
        for series_id, ts, window, cpu, memory in rows:
            yield series_id, (ts, window, cpu, memory)
    finally:  # a reader that stops early (a query refused at its limit) closes the cursor
        rows.close()


def oldest(conn: Connection) -> int | None:
    """A lower bound of the oldest head row's timestamp, None when the head is empty (a cache
    horizon only needs a bound). On SQLite the least timestamp of the oldest span holding a
    row; on PostgreSQL the start of the oldest partition holding a row, or the DEFAULT
    partition's oldest row when older (a BRIN index cannot give the least timestamp without
    reading the partition)."""
    if conn.dialect.name != "postgresql":
        return _oldest_span(conn)
    bounds = [_default_min(conn, None, None)]
    for start, end in _partitions(conn):
        if _holds_rows(conn, start, end):
            bounds.append(start)
            break
    known = [bound for bound in bounds if bound is not None]
    return min(known) if known else None


def first_block(
    conn: Connection, block_ms: int, before_ms: int, from_ms: int | None = None
) -> int | None:
    """The start of the first block (of ``block_ms``) that holds a head row with
    ``from_ms <= ts_ms < before_ms``, None when none does. On SQLite from the spans: the
    block of the least timestamp they may hold, asked whether it holds a row, else the next.
    On PostgreSQL from the partitions:
    one of exactly one block inside the range is asked only whether it holds a row; another
    (the block size changed) and the DEFAULT partition are asked their least timestamp in the
    range."""
    if conn.dialect.name != "postgresql":
        return _first_block_of_spans(conn, block_ms, before_ms, from_ms)
    starts: list[int] = []
    least = _default_min(conn, before_ms, from_ms)
    if least is not None:
        starts.append(floor_to(least, block_ms))
    for start, end in _partitions(conn):
        if (from_ms is not None and end <= from_ms) or start >= before_ms:
            continue
        whole = (
            start % block_ms == 0
            and end - start == block_ms
            and (from_ms is None or from_ms <= start)
            and end <= before_ms
        )
        if whole:
            if _holds_rows(conn, start, end):
                starts.append(start)
                break
            continue
        least = conn.exec_driver_sql(
            "SELECT min(ts_ms) FROM samples_head WHERE ts_ms >= %s AND ts_ms < %s",
            (start if from_ms is None else max(start, from_ms), min(end, before_ms)),
        ).scalar()
        if least is not None:
            starts.append(floor_to(int(least), block_ms))
            break  # partitions do not overlap: a later one's rows are all later
    return min(starts) if starts else None


def _first_block_of_spans(
    conn: Connection, block_ms: int, before_ms: int, from_ms: int | None
) -> int | None:
    """``first_block`` on SQLite. A block the spans reach may hold no row (its rows deleted
    with their series, or a span that holds rows on both sides of it): the next block the
    spans reach is asked then, so the loop ends after at most one question per block."""
    after = from_ms
    while True:
        if after is None:
            least = conn.exec_driver_sql(
                "SELECT min(min_ts_ms) FROM head_spans WHERE min_ts_ms < ?", (before_ms,)
            ).scalar()
        else:
            least = conn.exec_driver_sql(
                "SELECT min(max(min_ts_ms, ?)) FROM head_spans "
                "WHERE max_ts_ms >= ? AND min_ts_ms < ?",
                (after, after, before_ms),
            ).scalar()
        if least is None or int(least) >= before_ms:
            return None
        start = floor_to(int(least), block_ms)
        low = start if after is None else max(start, after)
        high = min(start + block_ms, before_ms) - 1
        if _holds_rows_in(conn, low, high):
            return start
        after = start + block_ms


def _oldest_span(conn: Connection) -> int | None:
    """``oldest`` on SQLite: the least timestamp of the oldest span that holds a row."""
    spans = conn.exec_driver_sql(
        "SELECT first_row, last_row, min_ts_ms, max_ts_ms FROM head_spans ORDER BY min_ts_ms"
    ).all()
    for first, last, least, greatest in spans:
        held = conn.exec_driver_sql(
            "SELECT EXISTS (SELECT 1 FROM samples_head WHERE rowid BETWEEN ? AND ? "
            "AND ts_ms >= ? AND ts_ms <= ?)",
            (first, last, least, greatest),
        ).scalar()
        if held:
            return int(least)
    return None


def _holds_rows_in(conn: Connection, low_ms: int, high_ms: int) -> bool:
    """SQLite: whether the head holds a row with ``low_ms <= ts_ms <= high_ms``."""
    rowids, parameters = _rowids(low_ms, high_ms)
    return bool(
        conn.exec_driver_sql(
            f"SELECT EXISTS (SELECT 1 FROM samples_head WHERE {rowids} "
            "AND ts_ms >= ? AND ts_ms <= ?)",
            (*parameters, low_ms, high_ms),
        ).scalar()
    )


def prune_spans(conn: Connection) -> int:
    """SQLite: delete the spans whose rowids hold no row any more (rows deleted by series,
    not by time); how many. Each is asked by its rowid range: a seek, not a scan."""
    if conn.dialect.name != "sqlite":
        return 0
    return conn.exec_driver_sql(
        "DELETE FROM head_spans WHERE NOT EXISTS (SELECT 1 FROM samples_head "
        "WHERE samples_head.rowid BETWEEN head_spans.first_row AND head_spans.last_row)"
    ).rowcount


DEFAULT_PARTITION = "samples_head_default"
_PARTITION_NAME = re.compile(r"samples_head_(-?\d+)_(-?\d+)")


def _partitions(conn: Connection) -> list[tuple[int, int]]:
    """The bounds (start, end) of the head's block partitions (PostgreSQL), oldest first."""
    names = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'samples_head'::regclass"
    ).scalars()
    found = []
    for name in names:
        matched = _PARTITION_NAME.fullmatch(str(name))
        if matched is not None:
            found.append((int(matched[1]), int(matched[2])))
    return sorted(found)


def _holds_rows(conn: Connection, start: int, end: int) -> bool:
    """Whether the head holds a row in [start, end): asked of the partitioned table, which
    the planner prunes to that partition, so a partition dropped meanwhile (compaction in
    another process) answers no instead of failing the statement."""
    return bool(
        conn.exec_driver_sql(
            "SELECT EXISTS (SELECT 1 FROM samples_head WHERE ts_ms >= %s AND ts_ms < %s)",
            (start, end),
        ).scalar()
    )


def _default_min(conn: Connection, before_ms: int | None, from_ms: int | None) -> int | None:
    """The least timestamp in the DEFAULT partition (late rows of blocks already compacted,
    or of a block whose partition could not be made: few), within the bounds given."""
    where, parameters = _where((("ts_ms < %s", before_ms), ("ts_ms >= %s", from_ms)))
    found = conn.exec_driver_sql(
        f"SELECT min(ts_ms) FROM {DEFAULT_PARTITION}{where}", parameters
    ).scalar()
    return None if found is None else int(found)


def _where(bounds: Sequence[tuple[str, int | None]]) -> tuple[str, tuple[int, ...]]:
    """A WHERE clause of the conditions whose bound is given (none: no clause), and their
    parameters in order."""
    given = [(condition, bound) for condition, bound in bounds if bound is not None]
    if not given:
        return "", ()
    return (
        f" WHERE {' AND '.join(condition for condition, _ in given)}",
        tuple(bound for _, bound in given),
    )
