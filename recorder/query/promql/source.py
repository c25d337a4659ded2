"""Where selectors find their series and samples: the store (``StoreSource``: the series
dictionary, the pods' workloads, raw samples from the head and the chunks merged by the one
dedup rule, through ``recorder.query.scan``, and the containers' recorded requests and limits
at those samples' instants, through ``recorder.query.requests_limits``), or a list in memory
(``MemorySource``, for tests of the pure evaluator).

The store's bounds what one query may read: at most ``max_series`` series per selector (of
those seen in its time range) and ``max_samples`` samples in all, else a ``QueryError`` that
says which bound was hit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np
from sqlalchemy import Connection

from recorder.domain import Kind, QueryKind, SeriesFilter
from recorder.errors import QueryError
from recorder.query import requests_limits
from recorder.query.engine import HistoryReader
from recorder.query.promql import tiers
from recorder.query.promql.catalog import ALL_FAMILIES, Family, identity, with_name
from recorder.query.promql.matchers import Matcher, MatchOp, match_all
from recorder.query.promql.values import METRIC_NAME, FloatArray, IntArray, Labels, RawSeries
from recorder.query.scan import Scan, Unit
from recorder.store import chunks, head, rollups
from recorder.store.objects import WorkloadOf, read_pod_workloads
from recorder.store.series import Series, newest_in_head, select_series
from recorder.timeutil import MAX_TIME_MS, MIN_TIME_MS

DEFAULT_MAX_SERIES = 50_000
DEFAULT_MAX_SAMPLES = 5_000_000


class Source(Protocol):
    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[RawSeries]:
        """The series every matcher accepts, with their samples in ``[start_ms, end_ms]``
        (those without any left out), sorted by labels."""

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        """The label sets of the series every matcher accepts that have samples between
        ``start_ms`` and ``end_ms`` (by first and last seen), sorted."""

    def over_time(
        self,
        name: str,
        matchers: Sequence[Matcher],
        ends_ms: IntArray,
        range_ms: int,
        q: FloatArray | None,
    ) -> tiers.Answer | None:
        """``name`` (a ``*_over_time``) of the selector's windows ending at ``ends_ms``
        answered from statistics tiers, or None where the raw samples must answer."""

    def freshness(self) -> tuple[int, tuple[int, ...]]:
        """``(horizon_ms, generation)``: an answer at a step before ``horizon_ms`` reads only
        samples that no longer change while ``generation`` stays the same (the result cache's
        test of what it may keep)."""


class MemorySource:
    """Series held in memory."""

    def __init__(self, series: Sequence[RawSeries]) -> None:
        self._series = sorted(series, key=_labels_key)

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[RawSeries]:
        out = []
        for one in self._series:
            if not match_all(matchers, one.labels):
                continue
            low = int(np.searchsorted(one.timestamps_ms, start_ms, "left"))
            high = int(np.searchsorted(one.timestamps_ms, end_ms, "right"))
            if high > low:
                out.append(
                    RawSeries(
                        one.labels,
                        one.timestamps_ms[low:high],
                        one.ints[low:high],
                        one.scale,
                    )
                )
        return out

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        return [s.labels for s in self.select(matchers, start_ms, end_ms)]

    def over_time(
        self,
        name: str,
        matchers: Sequence[Matcher],
        ends_ms: IntArray,
        range_ms: int,
        q: FloatArray | None,
    ) -> tiers.Answer | None:
        """Memory holds raw samples only."""
        return None

    def freshness(self) -> tuple[int, tuple[int, ...]]:
        """Every sample is fixed (the series are given once)."""
        return MAX_TIME_MS, ()


def _labels_key(series: RawSeries) -> Labels:
    return series.labels


class StoreSource:
    """The stored history, read through ``reader``; one per query (it keeps the pods'
    workloads and counts the samples read)."""

    def __init__(
        self,
        reader: HistoryReader,
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        namespaces: frozenset[str] | None = None,
    ) -> None:
        """``namespaces``: only container series of these namespaces, and no node series
        (a caller that may not read cluster-wide); ``None``: everything."""
        self.reader = reader
        self.namespaces = namespaces
        self.max_series = max_series
        self.max_samples = max_samples
        self.samples_read = 0
        self._workloads: dict[tuple[str | None, str | None], WorkloadOf] = {}
        self._read: dict[tuple[tuple[Matcher, ...], int, int], list[RawSeries]] = {}

    def _matching(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[tuple[Series, Family, Labels]]:
        """Every stored series and family that the matchers accept, with its labels, of the
        series seen between ``start_ms`` and ``end_ms`` (by first and last seen, head rows
        included): the pods of a year of rollouts do not count against ``max_series`` in a
        query of the last hour."""
        named = [m for m in matchers if m.name == METRIC_NAME]
        families = [f for f in ALL_FAMILIES if all(m.matches(f.name) for m in named)]
        found: list[tuple[Series, Family, Labels]] = []
        with self.reader.reading() as conn:
            for kind in (Kind.NODE, Kind.CONTAINER):
                of_kind = [f for f in families if f.kind is kind]
                if not of_kind:
                    continue
                if kind is Kind.NODE and self.namespaces is not None:
                    continue
                where = _pushed_down(matchers, kind)
                if where is None:
                    continue
                if self.namespaces is not None:
                    where = replace(where, namespaces=self.namespaces)
                stored = _seen(
                    conn,
                    select_series(conn, (kind,), where),
                    start_ms,
                    end_ms,
                    self.reader.block_ms,
                )
                workloads = self._workloads_of(conn, where) if kind is Kind.CONTAINER else {}
                for series in stored:
                    own = identity(
                        series, workloads.get((series.cluster, series.namespace, series.pod))
                    )
                    for family in of_kind:
                        labels = with_name(own, family)
                        if match_all(matchers, labels):
                            found.append((series, family, labels))
                            if len(found) > self.max_series:
                                raise QueryError(
                                    f"a selector matches more than {self.max_series} series: "
                                    "add label matchers or narrow the time range"
                                )
        found.sort(key=lambda item: item[2])
        return found

    def _workloads_of(self, conn: Connection, where: SeriesFilter) -> WorkloadOf:
        """The recorded workloads of the pods in ``where``'s cluster and namespace (all when
        it names none), read once per query."""
        key = (where.cluster, where.namespace)
        found = self._workloads.get(key)
        if found is None:
            namespaces = (where.namespace,) if where.namespace is not None else ()
            found = read_pod_workloads(conn, cluster=where.cluster, namespaces=namespaces)
            self._workloads[key] = found
        return found

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[RawSeries]:
        """As ``Source.select``; a query that names one selector twice (``x / sum(x)``)
        reads it once."""
        key = (tuple(matchers), start_ms, end_ms)
        found = self._read.get(key)
        if found is None:
            found = self._read[key] = self._select(matchers, start_ms, end_ms)
        return found

    def _select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[RawSeries]:
        if end_ms < start_ms:
            return []
        found = self._matching(matchers, start_ms, end_ms)
        if not found:
            return []
        ids = sorted({series.id for series, _f, _l in found})
        unit_of = {sid: index for index, sid in enumerate(ids)}
        left = self.max_samples - self.samples_read
        with self.reader.reading() as conn:
            scan = Scan(
                [Unit((sid,), (sid,)) for sid in ids],
                start_ms=start_ms,
                end_ms=end_ms,
                block_ms=self.reader.block_ms,
                max_samples=max(left, 0),
            )
            try:
                runs = scan.sample_columns(conn)
            except QueryError:
                raise QueryError(
                    f"the query reads more than {self.max_samples} samples: narrow the time "
                    "range, shorten its [ranges] or add label matchers"
                ) from None
            specs = {_pod(s) for s, family, _l in found if family.column is not None}
            loaded = requests_limits.load(conn, specs, end_ms) if specs else {}
        self.samples_read += scan.decoded
        out = []
        for series, family, labels in found:
            run = runs.get(unit_of[series.id])
            if run is None:
                continue
            stamps = np.asarray(run[0], np.int64)
            if family.column is None:
                column = run[1] if family.scale != 1.0 else run[2]
                out.append(RawSeries(labels, stamps, np.asarray(column, np.int64), family.scale))
                continue
            rows = loaded.get(_pod(series), {}).get(series.container)
            if not rows:
                continue
            values, _known, is_set = requests_limits.in_effect(rows, stamps, family.column)
            if is_set.any():
                out.append(RawSeries(labels, stamps[is_set], values[is_set], family.scale))
        return out

    def over_time(
        self,
        name: str,
        matchers: Sequence[Matcher],
        ends_ms: IntArray,
        range_ms: int,
        q: FloatArray | None,
    ) -> tiers.Answer | None:
        """As ``Source.over_time`` (``recorder.query.promql.tiers``): the usage families only
        (requests and limits are read at their usage samples' instants); aligned windows
        exactly, unaligned ones rounded to whole blocks only where samples have expired."""
        if name not in tiers.FUNCTIONS or not len(ends_ms):
            return None
        start_ms, end_ms = int(ends_ms.min()) - range_ms, int(ends_ms.max())
        plan = tiers.aligned(ends_ms, range_ms, self.reader.block_ms)
        found = self._matching(matchers, start_ms, end_ms)
        if any(family.column is not None for _s, family, _l in found):
            return None
        if not found:
            return None if plan is None else tiers.Answer((), (), 0)
        wanted = [
            tiers.Wanted(series.id, labels, family.resource, family.scale)
            for series, family, labels in found
        ]
        ids = sorted({w.series_id for w in wanted})
        with self.reader.reading() as conn:
            if plan is None:
                if not chunks.any_expired(conn, ids, start_ms, end_ms):
                    return None
                plan = tiers.rounded(ends_ms, range_ms, self.reader.block_ms)
            tiers.check_cells(len(ids), plan)
            try:
                answer = tiers.over_time(
                    conn,
                    name,
                    wanted,
                    plan,
                    q,
                    block_ms=self.reader.block_ms,
                    max_samples=max(self.max_samples - self.samples_read, 0),
                )
            except QueryError:
                raise QueryError(
                    f"the query reads more than {self.max_samples} samples: narrow the time "
                    "range, shorten its [ranges] or add label matchers"
                ) from None
        self.samples_read += answer.decoded
        return answer

    def freshness(self) -> tuple[int, tuple[int, ...]]:
        """As ``Source.freshness``: the horizon is the head's oldest sample (everything
        before it is compacted; a late sample lands in the head and moves it back; a bound,
        ``head.oldest``, which is only earlier), else the
        end of the newest block; the generation is the newest and oldest block and the
        rollups' watermark, which compaction, retention and rollups move."""
        with self.reader.reading() as conn:
            oldest_head = head.oldest(conn)
            newest, oldest = chunks.block_span(conn)
            mark = rollups.watermark(conn)
        if oldest_head is not None:
            horizon = oldest_head
        elif newest is not None:
            horizon = newest + self.reader.block_ms
        else:
            horizon = MIN_TIME_MS
        return horizon, (newest or 0, oldest or 0, mark or 0)

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        """As ``Source.series``: by the first and last seen of their usage series, and a
        request or limit series only if the container ever had it set."""
        found = self._matching(matchers, start_ms, end_ms)
        specs = {_pod(s) for s, family, _l in found if family.column is not None}
        if not specs:
            return [labels for _s, _f, labels in found]
        with self.reader.reading() as conn:
            loaded = requests_limits.load(conn, specs, end_ms)
        return [
            labels
            for series, family, labels in found
            if family.column is None
            or any(
                getattr(row, family.column) is not None
                for row in loaded.get(_pod(series), {}).get(series.container, ())
            )
        ]


