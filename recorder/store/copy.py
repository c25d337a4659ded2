"""``recorder copy``: move the whole history from one database to another (e.g. SQLite to
PostgreSQL when a cluster outgrows SQLite).

The source is only read. The copy is idempotent, so an interrupted copy is resumed by running
it again: series and labels are upserted by identity, chunks are inserted in pages of one
transaction each and skipped when already there, and the head's samples go through the normal
idempotent write path. At the end the sample counts of both sides are compared.

Every database failure is a ``StoreError`` naming the side (the source read, the target
written) and what to do; nothing of a driver's exception reaches the user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, tuple_

from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.errors import StoreError
from recorder.store import engine as engines
from recorder.store import schema
from recorder.store.engine import dialect_insert
from recorder.store.sql import Store

log = logging.getLogger(__name__)

_PAGE = 2_000
_HEAD_BATCH = 50_000


@dataclass
class CopyReport:
    series: int = 0
    chunks_copied: int = 0
    chunks_already_there: int = 0
    head_samples_written: int = 0
    head_samples_already_there: int = 0
    source_samples: int = 0
    target_samples: int = 0

    @property
    def verified(self) -> bool:
        return self.target_samples >= self.source_samples


def _identity(row: object) -> SeriesKey:
    return SeriesKey(
        Kind(row.kind),  # type: ignore[attr-defined]
        row.node,  # type: ignore[attr-defined]
        row.namespace,  # type: ignore[attr-defined]
        row.pod,  # type: ignore[attr-defined]
        row.container,  # type: ignore[attr-defined]
        row.cluster,  # type: ignore[attr-defined]
    )


def _identities(conn: Connection) -> dict[int, SeriesKey]:
    """Every series' identity by id."""
    s = schema.series
    columns = (s.c.id, s.c.kind, s.c.node, s.c.namespace, s.c.pod, s.c.container, s.c.cluster)
    return {row.id: _identity(row) for row in conn.execute(select(*columns))}


@contextmanager
def _failing_as(store: Store, doing: str) -> Iterator[None]:
    """Database errors inside become the ``StoreError`` for ``doing`` ``store``."""
    try:
        yield
    except engines.DATABASE_ERRORS as exc:
        raise engines.failure(exc, f"{doing} {store.display_url}", store.timeouts) from exc


def _reading(store: Store) -> AbstractContextManager[None]:
    return _failing_as(store, "copying: reading the source")


def _writing(store: Store) -> AbstractContextManager[None]:
    return _failing_as(store, "copying: writing the target")


def _sample_count(store: Store) -> int:
    """Samples held: chunk counts plus distinct head samples not already in a chunk (pods'
    statistics count their containers' samples again, so they are left out)."""
    c, h, s = schema.chunks, schema.samples_head, schema.series
    pods = select(s.c.id).where(s.c.kind == Kind.POD.value)
    with _failing_as(store, "copying: counting the samples of"), store.engine.connect() as conn:
        in_chunks = conn.execute(
            select(func.coalesce(func.sum(c.c.count), 0)).where(c.c.series_id.not_in(pods))
        ).scalar_one()
        head = conn.execute(
            select(func.count()).select_from(select(h.c.series_id, h.c.ts_ms).distinct().subquery())
        ).scalar_one()
    return int(in_chunks) + int(head)


