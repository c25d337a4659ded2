"""``recorder copy``: move the whole history from one database to another (e.g. SQLite to
PostgreSQL when a cluster outgrows SQLite), also into a database that is already recording.

The source is only read. Afterwards the target holds every sample of both, an exact (series,
timestamp) duplicate collapsed by the one rule of ``recorder.stats.dedup``:

- series and pods' labels are upserted by identity;
- chunks are copied block by block. One the target lacks is inserted as it is. One it already
  holds for the same series and block is merged with it: the samples of both under the dedup
  rule, their statistics taken again. Where one side keeps only statistics there (its
  full-resolution retention has passed), the two merge by their statistics when their samples
  lie apart in time, which is exact; when they overlap, duplicates cannot be told apart, and
  the copy is refused before it writes anything (``_refusal`` says which order of steps
  avoids it). Each pod whose chunk or containers changed gets its statistics-only chunk
  computed again, from the sum of its containers' merged samples at each instant;
- day rollups: the source's are copied where the target has none, and the rolled-up days whose
  chunks the copy changed are rolled up again from the chunks;
- cluster objects (``_copy_objects``, before the chunks): each pod's workload is the one first
  seen on either side (the earlier ``first_seen_ms``); requests and limits, and node capacity
  and allocatable, are histories of changes, so both sides' rows are kept (one per time the
  values were seen to change); an HPA is the side's that saw it last;
- workload statistics (``_copy_workload_stats``, per block): a (cluster, namespace, block) whose
  every chunk the copy inserted into a target holding nothing there gets the source's rows as
  they are (they were taken from exactly those chunks); one where the copy met chunks of the
  target loses the target's rows, which no longer describe its pods' merged samples, so its
  workloads are read from the samples, as for a block compacted before workload statistics;
- head samples: each one the target does not hold yet (in its head or in a chunk, or holds
  only a duplicate the rule would lose to it) is written through the target's writer; the
  target's next compaction takes them like any late sample. Head samples of a block whose
  samples have expired in the source are left out, as the source's own reads leave them out.

While it writes, no maintenance round runs in the target (``Store.maintenance_excluded``), so
a live target can be copied into. Running the copy again writes nothing: that is how an
interrupted copy is resumed. At the end the sample counts of both sides are compared.

Every database failure is a ``StoreError`` naming the side (the source read, the target
written) and what to do; nothing of a driver's exception reaches the user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, func, insert, select, tuple_

from recorder.domain import Batch, Kind, Sample, Samples, SeriesKey
from recorder.errors import StoreError
from recorder.stats import block as blocks
from recorder.stats import dedup
from recorder.stats.block import BlockStats
from recorder.stats.codec import ChunkSamples, decode_samples
from recorder.store import chunks as chunk_reads
from recorder.store import engine as engines
from recorder.store import head, rollups, schema
from recorder.store.compactor import (
    ChunkRow,
    PodKey,
    Progress,
    no_progress,
    pod_series_ids,
    upsert_chunks,
)
from recorder.store.engine import dialect_insert
from recorder.store.sql import Store
from recorder.timeutil import floor_to

log = logging.getLogger(__name__)

_PAGE = 2_000
_HEAD_BATCH = 50_000
_IDS = 500
_EXAMPLES = 3

SERIES = "series"
CHUNKS = "chunks"
HEAD = "head samples"


@dataclass
class CopyReport:
    series: int = 0
    chunks_copied: int = 0
    """Inserted as they are: the target had no chunk for their series and block."""
    chunks_merged: int = 0
    """Merged with the target's chunk of the same series and block."""
    chunks_already_there: int = 0
    """The target's chunk held them already (every sample, or the winner of each duplicate)."""
    pods_recomputed: int = 0
    objects_copied: int = 0
    """The source's rows of pods' workloads, requests and limits, node resources and HPAs,
    each written or merged by its rule (``_copy_objects``)."""
    workload_stats_copied: int = 0
    workload_blocks_dropped: int = 0
    """(cluster, namespace, block)s whose workload statistics the merge made stale: read from
    the samples from now on."""
    rollup_days_rebuilt: int = 0
    head_samples_written: int = 0
    head_samples_already_there: int = 0
    head_samples_expired: int = 0
    """Left out: in a block whose samples have expired in the source (its reads leave them out)."""
    head_samples_rejected: int = 0
    source_samples: int = 0
    target_samples_before: int = 0
    target_samples: int = 0

    @property
    def verified(self) -> bool:
        return self.target_samples >= self.source_samples - self.head_samples_expired


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


