"""Reads of the series dictionary: which series match a filter, with their pods' labels, and
the newest head timestamp of each."""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, func, select

from recorder.domain import Kind, SeriesFilter
from recorder.store import head, schema


@dataclass(frozen=True, slots=True)
class Series:
    id: int
    kind: Kind
    cluster: str
    node: str
    namespace: str
    pod: str
    container: str
    first_seen_ms: int
    last_seen_ms: int
    """Newest timestamp moved into chunks (head rows may be newer)."""
    pod_labels: Mapping[str, str] | None


def select_series(
    conn: Connection, kinds: Sequence[Kind], where: SeriesFilter
) -> dict[int, Series]:
    """The stored series of ``kinds`` matching every filter of ``where`` (its ``kind`` aside;
    the selector on pod labels), by id in id order."""
    return {series.id: series for series in iter_series(conn, kinds, where)}


ITER_BATCH_ROWS = 2_000
"""Rows fetched at a time by a streamed ``iter_series`` (PostgreSQL: a server-side cursor's
batch)."""
STREAMED_SHARED = 4_096
"""Most pods' labels a streamed ``iter_series`` keeps parsed for its series to share (and
four times as many names)."""


def series_statement(kinds: Sequence[Kind], where: SeriesFilter) -> Select[Any]:
    """What ``iter_series`` reads: the series of ``kinds`` matching the names of ``where``
    (not its selector), with their pods' labels, in id order. A namespace, pod or container
    is looked up in the series' (namespace, pod, container) index, not by reading them all.
    """
    s, pl = schema.series, schema.pod_labels
    statement = (
        select(
            s.c.id,
            s.c.kind,
            s.c.cluster,
            s.c.node,
            s.c.namespace,
            s.c.pod,
            s.c.container,
            s.c.first_seen_ms,
            s.c.last_seen_ms,
            pl.c.labels_json,
        )
        .outerjoin(
            pl,
            (pl.c.cluster == s.c.cluster)
            & (pl.c.namespace == s.c.namespace)
            & (pl.c.pod == s.c.pod),
        )
        .where(s.c.kind.in_([kind.value for kind in kinds]))
        .order_by(s.c.id)
    )
    for name in ("cluster", "node", "namespace", "pod", "container"):
        wanted = getattr(where, name)
        if wanted is not None:
            statement = statement.where(s.c[name] == wanted)
    if where.namespaces is not None:
        statement = statement.where(s.c.namespace.in_(sorted(where.namespaces)))
    return statement


def iter_series(
    conn: Connection,
    kinds: Sequence[Kind],
    where: SeriesFilter,
    *,
    streamed: bool = False,
) -> Generator[Series, None, None]:
    """``select_series`` one series at a time, in id order. ``streamed``: read as they are
    iterated, for a caller that lets go of each slice and so holds one slice of them (77,000
    series of a namespace are about 40 MB as objects): the rows are fetched
    ``ITER_BATCH_ROWS`` at a time (a server-side cursor on PostgreSQL), the labels and names
    the series share are bounded (``STREAMED_SHARED``), and the caller may run other
    statements on ``conn`` between two series. Close it (``contextlib.closing``) before
    ``conn`` if it is left unfinished. Not streamed, the rows are read at once (what a
    caller keeping every series wants: one round trip, the planner's plan for all rows)."""
    statement = series_statement(kinds, where)
    if streamed:
        statement = statement.execution_options(yield_per=ITER_BATCH_ROWS)
    kinds_by_value = {kind.value: kind for kind in Kind}
    # A pod's labels are one JSON text beside each of its series: parsed once per text (and
    # shared, read-only, by the pod's series).
    parsed: dict[str, Mapping[str, str]] = {}
    # The driver makes a new string per row and column: one object per distinct name instead
    # (77,000 series of one namespace held about 20 MB of equal copies of a few names).
    # Both are bounded when the caller does not keep every series: pods' names are distinct.
    names = {"": ""}
    same = names.setdefault
    selector = where.selector
    with conn.execute(statement) as rows:
        for sid, kind, cluster, node, namespace, pod, container, first, last, text in rows:
            labels: Mapping[str, str] | None = None
            if text is not None:
                labels = parsed.get(text)
                if labels is None:
                    if streamed and len(parsed) >= STREAMED_SHARED:
                        parsed.clear()
                    labels = parsed[text] = json.loads(text)
            if streamed and len(names) >= 4 * STREAMED_SHARED:
                names.clear()
            if selector is not None and not selector.matches(labels or {}):
                continue
            yield Series(
                sid,
                kinds_by_value[kind],
                same(cluster, cluster),
                same(node, node),
                same(namespace, namespace),
                same(pod, pod),
                same(container, container),
                first,
                last,
                labels,
            )


def newest_in_head(conn: Connection, found: Mapping[int, Series]) -> dict[int, int]:
    """The newest head timestamp of each of ``found``: ``series.last_seen_ms`` only advances
    at compaction, and the writer that knows better lives in another process (the worker).
    Only head rows after the oldest ``last_seen_ms`` are read (``head.in_time``; on
    PostgreSQL, the partitions of those blocks)."""
    floor = min((series.last_seen_ms for series in found.values()), default=None)
    if floor is None:
        return {}
    h = schema.samples_head
    statement = (
        select(h.c.series_id, func.max(h.c.ts_ms))
        .where(head.in_time(conn.dialect.name, floor + 1, None))
        .group_by(h.c.series_id)
    )
    return {sid: int(ts) for sid, ts in conn.execute(statement) if sid in found}


def known_namespaces(conn: Connection) -> list[str]:
    """Every namespace some stored pod or container series is in, sorted."""
    s = schema.series
    statement = (
        select(s.c.namespace).where(s.c.kind != Kind.NODE.value).distinct().order_by(s.c.namespace)
    )
    return [str(name) for (name,) in conn.execute(statement) if name]
