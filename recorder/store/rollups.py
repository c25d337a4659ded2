"""Day-level rollups: each series' chunk statistics of one UTC day merged into one row.

A long-range statistics query (a 7-day summary, a 30-day p95 at a 1-day step) reads one row per
series per day instead of one per block. Rollups are built by maintenance for every closed day
(all of whose blocks are compacted) and rebuilt for a day whenever compaction adds a late block
to it, so they always agree with the chunks they summarize.

Namespace rollups merge a day's rollups once more, per cluster, kind and namespace: how many
rollups, their samples, and the merge of their sketches. A 7-day namespace summary of 200,000
series then merges ~7 sketches per namespace instead of 2.8 million (what each series adds up
to over the window, for the integral and the coverage, comes from ``read_totals``). They are
built from the stored rollups in the transaction that (re)builds the day's; days rolled up
before they existed (or whose rows something else wrote, such as ``recorder copy``) get
theirs a few days per round, newest first, and a day's are dropped with its last rollup.
Readers check the counts against the rollups they add up (``recorder.query.groups``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, delete, func, insert, select

from recorder.stats import block
from recorder.stats.block import BlockStats
from recorder.stats.quantiles import merged_sketches
from recorder.store import chunks, schema
from recorder.timeutil import DAY_MS, floor_to

_BATCH = 2_000
BACKFILL_DAYS = 7
"""Days rolled up without namespace rollups that one ``build`` gives theirs (newest first)."""


def day_of(ts_ms: int) -> int:
    return floor_to(ts_ms, DAY_MS)


def watermark(conn: Connection) -> int | None:
    """The first day not rolled up yet (every closed day before it has its rollups)."""
    newest = conn.execute(select(func.max(schema.rollups.c.day_start_ms))).scalar()
    return None if newest is None else int(newest) + DAY_MS


def build(
    engine: Engine,
    closed_before_ms: int,
    late_blocks: Iterable[int],
    *,
    backfill_days: int = BACKFILL_DAYS,
) -> int:
    """Roll up every closed day from the watermark on, and the earlier days that got late
    blocks, each with its namespace rollups; then drop the namespace rollups of days without
    rollups left and give up to ``backfill_days`` rolled-up days without namespace rollups
    theirs. Returns how many days with data were (re)built."""
    built = 0
    for day in _days_to_build(engine, closed_before_ms, late_blocks):
        with engine.begin() as conn:
            conn.execute(delete(schema.rollups).where(schema.rollups.c.day_start_ms == day))
            rows = list(_merged(conn, day))
            for start in range(0, len(rows), _BATCH):
                conn.execute(insert(schema.rollups), rows[start : start + _BATCH])
            build_namespaces(conn, day)
        built += bool(rows)
    _tidy_namespaces(engine, backfill_days)
    return built


def _days_to_build(engine: Engine, closed_before_ms: int, late_blocks: Iterable[int]) -> list[int]:
    c = schema.chunks
    with engine.connect() as conn:
        mark = watermark(conn)
        oldest = conn.execute(select(func.min(c.c.block_start_ms))).scalar()
    if oldest is None:
        return []
    first = mark if mark is not None else day_of(int(oldest))
    last_closed = day_of(closed_before_ms)  # days ending at or before this are complete
    days = set(range(first, last_closed, DAY_MS))
    days |= {day_of(start) for start in late_blocks if day_of(start) < first}
    return sorted(days)


@dataclass
class _Namespace:
    series: int = 0
    samples: int = 0
    cpu: list[bytes] = field(default_factory=list)
    memory: list[bytes] = field(default_factory=list)


def build_namespaces(conn: Connection, day: int) -> int:
    """(Re)build the namespace rollups of ``day`` from its stored rollups; returns how many
    namespace rows it wrote. Merging sketches is exact and does not depend on the order
    (``QuantileSketch``): the merge is that of every rollup's sketch (``merged_sketches``)."""
    n, r, s = schema.namespace_rollups, schema.rollups, schema.series
    conn.execute(delete(n).where(n.c.day_start_ms == day))
    found: dict[tuple[str, str, str], _Namespace] = {}
    rows = conn.execute(
        select(s.c.cluster, s.c.kind, s.c.namespace, r.c.count, r.c.cpu_sketch, r.c.memory_sketch)
        .join(s, s.c.id == r.c.series_id)
        .where(r.c.day_start_ms == day)
    )
    for cluster, kind, namespace, count, cpu, memory in rows:
        key = (cluster, kind, namespace)
        merged = found.get(key)
        if merged is None:
            merged = found[key] = _Namespace()
        merged.series += 1
        merged.samples += count
        merged.cpu.append(cpu)
        merged.memory.append(memory)
    cpu_sketches = merged_sketches([merged.cpu for merged in found.values()])
    memory_sketches = merged_sketches([merged.memory for merged in found.values()])
    out = [
        {
            "cluster": cluster,
            "kind": kind,
            "namespace": namespace,
            "day_start_ms": day,
            "series": merged.series,
            "count": merged.samples,
            "cpu_sketch": cpu,
            "memory_sketch": memory,
        }
        for ((cluster, kind, namespace), merged), cpu, memory in zip(
            found.items(), cpu_sketches, memory_sketches, strict=True
        )
    ]
    for start in range(0, len(out), _BATCH):
        conn.execute(insert(n), out[start : start + _BATCH])
    return len(out)