def _pod_of(key: SeriesKey) -> PodKey:
    return key.cluster, key.namespace, key.pod


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


def _write_lock_first(conn: Connection) -> None:
    """On SQLite, take the file's write lock before reading what the transaction will change
    (pysqlite would read outside the transaction, and another process' compaction could write
    in between)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sample_count(store: Store, side: str) -> int:
    """Samples held: chunk counts plus distinct head samples not already in a chunk (pods'
    statistics count their containers' samples again, so they are left out)."""
    c, h, s = schema.chunks, schema.samples_head, schema.series
    pods = select(s.c.id).where(s.c.kind == Kind.POD.value)
    doing = f"copying: counting the samples of the {side}"
    with _failing_as(store, doing), store.engine.connect() as conn:
        in_chunks = conn.execute(
            select(func.coalesce(func.sum(c.c.count), 0)).where(c.c.series_id.not_in(pods))
        ).scalar_one()
        in_head = conn.execute(
            select(func.count()).select_from(select(h.c.series_id, h.c.ts_ms).distinct().subquery())
        ).scalar_one()
    return int(in_chunks) + int(in_head)


# --- comparing and merging two chunks of one series and block ---------------------------------

_SIGNATURE = tuple(name for name in blocks.COLUMNS if not name.endswith(("_sketch", "_sumsq")))
"""The statistics that tell two chunks apart cheaply (the conflict check reads only these)."""


@dataclass(frozen=True, slots=True)
class _Meta:
    """What the conflict check knows of a chunk."""

    first_ms: int
    last_ms: int
    has_payload: bool
    signature: tuple[int, ...]


def _apart(a: _Meta | BlockStats, b: _Meta | BlockStats) -> bool:
    """Whether the samples of two chunks lie apart in time (so no instant has both)."""
    return a.last_ms < b.first_ms or b.last_ms < a.first_ms


def _stats(row: Row[Any]) -> BlockStats:
    return BlockStats.from_values([row._mapping[name] for name in blocks.COLUMNS])


def _same(ours: Row[Any], theirs: Row[Any]) -> bool:
    """Whether two chunk rows hold the same samples (a sum of squares missing on one side, from
    before it was kept, does not tell them apart)."""
    a, b = ours._mapping, theirs._mapping
    for name in (*blocks.COLUMNS, "payload"):
        if a[name] != b[name] and not (name.endswith("_sumsq") and None in (a[name], b[name])):
            return False
    return True


def _merged_chunk(
    series_id: int, block_start_ms: int, ours: Row[Any], theirs: Row[Any]
) -> ChunkRow | None:
    """The target's chunk ``ours`` with the source's ``theirs`` merged in, or None when
    ``ours`` holds everything of ``theirs`` already. Raises ``_Overlap`` when the two can only
    be merged by their statistics and their samples overlap in time."""
    if ours.payload is not None and theirs.payload is not None:
        held = decode_samples(ours.payload)
        merged, _ = dedup.merge(held, dedup.rows_of(decode_samples(theirs.payload)))
        return None if merged == held else ChunkRow.of(series_id, block_start_ms, merged)
    a, b = _stats(ours), _stats(theirs)
    if not _apart(a, b):
        raise _Overlap
    return ChunkRow(series_id, block_start_ms, blocks.merge([a, b]), None)


class _Overlap(Exception):
    """Two chunks that only statistics can merge hold samples at overlapping times."""


# --- refusing what cannot be merged exactly ---------------------------------------------------


def _named(key: SeriesKey) -> str:
    if key.kind is Kind.NODE:
        return f"node {key.node}"
    if key.kind is Kind.POD:
        return f"pod {key.namespace}/{key.pod}"
    return f"container {key.namespace}/{key.pod}/{key.container}"


def _hour(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _refusal(found: Sequence[tuple[SeriesKey, int]], *, in_head: bool) -> StoreError:
    examples = ", ".join(f"{_named(key)} at {_hour(start)}" for key, start in found[:_EXAMPLES])
    if in_head:
        return StoreError(
            f"the source's head holds samples of {len(found)} series in blocks whose samples "
            f"have expired in the target, which keeps only their statistics (e.g. {examples}). "
            "Nothing was copied. Run `recorder maintain` on the source first (it compacts its "
            "head into chunks, which merge by their statistics), then copy again"
        )
    return StoreError(
        f"both databases hold samples of {len(found)} series-blocks at overlapping times, and "
        "one of them keeps only their statistics there (its full-resolution retention has "
        f"passed), so duplicates cannot be told apart (e.g. {examples}). Nothing was copied. "
        "Copy a history into a database before it records the same hours: stop the target's "
        "recorder, copy into it, then start the recorder again (or copy before the samples of "
        "those hours expire on either side)"
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the copy learns of both sides before it writes anything."""

    source_blocks: list[int]
    target_days: set[int]
    """Days the target held chunks in before the copy."""
    source_watermark: int | None
    target_watermark: int | None


@dataclass
class _PodChange:
    """A pod whose statistics in one block change: its chunk on each side before the copy
    (read later when not known yet)."""

    target: BlockStats | None = None
    source: BlockStats | None = None


# --- the copy ---------------------------------------------------------------------------------


class HistoryCopier:
    def __init__(self, source: Store, target: Store, progress: Progress = no_progress):
        self.source = source
        self.target = target
        self.progress = progress
        self._keys: dict[int, SeriesKey] = {}
        """Every target series' identity by id (known once the series are copied)."""

    def run(self) -> CopyReport:
        report = CopyReport()
        with self.target.maintenance_excluded(on_wait=self._waiting):
            report.target_samples_before = _sample_count(self.target, "target")
            plan = self._plan()
            ids = self._copy_series(report)
            self._copy_labels()
            self._copy_objects(report)
            written_days = self._copy_chunks(ids, plan, report)
            self._copy_rollups(ids, plan, written_days, report)
            self._copy_head(ids, report)
        report.source_samples = _sample_count(self.source, "source")
        report.target_samples = _sample_count(self.target, "target")
        if not report.verified:
            raise StoreError(
                f"copy verification failed: the source holds {report.source_samples} samples, "
                f"the target {report.target_samples}. If the copy was interrupted, run it "
                "again; if the source's head holds samples that repeat compacted ones, run "
                "`recorder maintain` on the source first"
            )
        return report

    def _waiting(self) -> None:
        log.info(
            "waiting for the maintenance round in progress in %s to end", self.target.display_url
        )

    # --- the plan: nothing is written if something cannot be merged exactly ------------------

    def _plan(self) -> _Plan:
        c = schema.chunks
        with _reading(self.source), self.source.engine.connect() as conn:
            source_keys = _identities(conn)
            source_blocks = sorted(conn.execute(select(c.c.block_start_ms).distinct()).scalars())
            source_mark = rollups.watermark(conn)
        with _writing(self.target), self.target.engine.connect() as conn:
            target_ids = {key: sid for sid, key in _identities(conn).items()}
            target_blocks = set(conn.execute(select(c.c.block_start_ms).distinct()).scalars())
            target_mark = rollups.watermark(conn)
        ids = {sid: target_ids[key] for sid, key in source_keys.items() if key in target_ids}
        keys = {sid: key for key, sid in target_ids.items()}
        overlaps: list[tuple[SeriesKey, int]] = []
        for start in sorted(target_blocks.intersection(source_blocks)):
            with _reading(self.source), self.source.engine.connect() as conn:
                source_metas = list(_metas(conn, start))
            with _writing(self.target), self.target.engine.connect() as conn:
                ours = dict(_metas(conn, start))
            theirs = {ids[sid]: meta for sid, meta in source_metas if sid in ids}
            # Pods with a container that keeps only statistics, on either side.
            partial = _partial_pods(source_metas, source_keys) | _partial_pods(ours.items(), keys)
            overlaps += ((keys[sid], start) for sid in _overlapping(ours, theirs, keys, partial))
        if overlaps:
            raise _refusal(overlaps, in_head=False)
        in_head = self._head_on_expired(ids, keys)
        if in_head:
            raise _refusal(in_head, in_head=True)
        return _Plan(
            source_blocks,
            {rollups.day_of(start) for start in target_blocks},
            source_mark,
            target_mark,
        )

    def _head_on_expired(
        self, ids: dict[int, int], keys: dict[int, SeriesKey]
    ) -> list[tuple[SeriesKey, int]]:
        """Series and blocks where the source's head holds samples the source still reads and
        the target keeps only statistics of."""
        h = schema.samples_head
        block_ms = self.target.block_ms
        start = h.c.ts_ms - h.c.ts_ms % block_ms
        with _reading(self.source), self.source.engine.connect() as conn:
            groups = conn.execute(select(h.c.series_id, start).distinct()).all()
            gone = chunk_reads.expired(conn, sorted({b for _sid, b in groups})) if groups else set()
        wanted = {(ids[sid], b) for sid, b in groups if sid in ids and (sid, b) not in gone}
        if not wanted:
            return []
        with _writing(self.target), self.target.engine.connect() as conn:
            expired = chunk_reads.expired(conn, sorted({b for _sid, b in wanted}))
        return sorted(
            ((keys[sid], b) for sid, b in wanted & expired if keys[sid].kind is not Kind.POD),
            key=lambda found: found[1],
        )

    # --- series and labels --------------------------------------------------------------------

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
        self.progress(SERIES, 0, len(rows))
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
                least, greatest = (
                    (func.min, func.max)
                    if conn.dialect.name == "sqlite"
                    else (func.least, func.greatest)
                )
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
                            "first_seen_ms": least(
                                s.c.first_seen_ms, statement.excluded.first_seen_ms
                            ),
                            "last_seen_ms": greatest(
                                s.c.last_seen_ms, statement.excluded.last_seen_ms
                            ),
                        },
                    ),
                    values,
                )
            self._keys = _identities(conn)
        self.target.invalidate_writer()
        self.progress(SERIES, len(rows), len(rows))
        target_ids = {key: sid for sid, key in self._keys.items()}
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

    # --- cluster objects ----------------------------------------------------------------------

    def _copy_objects(self, report: CopyReport) -> None:
        """Pods' workloads, requests and limits, node resources and HPAs (module docstring), a
        page at a time (a 150,000-pod history holds as many rows of each)."""
        pw, hp = schema.pod_workloads, schema.hpas
        rules: tuple[tuple[Table, Callable[[Any], Any] | None], ...] = (
            (pw, lambda new: pw.c.first_seen_ms > new.first_seen_ms),  # first seen wins
            (schema.container_resources, None),  # histories of changes: both sides' rows
            (schema.node_resources, None),
            (hp, lambda new: hp.c.since_ms < new.since_ms),  # the side that saw it last wins
        )
        for table, replaces in rules:
            keys = list(table.primary_key.columns)
            with _reading(self.source), self.source.engine.connect() as source:
                rows = source.execute(
                    select(table).execution_options(stream_results=True, yield_per=_PAGE)
                )
                for page in rows.partitions(_PAGE):
                    with _writing(self.target), self.target.engine.begin() as conn:
                        statement = dialect_insert(conn, table)
                        if replaces is None:
                            statement = statement.on_conflict_do_nothing(index_elements=keys)
                        else:
                            statement = statement.on_conflict_do_update(
                                index_elements=keys,
                                set_={
                                    c.name: statement.excluded[c.name]
                                    for c in table.c
                                    if c not in keys
                                },
                                where=replaces(statement.excluded),
                            )
                        conn.execute(statement, [dict(row._mapping) for row in page])
                    report.objects_copied += len(page)

    def _namespaces_held(self, start: int) -> set[tuple[str, str]]:
        """The target's (cluster, namespace)s with chunks or workload statistics in the block."""
        c, s, wb = schema.chunks, schema.series, schema.workload_blocks
        with _reading(self.target), self.target.engine.connect() as conn:
            held = conn.execute(
                select(s.c.cluster, s.c.namespace)
                .distinct()
                .select_from(c.join(s, s.c.id == c.c.series_id))
                .where(c.c.block_start_ms == start, s.c.namespace != "")
            ).all()
            marked = conn.execute(
                select(wb.c.cluster, wb.c.namespace).where(wb.c.block_start_ms == start)
            ).all()
        return {(row.cluster, row.namespace) for row in (*held, *marked)}

    def _copy_workload_stats(
        self,
        start: int,
        spaces: dict[tuple[str, str], bool],
        held: set[tuple[str, str]],
        report: CopyReport,
    ) -> None:
        """The workload statistics of the (cluster, namespace)s the copy wrote chunks of in the
        block at ``start``: the source's where the target held nothing there and every chunk
        was inserted, none (read from the samples) where the copy merged into the target's."""
        clean = sorted(k for k, inserted_only in spaces.items() if inserted_only and k not in held)
        stale = sorted(spaces.keys() - set(clean))
        ws, wb = schema.workload_stats, schema.workload_blocks
        rows: list[dict[str, Any]] = []
        marks: list[dict[str, Any]] = []
        if clean:
            with _reading(self.source), self.source.engine.connect() as conn:
                for part in range(0, len(clean), _IDS):
                    wanted = tuple_(ws.c.cluster, ws.c.namespace).in_(clean[part : part + _IDS])
                    rows += [
                        dict(row._mapping)
                        for row in conn.execute(
                            select(ws).where(ws.c.block_start_ms == start, wanted)
                        )
                    ]
                    in_block = tuple_(wb.c.cluster, wb.c.namespace).in_(clean[part : part + _IDS])
                    marks += [
                        dict(row._mapping)
                        for row in conn.execute(
                            select(wb).where(wb.c.block_start_ms == start, in_block)
                        )
                    ]
        if not (rows or marks or stale):
            return
        with _writing(self.target), self.target.engine.begin() as conn:
            _write_lock_first(conn)
            for part in range(0, len(stale), _IDS):
                some = stale[part : part + _IDS]
                conn.execute(
                    ws.delete().where(
                        ws.c.block_start_ms == start,
                        tuple_(ws.c.cluster, ws.c.namespace).in_(some),
                    )
                )
                dropped = conn.execute(
                    wb.delete().where(
                        wb.c.block_start_ms == start,
                        tuple_(wb.c.cluster, wb.c.namespace).in_(some),
                    )
                )
                report.workload_blocks_dropped += max(dropped.rowcount, 0)
            for start_row in range(0, len(rows), _PAGE):
                conn.execute(insert(ws), rows[start_row : start_row + _PAGE])
            if marks:
                conn.execute(insert(wb), marks)
        report.workload_stats_copied += len(rows)

    # --- chunks -------------------------------------------------------------------------------

    def _copy_chunks(self, ids: dict[int, int], plan: _Plan, report: CopyReport) -> set[int]:
        """Every chunk of the source, block by block; the days it wrote chunks in."""
        c = schema.chunks
        with _reading(self.source), self.source.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(c)).scalar_one())
        done = 0
        self.progress(CHUNKS, 0, total)
        written: set[int] = set()
        for start in plan.source_blocks:
            pods: dict[PodKey, _PodChange] = {}
            held = self._namespaces_held(start)
            spaces: dict[tuple[str, str], bool] = {}
            with _reading(self.source), self.source.engine.connect() as conn:
                # In no particular order (sorting a block's rows, payloads and all, would cost
                # more than the copy): each page is merged on its own, pods once all are in.
                with conn.execute(
                    select(c)
                    .where(c.c.block_start_ms == start)
                    .execution_options(stream_results=True, yield_per=_PAGE)
                ) as rows:
                    for page in rows.partitions(_PAGE):
                        if self._merge_page(start, page, ids, pods, spaces, report):
                            written.add(rollups.day_of(start))
                        done += len(page)
                        self.progress(CHUNKS, done, total)
            if pods and self._recompute_pods(start, pods, report):
                written.add(rollups.day_of(start))
            if spaces:
                self._copy_workload_stats(start, spaces, held, report)
        return written

    def _merge_page(
        self,
        start: int,
        page: Sequence[Row[Any]],
        ids: dict[int, int],
        pods: dict[PodKey, _PodChange],
        spaces: dict[tuple[str, str], bool],
        report: CopyReport,
    ) -> bool:
        """Insert or merge one page of the source's chunks of the block at ``start``; notes in
        ``pods`` the pods whose statistics must be computed again, and in ``spaces`` each
        (cluster, namespace) whose chunks it wrote: whether it only inserted them. Whether
        anything changed."""
        c = schema.chunks
        targets = [ids[row.series_id] for row in page]
        with _writing(self.target), self.target.engine.begin() as conn:
            _write_lock_first(conn)
            held = {
                row.series_id: row
                for row in conn.execute(
                    select(c).where(c.c.block_start_ms == start, c.c.series_id.in_(targets))
                )
            }
            inserts: list[dict[str, Any]] = []
            merged: list[ChunkRow] = []
            for row, sid in zip(page, targets, strict=True):
                ours = held.get(sid)
                key = self._keys[sid]
                if ours is None:
                    inserts.append({**row._mapping, "series_id": sid})
                    if key.namespace:
                        spaces.setdefault((key.cluster, key.namespace), True)
                    continue
                if _same(ours, row):
                    report.chunks_already_there += 1
                    continue
                if key.namespace:
                    spaces[(key.cluster, key.namespace)] = False
                if key.kind is Kind.POD:
                    # Computed again once every container of the block is in.
                    pods[_pod_of(key)] = _PodChange(_stats(ours), _stats(row))
                    continue
                try:
                    chunk = _merged_chunk(sid, start, ours, row)
                except _Overlap:
                    raise _refusal([(key, start)], in_head=False) from None
                if chunk is None:
                    report.chunks_already_there += 1
                    continue
                merged.append(chunk)
                if key.kind is Kind.CONTAINER:
                    pods.setdefault(_pod_of(key), _PodChange())
            if inserts:
                # A plain insert: were a chunk written meanwhile, failing beats overwriting it.
                conn.execute(insert(c), inserts)
            if merged:
                upsert_chunks(conn, merged)
        report.chunks_copied += len(inserts)
        report.chunks_merged += len(merged)
        return bool(inserts or merged)

    def _recompute_pods(
        self, start: int, pods: dict[PodKey, _PodChange], report: CopyReport
    ) -> bool:
        """The statistics of these pods in the block at ``start``, from the sum of their
        containers' merged samples at each instant; by merging both sides' statistics where
        some container keeps only statistics (the plan made sure their samples lie apart).
        Whether any changed."""
        c, s = schema.chunks, schema.series
        wanted = list(pods)
        with _writing(self.target), self.target.engine.begin() as conn:
            _write_lock_first(conn)
            runs: dict[PodKey, list[ChunkSamples | None]] = {}
            for first in range(0, len(wanted), _IDS):
                for payload, cluster, namespace, pod in conn.execute(
                    select(c.c.payload, s.c.cluster, s.c.namespace, s.c.pod)
                    .join(s, s.c.id == c.c.series_id)
                    .where(c.c.block_start_ms == start, s.c.kind == Kind.CONTAINER.value)
                    .where(
                        tuple_(s.c.cluster, s.c.namespace, s.c.pod).in_(
                            wanted[first : first + _IDS]
                        )
                    )
                ):
                    runs.setdefault((cluster, namespace, pod), []).append(
                        None if payload is None else decode_samples(payload)
                    )
            computed: dict[PodKey, BlockStats] = {}
            for pod, change in pods.items():
                found = runs.get(pod, [])
                complete = [run for run in found if run is not None]
                if found and len(complete) == len(found):
                    computed[pod] = BlockStats.of(dedup.sum_runs(complete))
                    continue
                sides = self._pod_sides(conn, start, pod, change)
                if len(sides) == 2 and not _apart(*sides):
                    key = SeriesKey.for_pod(pod[1], pod[2], pod[0])
                    raise _refusal([(key, start)], in_head=False)
                if sides:
                    computed[pod] = blocks.merge(sides)
            stored = _pod_chunks(conn, start, list(computed))
            changed = {pod: stats for pod, stats in computed.items() if stored.get(pod) != stats}
            if changed:
                first_seen = min(stats.first_ms for stats in changed.values())
                pod_ids = pod_series_ids(conn, list(changed), first_seen_ms=first_seen)
                upsert_chunks(
                    conn,
                    [ChunkRow(pod_ids[pod], start, stats, None) for pod, stats in changed.items()],
                )
        report.pods_recomputed += len(changed)
        return bool(changed)

    def _pod_sides(
        self, conn: Connection, start: int, pod: PodKey, change: _PodChange
    ) -> list[BlockStats]:
        """The pod's chunk on each side before the copy (those that exist)."""
        if change.target is None:
            change.target = _pod_chunks(conn, start, [pod]).get(pod)
        if change.source is None:
            with _reading(self.source), self.source.engine.connect() as source:
                change.source = _pod_chunks(source, start, [pod]).get(pod)
        if change.target == change.source:  # the source's, inserted as it was
            return [] if change.target is None else [change.target]
        return [stats for stats in (change.target, change.source) if stats is not None]

    # --- day rollups --------------------------------------------------------------------------

    def _copy_rollups(
        self, ids: dict[int, int], plan: _Plan, written: set[int], report: CopyReport
    ) -> None:
        """The source's rollups where the target has none; then every rolled-up day whose
        chunks the source's rollups do not account for is rolled up again from the chunks."""
        r = schema.rollups
        after: tuple[int, int] = (-1, -1)
        while True:
            with _reading(self.source), self.source.engine.connect() as conn:
                page = conn.execute(
                    select(r)
                    .where(tuple_(r.c.series_id, r.c.day_start_ms) > after)
                    .order_by(r.c.series_id, r.c.day_start_ms)
                    .limit(_PAGE)
                ).all()
            if not page:
                break
            after = (page[-1].series_id, page[-1].day_start_ms)
            with _writing(self.target), self.target.engine.begin() as conn:
                conn.execute(
                    dialect_insert(conn, r).on_conflict_do_nothing(),
                    [{**row._mapping, "series_id": ids[row.series_id]} for row in page],
                )
        marks = [m for m in (plan.source_watermark, plan.target_watermark) if m is not None]
        if not marks:
            return
        mark = max(marks)

        def settled(day: int) -> bool:
            """Its rollups hold its chunks already: the target's own, or the source's for a
            day the target had no chunk in."""
            own = plan.target_watermark is not None and day < plan.target_watermark
            copied = plan.source_watermark is not None and day < plan.source_watermark
            return (own and day not in written) or (copied and day not in plan.target_days)

        again = sorted(d for d in plan.target_days | written if d < mark and not settled(d))
        if again:
            with _writing(self.target):
                # Days before the watermark given as late blocks: each is rolled up again whole.
                report.rollup_days_rebuilt = rollups.build(self.target.engine, mark, again)

    # --- the head -----------------------------------------------------------------------------

    def _copy_head(self, ids: dict[int, int], report: CopyReport) -> None:
        h = schema.samples_head
        block_ms = self.source.block_ms
        # Writes of the head go through Store.write, which raises StoreError of its own (not
        # caught here): what fails in this block as a driver error is the source.
        with _reading(self.source), self.source.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(h)).scalar_one())
            starts = conn.execute(select(h.c.ts_ms - h.c.ts_ms % block_ms).distinct()).scalars()
            gone = chunk_reads.expired(conn, sorted(starts)) if total else set()
            done = 0
            self.progress(HEAD, 0, total)
            with conn.execute(
                select(h.c.ts_ms, h.c.series_id, h.c.window_ms, h.c.cpu_nanocores, h.c.memory_bytes)
                .order_by(h.c.ts_ms, h.c.series_id)
                .execution_options(stream_results=True, yield_per=_HEAD_BATCH)
            ) as rows:
                for page in rows.partitions(_HEAD_BATCH):
                    kept = []
                    for ts, sid, window, cpu, memory in page:
                        if (sid, floor_to(ts, block_ms)) in gone:
                            report.head_samples_expired += 1
                        else:
                            kept.append((ts, ids[sid], window, cpu, memory))
                    if kept:
                        self._write_head(kept, report)
                    done += len(page)
                    self.progress(HEAD, done, total)

    def _write_head(self, rows: list[tuple[int, int, int, int, int]], report: CopyReport) -> None:
        """Write the rows (ts, target series id, window, cpu, memory; in time order) that the
        target does not hold yet, nor a duplicate of that the rule would prefer."""
        held = self._held(rows)
        fresh: dict[Kind, list[Sample]] = {}
        for ts, sid, window, cpu, memory in rows:
            found = held.get((sid, ts))
            if found is not None and dedup.rank(found) >= dedup.rank((ts, window, cpu, memory)):
                report.head_samples_already_there += 1
                continue
            key = self._keys[sid]
            fresh.setdefault(key.kind, []).append(Sample(key, ts, window, cpu, memory))
        for kind, samples in fresh.items():
            result = self.target.write(
                Batch(kind, Samples.of(samples)), now_ms=samples[-1].timestamp_ms
            )
            report.head_samples_written += result.written
            report.head_samples_already_there += result.skipped_duplicates
            report.head_samples_rejected += len(result.rejected)

    def _held(self, rows: list[tuple[int, int, int, int, int]]) -> dict[tuple[int, int], dedup.Row]:
        """The target's winner at each (series, timestamp) of ``rows``, in its head or chunks."""
        h, c = schema.samples_head, schema.chunks
        low, high = rows[0][0], rows[-1][0]
        series = sorted({row[1] for row in rows})
        block_ms = self.target.block_ms
        starts = sorted({floor_to(row[0], block_ms) for row in rows})
        held: dict[tuple[int, int], dedup.Row] = {}

        def keep(sid: int, row: dedup.Row) -> None:
            found = held.get((sid, row[0]))
            held[(sid, row[0])] = row if found is None else dedup.preferred(found, row)

        wanted = set(series)
        with _writing(self.target), self.target.engine.connect() as conn:
            for sid, ts, window, cpu, memory in conn.execute(
                select(
                    h.c.series_id, h.c.ts_ms, h.c.window_ms, h.c.cpu_nanocores, h.c.memory_bytes
                ).where(head.in_time(conn.dialect.name, low, high))
            ):
                if sid in wanted:
                    keep(sid, (ts, window, cpu, memory))
            for first in range(0, len(series), 1000):
                for sid, payload in conn.execute(
                    select(c.c.series_id, c.c.payload)
                    .where(c.c.series_id.in_(series[first : first + 1000]))
                    .where(c.c.block_start_ms.in_(starts), c.c.payload.is_not(None))
                    .where(c.c.last_ms >= low, c.c.first_ms <= high)
                ):
                    for row in dedup.rows_of(decode_samples(payload)):
                        keep(sid, row)
        return held