class HistoryCopier:
    def __init__(self, source: Store, target: Store, progress: Callable[[str], None] = log.info):
        self.source = source
        self.target = target
        self.progress = progress

    def run(self) -> CopyReport:
        report = CopyReport()
        ids = self._copy_series(report)
        self._copy_labels()
        self._copy_chunks(ids, report)
        self._copy_head(ids, report)
        report.source_samples = _sample_count(self.source)
        report.target_samples = _sample_count(self.target)
        if not report.verified:
            raise StoreError(
                f"copy verification failed: the source holds {report.source_samples} samples, "
                f"the target {report.target_samples}. If the copy was interrupted, run it again; "
                "if the source's head holds late samples, run `recorder maintain` on it first"
            )
        return report

    def _copy_series(self, report: CopyReport) -> dict[int, int]:
        s, c = schema.series, schema.chunks
        with _reading(self.source), self.source.engine.connect() as conn:
            rows = conn.execute(select(s)).all()
            in_chunks = {
                sid: last
                for sid, last in conn.execute(
                    select(c.c.series_id, func.max(c.c.last_ms)).group_by(c.c.series_id)
                )
            }
        report.series = len(rows)
        with _writing(self.target), self.target.engine.begin() as conn:
            for start in range(0, len(rows), _PAGE):
                page = rows[start : start + _PAGE]
                values = []
                for row in page:
                    value = {k: v for k, v in row._mapping.items() if k != "id"}
                    # Up to where the chunks go; the head's samples follow through the writer.
                    value["last_seen_ms"] = in_chunks.get(row.id, row.first_seen_ms - 1)
                    values.append(value)
                statement = dialect_insert(conn, s)
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[
                            s.c.cluster,
                            s.c.kind,
                            s.c.node,
                            s.c.namespace,
                            s.c.pod,
                            s.c.container,
                        ],
                        set_={
                            "first_seen_ms": func.min(
                                s.c.first_seen_ms, statement.excluded.first_seen_ms
                            )
                            if conn.dialect.name == "sqlite"
                            else func.least(s.c.first_seen_ms, statement.excluded.first_seen_ms),
                            "last_seen_ms": func.max(
                                s.c.last_seen_ms, statement.excluded.last_seen_ms
                            )
                            if conn.dialect.name == "sqlite"
                            else func.greatest(s.c.last_seen_ms, statement.excluded.last_seen_ms),
                        },
                    ),
                    values,
                )
            target_ids = {key: sid for sid, key in _identities(conn).items()}
        self.target.invalidate_writer()
        self.progress(f"series: {len(rows)}")
        return {row.id: target_ids[_identity(row)] for row in rows}

    def _copy_labels(self) -> None:
        pl = schema.pod_labels
        with _reading(self.source), self.source.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(select(pl))]
        if not rows:
            return
        with _writing(self.target), self.target.engine.begin() as conn:
            statement = dialect_insert(conn, pl)
            for start in range(0, len(rows), _PAGE):
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[pl.c.cluster, pl.c.namespace, pl.c.pod],
                        set_={
                            "labels_json": statement.excluded.labels_json,
                            "updated_ms": statement.excluded.updated_ms,
                        },
                        where=pl.c.updated_ms < statement.excluded.updated_ms,
                    ),
                    rows[start : start + _PAGE],
                )
        self.progress(f"pod labels: {len(rows)}")

    def _copy_chunks(self, ids: dict[int, int], report: CopyReport) -> None:
        c = schema.chunks
        after: tuple[int, int] = (-1, -1)
        while True:
            with _reading(self.source), self.source.engine.connect() as conn:
                page = conn.execute(
                    select(c)
                    .where(tuple_(c.c.series_id, c.c.block_start_ms) > after)
                    .order_by(c.c.series_id, c.c.block_start_ms)
                    .limit(_PAGE)
                ).all()
            if not page:
                return
            after = (page[-1].series_id, page[-1].block_start_ms)
            values = []
            for row in page:
                value = dict(row._mapping)
                value["series_id"] = ids[row.series_id]
                values.append(value)
            page_keys = [(v["series_id"], v["block_start_ms"]) for v in values]
            with _writing(self.target), self.target.engine.begin() as conn:
                present = conn.execute(
                    select(func.count())
                    .select_from(c)
                    .where(tuple_(c.c.series_id, c.c.block_start_ms).in_(page_keys))
                ).scalar_one()
                conn.execute(dialect_insert(conn, c).on_conflict_do_nothing(), values)
            report.chunks_copied += len(values) - present
            report.chunks_already_there += present
            self.progress(f"chunks: {report.chunks_copied + report.chunks_already_there}")

    def _copy_head(self, ids: dict[int, int], report: CopyReport) -> None:
        h = schema.samples_head
        # Writes of the head go through Store.write, which raises StoreError of its own (not
        # caught here): what fails in this block as a driver error is the source.
        with _reading(self.source), self.source.engine.connect() as conn:
            keys = _identities(conn)
            rows = conn.execute(
                select(h.c.ts_ms, h.c.series_id, h.c.window_ms, h.c.cpu_nanocores, h.c.memory_bytes)
                .order_by(h.c.ts_ms, h.c.series_id)
                .execution_options(stream_results=True, yield_per=_HEAD_BATCH)
            )
            batch: list[Sample] = []
            for ts, series_id, window, cpu, memory in rows:
                batch.append(Sample(keys[series_id], ts, window, cpu, memory))
                if len(batch) >= _HEAD_BATCH:
                    self._write_head(batch, report)
                    batch = []
            if batch:
                self._write_head(batch, report)

    def _write_head(self, samples: list[Sample], report: CopyReport) -> None:
        for kind in Kind:
            mine = tuple(s for s in samples if s.key.kind is kind)
            if mine:
                result = self.target.write(
                    Batch(kind, mine), now_ms=mine[-1].timestamp_ms, newer_only=True
                )
                report.head_samples_written += result.written
                report.head_samples_already_there += result.skipped_duplicates
        self.progress(f"head samples: {report.head_samples_written}")