def _tidy_namespaces(engine: Engine, backfill_days: int) -> None:
    """Namespace rollups of days before the oldest rollup go (retention dropped the days);
    up to ``backfill_days`` rolled-up days without any get theirs, newest first."""
    n, r = schema.namespace_rollups, schema.rollups
    with engine.begin() as conn:
        oldest = conn.execute(select(func.min(r.c.day_start_ms))).scalar()
        if oldest is None:
            conn.execute(delete(n))
            return
        conn.execute(delete(n).where(n.c.day_start_ms < oldest))
    if backfill_days <= 0:
        return
    with engine.connect() as conn:
        done = set(conn.execute(select(n.c.day_start_ms).distinct()).scalars())
        missing: list[int] = []
        day = conn.execute(select(func.max(r.c.day_start_ms))).scalar()
        # Day by day down the rollups' day index: one seek per day.
        while day is not None and len(missing) < backfill_days:
            if day not in done:
                missing.append(int(day))
            day = conn.execute(
                select(func.max(r.c.day_start_ms)).where(r.c.day_start_ms < day)
            ).scalar()
    for day in missing:
        with engine.begin() as conn:
            build_namespaces(conn, day)


def _merged(conn: Connection, day: int) -> Iterator[dict[str, Any]]:
    c = schema.chunks
    rows = conn.execute(
        select(c.c.series_id, *(c.c[name] for name in block.COLUMNS))
        .where(c.c.block_start_ms >= day, c.c.block_start_ms < day + DAY_MS)
        .order_by(c.c.series_id, c.c.block_start_ms)
    )
    for series_id, group in groupby(rows, key=lambda row: row.series_id):
        merged = block.merge(BlockStats.from_values(values) for _sid, *values in group)
        yield {"series_id": series_id, "day_start_ms": day, **merged.to_columns()}


def read_rows(
    conn: Connection,
    series_ids: Sequence[int],
    first_day_ms: int,
    end_day_ms: int,
    names: Sequence[str],
) -> list[tuple[Any, ...]]:
    """``read`` as rows ``(series id, day start, *names)``."""
    wanted = ", ".join(names)
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(series_ids), 1000):
        rows += chunks.fetch_rows(
            conn,
            f"SELECT series_id, day_start_ms, {wanted} FROM rollups "
            f"WHERE series_id IN ({chunks.id_list(series_ids[start : start + 1000])}) "
            f"AND day_start_ms >= {int(first_day_ms)} AND day_start_ms < {int(end_day_ms)}",
        )
    return rows