def _metas(conn: Connection, start: int) -> Iterator[tuple[int, _Meta]]:
    """``(series id, what the conflict check needs)`` of every chunk of the block at ``start``."""
    c = schema.chunks
    for sid, has_payload, *signature in conn.execute(
        select(c.c.series_id, c.c.payload.is_not(None), *(c.c[name] for name in _SIGNATURE)).where(
            c.c.block_start_ms == start
        )
    ):
        first_ms, last_ms = signature[0], signature[1]
        yield sid, _Meta(first_ms, last_ms, bool(has_payload), tuple(signature))


def _partial_pods(metas: Iterable[tuple[int, _Meta]], keys: dict[int, SeriesKey]) -> set[PodKey]:
    """The pods of the containers among ``metas`` that keep only statistics."""
    return {
        _pod_of(keys[sid])
        for sid, meta in metas
        if not meta.has_payload and keys[sid].kind is Kind.CONTAINER
    }


def _overlapping(
    ours: dict[int, _Meta],
    theirs: dict[int, _Meta],
    keys: dict[int, SeriesKey],
    partial: set[PodKey],
) -> Iterable[int]:
    """The series of one block whose chunks on both sides differ, hold samples at overlapping
    times and cannot be merged sample by sample: a node or container where a side keeps only
    statistics, a pod in ``partial`` (one of its containers does, on either side)."""
    for sid in ours.keys() & theirs.keys():
        a, b = ours[sid], theirs[sid]
        if a.signature == b.signature or _apart(a, b):
            continue
        key = keys[sid]
        if key.kind is Kind.POD:
            if _pod_of(key) in partial:
                yield sid
        elif not (a.has_payload and b.has_payload):
            yield sid


def _pod_chunks(conn: Connection, start: int, pods: Sequence[PodKey]) -> dict[PodKey, BlockStats]:
    """The statistics of these pods' own chunks in the block at ``start`` (those that exist)."""
    c, s = schema.chunks, schema.series
    found: dict[PodKey, BlockStats] = {}
    for first in range(0, len(pods), _IDS):
        for cluster, namespace, pod, *values in conn.execute(
            select(s.c.cluster, s.c.namespace, s.c.pod, *(c.c[name] for name in blocks.COLUMNS))
            .join(s, s.c.id == c.c.series_id)
            .where(c.c.block_start_ms == start, s.c.kind == Kind.POD.value)
            .where(tuple_(s.c.cluster, s.c.namespace, s.c.pod).in_(pods[first : first + _IDS]))
        ):
            found[(cluster, namespace, pod)] = BlockStats.from_values(values)
    return found
