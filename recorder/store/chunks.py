"""Reads of the chunk tier: each series' block statistics, and its decoded samples."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, func, select

from recorder.stats import block
from recorder.stats.block import BlockStats
from recorder.stats.codec import ChunkSamples, decode_samples
from recorder.store import schema

_IDS = 1000


@dataclass(frozen=True, slots=True)
class StoredChunk:
    series_id: int
    block_start_ms: int
    stats: BlockStats
    has_payload: bool
    """False once full-resolution retention has dropped the samples (and always for a pod)."""


def read_stats(
    conn: Connection,
    series_ids: Sequence[int],
    start_ms: int,
    end_ms: int,
    *,
    block_ms: int,
    skip: tuple[int, int] | None = None,
) -> Iterator[StoredChunk]:
    """The statistics of every chunk of ``series_ids`` with samples in ``[start_ms, end_ms]``,
    except blocks starting in ``skip`` (``[first, end)``: days that rollups answer)."""
    c = schema.chunks
    # Blocks that may hold samples of the range, as [low, high) bounds of their start, without
    # the skipped days: two plain ranges the block index bounds, not one range with a hole.
    spans = [(start_ms - block_ms + 1, end_ms + 1)]
    if skip is not None:
        spans = [(spans[0][0], skip[0]), (skip[1], spans[0][1])]
    for low, high in spans:
        if low >= high:
            continue
        for start in range(0, len(series_ids), _IDS):
            statement = (
                select(
                    c.c.series_id,
                    c.c.block_start_ms,
                    c.c.payload.is_not(None).label("has_payload"),
                    *(c.c[name] for name in block.COLUMNS),
                )
                .where(c.c.series_id.in_(series_ids[start : start + _IDS]))
                .where(c.c.block_start_ms >= low, c.c.block_start_ms < high)
                .where(c.c.last_ms >= start_ms, c.c.first_ms <= end_ms)
            )
            for series_id, block_start_ms, has_payload, *values in conn.execute(statement):
                yield StoredChunk(
                    series_id, block_start_ms, BlockStats.from_values(values), bool(has_payload)
                )


def fetch_rows(conn: Connection, sql: str) -> list[tuple[Any, ...]]:
    """Every row of ``sql`` as plain tuples, from the driver's cursor (no result processing:
    a 200,000-series summary reads over a million rows). ``sql`` must hold no parameters."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    # sqlite3 and psycopg make tuples already (copying 1.4 million of them took 0.3 s).
    if isinstance(rows, list) and all(type(row) is tuple for row in rows[:1]):
        return cast(list[tuple[Any, ...]], rows)
    return [tuple(row) for row in rows]


def id_list(series_ids: Sequence[int]) -> str:
    """``series_ids`` as an SQL list: integers only, so nothing can be injected."""
    return ", ".join(str(int(sid)) for sid in series_ids)


def read_stats_rows(
    conn: Connection,
    series_ids: Sequence[int],
    start_ms: int,
    end_ms: int,
    names: Sequence[str],
    *,
    block_ms: int,
    skip: tuple[int, int] | None = None,
) -> list[tuple[Any, ...]]:
    """``read_stats`` as rows ``(series id, block start, has payload, *names)``."""
    spans = [(start_ms - block_ms + 1, end_ms + 1)]
    if skip is not None:
        spans = [(spans[0][0], skip[0]), (skip[1], spans[0][1])]
    wanted = ", ".join(names)
    rows: list[tuple[Any, ...]] = []
    for low, high in spans:
        if low >= high:
            continue
        for start in range(0, len(series_ids), _IDS):
            rows += fetch_rows(
                conn,
                f"SELECT series_id, block_start_ms, payload IS NOT NULL, {wanted} FROM chunks "
                f"WHERE series_id IN ({id_list(series_ids[start : start + _IDS])}) "
                f"AND block_start_ms >= {int(low)} AND block_start_ms < {int(high)} "
                f"AND last_ms >= {int(start_ms)} AND first_ms <= {int(end_ms)}",
            )
    return rows