def read(
    conn: Connection, series_ids: Sequence[int], first_day_ms: int, end_day_ms: int
) -> Iterator[tuple[int, int, BlockStats]]:
    """``(series id, day start, statistics)`` of the rolled-up days in ``[first, end)``."""
    r = schema.rollups
    for start in range(0, len(series_ids), 1000):
        rows = conn.execute(
            select(r.c.series_id, r.c.day_start_ms, *(r.c[name] for name in block.COLUMNS))
            .where(r.c.series_id.in_(series_ids[start : start + 1000]))
            .where(r.c.day_start_ms >= first_day_ms, r.c.day_start_ms < end_day_ms)
        )
        for series_id, day_start_ms, *values in rows:
            yield series_id, day_start_ms, BlockStats.from_values(values)


class SeriesTotals(NamedTuple):
    """A series' rollups over some days added up: how many, their samples, first and last
    timestamps, smallest interval (0: none), and each resource's exact sum and maximum."""

    series_id: int
    rollups: int
    samples: int
    first_ms: int
    last_ms: int
    interval_ms: int
    cpu_total: int
    cpu_max: int
    memory_total: int
    memory_max: int


_TOTALS = (
    "COUNT(*), SUM(count), MIN(first_ms), MAX(last_ms), "
    "MIN(CASE WHEN interval_ms > 0 THEN interval_ms END), "
    # Each sum in two halves that cannot overflow (SQLite's SUM raises past 64 bits).
    "SUM(cpu_sum >> 32), SUM(cpu_sum & 4294967295), MAX(cpu_max), "
    "SUM(memory_sum >> 32), SUM(memory_sum & 4294967295), MAX(memory_max)"
)


def read_totals(
    conn: Connection, series_ids: Sequence[int], first_day_ms: int, end_day_ms: int
) -> list[SeriesTotals]:
    """The totals of each of ``series_ids`` that has rollups in ``[first, end)``, added up by
    the database (no sketch is read)."""
    out: list[SeriesTotals] = []
    for start in range(0, len(series_ids), 1000):
        rows = chunks.fetch_rows(
            conn,
            f"SELECT series_id, {_TOTALS} FROM rollups "
            f"WHERE series_id IN ({chunks.id_list(series_ids[start : start + 1000])}) "
            f"AND day_start_ms >= {int(first_day_ms)} AND day_start_ms < {int(end_day_ms)} "
            "GROUP BY series_id",
        )
        out += [
            SeriesTotals(
                sid,
                int(rollups),
                int(count),
                first_ms,
                last_ms,
                interval_ms or 0,
                (int(cpu_high) << 32) + int(cpu_low),
                cpu_max,
                (int(memory_high) << 32) + int(memory_low),
                memory_max,
            )
            for (
                sid,
                rollups,
                count,
                first_ms,
                last_ms,
                interval_ms,
                cpu_high,
                cpu_low,
                cpu_max,
                memory_high,
                memory_low,
                memory_max,
            ) in rows
        ]
    return out


class NamespaceRow(NamedTuple):
    cluster: str
    namespace: str
    series: int
    samples: int
    cpu_sketch: bytes
    memory_sketch: bytes


def read_namespaces(
    conn: Connection,
    kind: str,
    first_day_ms: int,
    end_day_ms: int,
    *,
    cluster: str | None = None,
    namespace: str | None = None,
) -> list[NamespaceRow]:
    """The namespace rollups of ``kind`` in ``[first, end)``, of one cluster or namespace when
    given, one per namespace and day."""
    n = schema.namespace_rollups
    statement = select(
        n.c.cluster, n.c.namespace, n.c.series, n.c.count, n.c.cpu_sketch, n.c.memory_sketch
    ).where(n.c.kind == kind, n.c.day_start_ms >= first_day_ms, n.c.day_start_ms < end_day_ms)
    if cluster is not None:
        statement = statement.where(n.c.cluster == cluster)
    if namespace is not None:
        statement = statement.where(n.c.namespace == namespace)
    return [
        NamespaceRow(c, ns, int(series), int(count), bytes(cpu), bytes(memory))
        for c, ns, series, count, cpu, memory in conn.execute(statement)
    ]