def _seen(
    conn: Connection, stored: Mapping[int, Series], start_ms: int, end_ms: int, slack_ms: int
) -> list[Series]:
    """The series with samples (by first and last seen, head rows included) that may fall
    between ``start_ms`` and ``end_ms``. The head holds the last hour or two: reading its
    newest timestamps is cheap. ``first_seen_ms`` is the first sample written, and a late
    sample may be older: ``slack_ms`` (a block) allows for it."""
    if not stored:
        return []
    newest = newest_in_head(conn, stored)
    return [
        series
        for sid, series in stored.items()
        if series.first_seen_ms <= end_ms + slack_ms
        and max(series.last_seen_ms, newest.get(sid, 0)) >= start_ms
    ]


def _pod(series: Series) -> tuple[str, str, str]:
    return series.cluster, series.namespace, series.pod


def _pushed_down(matchers: Sequence[Matcher], kind: Kind) -> SeriesFilter | None:
    """The equality matchers the series dictionary can filter by (the rest are applied to
    each series' labels); ``None`` when two of them want different values of one label."""
    wanted: dict[str, str] = {}
    names = (
        ("cluster", "node") if kind is Kind.NODE else ("cluster", "namespace", "pod", "container")
    )
    for m in matchers:
        if m.op is MatchOp.EQUAL and m.name in names and m.value != "":
            if wanted.setdefault(m.name, m.value) != m.value:
                return None
    query_kind = QueryKind.NODE if kind is Kind.NODE else QueryKind.CONTAINER
    return SeriesFilter(
        query_kind,
        wanted.get("node"),
        wanted.get("namespace"),
        wanted.get("pod"),
        wanted.get("container"),
        None,
        wanted.get("cluster"),
    )