def read_samples(
    conn: Connection, wanted: Sequence[tuple[int, int]]
) -> Iterator[tuple[int, int, ChunkSamples]]:
    """``(series id, block start, samples)`` of the given chunks that still have samples. Read
    a block at a time (``block_start_ms = ? AND series_id IN (...)``, both keys of the primary
    key; a row-value IN of thousands of pairs, a kind=pod history's edge blocks, is not)."""
    c = schema.chunks
    by_block: dict[int, list[int]] = {}
    for series_id, block_start in wanted:
        by_block.setdefault(block_start, []).append(series_id)
    for block_start, ids in sorted(by_block.items()):
        for start in range(0, len(ids), _IDS):
            rows = conn.execute(
                select(c.c.series_id, c.c.block_start_ms, c.c.payload)
                .where(c.c.block_start_ms == block_start)
                .where(c.c.series_id.in_(ids[start : start + _IDS]))
                .where(c.c.payload.is_not(None))
            )
            for series_id, found_start, payload in rows:
                yield series_id, found_start, decode_samples(payload)


def read_samples_in_range(
    conn: Connection, series_ids: Sequence[int], start_ms: int, end_ms: int, *, block_ms: int
) -> Iterator[tuple[int, int, ChunkSamples]]:
    """``(series id, block start, samples)`` of every chunk of ``series_ids`` with samples
    in ``[start_ms, end_ms]`` that still has them (blocks past full-resolution retention have
    only statistics)."""
    for series_id, block_start, payload in read_payloads_in_range(
        conn, series_ids, start_ms, end_ms, block_ms=block_ms
    ):
        yield series_id, block_start, decode_samples(payload)


def read_payloads_in_range(
    conn: Connection, series_ids: Sequence[int], start_ms: int, end_ms: int, *, block_ms: int
) -> list[tuple[int, int, bytes]]:
    """``read_samples_in_range``'s chunks undecoded, by series and block start."""
    c = schema.chunks
    found: list[tuple[int, int, bytes]] = []
    for start in range(0, len(series_ids), _IDS):
        rows = conn.execute(
            select(c.c.series_id, c.c.block_start_ms, c.c.payload)
            .where(c.c.series_id.in_(series_ids[start : start + _IDS]))
            .where(c.c.block_start_ms > start_ms - block_ms, c.c.block_start_ms <= end_ms)
            .where(c.c.last_ms >= start_ms, c.c.first_ms <= end_ms)
            .where(c.c.payload.is_not(None))
            .order_by(c.c.series_id, c.c.block_start_ms)
        )
        found += [(series_id, block_start, payload) for series_id, block_start, payload in rows]
    return found


def expired(conn: Connection, block_starts: Sequence[int]) -> set[tuple[int, int]]:
    """``(series id, block start)`` of the chunks of these blocks whose samples have expired:
    a late sample there can no longer be told from a duplicate, and compaction drops it. Read
    through the block index (the blocks a query's head rows fall in are few, and recent ones
    have no expired chunk)."""
    c = schema.chunks
    rows = conn.execute(
        select(c.c.series_id, c.c.block_start_ms)
        .where(c.c.block_start_ms.in_(list(block_starts)))
        .where(c.c.payload.is_(None))
    )
    return {(series_id, block_start) for series_id, block_start in rows}


def any_expired(conn: Connection, series_ids: Sequence[int], start_ms: int, end_ms: int) -> bool:
    """Whether a chunk of ``series_ids`` with samples in ``[start_ms, end_ms]`` has lost its
    samples (only its statistics are left)."""
    for start in range(0, len(series_ids), _IDS):
        ids = id_list(series_ids[start : start + _IDS])
        found = fetch_rows(
            conn,
            f"SELECT 1 FROM chunks WHERE series_id IN ({ids}) "
            f"AND block_start_ms <= {int(end_ms)} AND last_ms >= {int(start_ms)} "
            "AND payload IS NULL LIMIT 1",
        )
        if found:
            return True
    return False


def block_span(conn: Connection) -> tuple[int | None, int | None]:
    """The newest and the oldest block start of any chunk (through the block index)."""
    c = schema.chunks
    newest, oldest = conn.execute(
        select(func.max(c.c.block_start_ms), func.min(c.c.block_start_ms))
    ).one()
    return (
        None if newest is None else int(newest),
        None if oldest is None else int(oldest),
    )
