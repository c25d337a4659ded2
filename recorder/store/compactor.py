"""Compaction: closed time blocks move from the head into one chunk row per series per block,
and each pod gets the statistics of its summed series.

For each closed block, in one transaction: stream the block's head rows ordered by series and
time (a pod is summed, and its samples let go, once all its containers are read), merge each
series' rows
with the chunk already stored for it in that block, if any (late samples), under the one
deduplication rule (``recorder.stats.dedup``), encode the samples, take their statistics
(``recorder.stats.block``), upsert the chunks, advance ``series.last_seen_ms``, and remove the
block from the head. Each pod's containers are summed at each instant into the pod's own series
(kind ``pod``): a statistics-only chunk (no payload: its samples are its containers'), so pod
maxima and percentiles are exact at every tier, long after the containers' samples expired.
A crash rolls the whole block back; running it again is harmless.

On SQLite a block's transaction takes the write lock before it reads anything (``BEGIN
IMMEDIATE``): pysqlite would otherwise read the head and the stored chunks outside the
transaction, and a write another process commits in between (a late sample, ``recorder copy``
merging a chunk) would be lost when the block's chunks are upserted and its head rows deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, tuple_, update

from recorder.domain import DEFAULT_INTERVAL_MS, Kind
from recorder.stats import dedup
from recorder.stats.block import BlockStats
from recorder.stats.codec import ChunkSamples, decode_samples, encode_samples
from recorder.store import head as heads
from recorder.store import schema, workload_compaction
from recorder.store.engine import dialect_insert
from recorder.store.head import Head
from recorder.timeutil import floor_to

log = logging.getLogger(__name__)

_UPSERT_BATCH = 2_000
_LOOKUP_CHUNK = 500
STREAM_ROWS = 50_000
"""Head rows read from the database at a time (their series' pods are learnt a part at a time)."""

PodKey = tuple[str, str, str]
"""(cluster, namespace, pod)"""

Progress = Callable[[str, int, int], None]
"""Told how far a long task has come: ``(what, done, total)``, ``done`` growing up to ``total``
(``recorder maintain`` and ``recorder copy`` draw it on a terminal)."""


def no_progress(_what: str, _done: int, _total: int) -> None:
    """A ``Progress`` that tells nobody."""


@dataclass
class CompactionReport:
    blocks: int = 0
    block_starts: list[int] = field(default_factory=list)
    rollup_days: int = 0
    series: int = 0
    pods: int = 0
    samples: int = 0
    duplicates_dropped: int = 0
    expired_dropped: int = 0
    workloads: int = 0
    """Workload statistics rows taken (``workload_stats``), one per workload per block."""
    workload_seconds: float = 0.0
    """Of ``seconds``, the time taking them took."""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """The statistics and payload of one series over one block (no payload: a pod's)."""

    series_id: int
    block_start_ms: int
    stats: BlockStats
    samples: ChunkSamples | None

    @classmethod
    def of(cls, series_id: int, block_start_ms: int, samples: ChunkSamples) -> ChunkRow:
        return cls(series_id, block_start_ms, BlockStats.of(samples), samples)

    def values(self) -> dict[str, Any]:
        s = self.samples
        payload = None
        if s is not None:
            payload = encode_samples(s.timestamps_ms, s.windows_ms, s.cpu_nanocores, s.memory_bytes)
        return {
            "series_id": self.series_id,
            "block_start_ms": self.block_start_ms,
            **self.stats.to_columns(),
            "payload": payload,
        }


def block_start(ts_ms: int, block_ms: int) -> int:
    return floor_to(ts_ms, block_ms)


class _OpenPod:
    """A pod whose containers are being read: their samples and statistics so far."""

    def __init__(self) -> None:
        self.runs: list[ChunkSamples] = []
        self.stats: list[BlockStats] = []


class _Block:
    """What one block's compaction has pending: chunks to upsert, the pods whose containers
    are being read, and pods' statistics to upsert."""

    def __init__(self, start: int, late: bool, containers: dict[PodKey, int]) -> None:
        self.start = start
        self.late = late
        """Chunks of this block exist already (late samples): pods take their stored containers."""
        self.containers = containers
        """How many container series each pod has: once they are all read, the pod is summed."""
        self.chunks: list[ChunkRow] = []
        self.open: dict[PodKey, _OpenPod] = {}
        self.pod_stats: dict[PodKey, BlockStats] = {}
        self.teller: _Teller | None = None


class _PodsOf:
    """Each container series' pod and how many container series each pod has, learnt for the
    series a block's rows bring, a streamed part at a time: reading every container series of
    the table held them all during compaction, and the table keeps every container a cluster
    ran until its rollups expire (thousands of new series an hour where pods are replaced all
    the time)."""

    def __init__(self, conn: Connection) -> None:
        s = schema.series
        self._conn = conn
        self.of: dict[int, PodKey] = {}
        """Each container series' pod (a node's series has none)."""
        self.containers: dict[PodKey, int] = {}
        """How many container series each pod has in the table: once they are all read, the pod
        is summed."""
        self._known: set[int] = set()
        # Containers have no node (the Metrics API does not say where a pod runs), so a pod's
        # are counted through the series' unique index with an empty node; the pods of a
        # container series with a node, which the recorder never writes, are counted apart.
        self._odd: set[PodKey] = {
            (cluster, namespace, pod)
            for cluster, namespace, pod in conn.execute(
                select(s.c.cluster, s.c.namespace, s.c.pod)
                .where(s.c.kind == Kind.CONTAINER.value, s.c.node != "")
                .distinct()
            )
        }

    def learn(self, sids: set[int]) -> None:
        """Learn the pods of these series (those not learnt yet) and count their containers."""
        s = schema.series
        new = sorted(sids - self._known)
        self._known.update(new)
        pods: set[PodKey] = set()
        for at in range(0, len(new), _LOOKUP_CHUNK):
            for sid, kind, cluster, namespace, pod in self._conn.execute(
                select(s.c.id, s.c.kind, s.c.cluster, s.c.namespace, s.c.pod).where(
                    s.c.id.in_(new[at : at + _LOOKUP_CHUNK])
                )
            ):
                if kind == Kind.CONTAINER.value:
                    key = (intern(cluster), intern(namespace), intern(pod))
                    self.of[sid] = key
                    if key not in self.containers:
                        pods.add(key)
        # Counted by a self-join: one new series of each pod found by its id, its containers
        # through the series' unique index (a list of (cluster, namespace, pod) tuples was a
        # scan of the whole index per statement on SQLite).
        fast = pods - self._odd
        counted = sorted({self.of[sid]: sid for sid in new if self.of.get(sid) in fast}.values())
        one, other = schema.series.alias("one"), schema.series.alias("other")
        for at in range(0, len(counted), _LOOKUP_CHUNK):
            for cluster, namespace, pod, count in self._conn.execute(
                select(
                    other.c.cluster,
                    other.c.namespace,
                    other.c.pod,
                    func.count(),
                )
                .select_from(one)
                .join(
                    other,
                    (other.c.cluster == one.c.cluster)
                    & (other.c.kind == Kind.CONTAINER.value)
                    & (other.c.node == "")
                    & (other.c.namespace == one.c.namespace)
                    & (other.c.pod == one.c.pod),
                )
                .where(one.c.id.in_(counted[at : at + _LOOKUP_CHUNK]))
                .group_by(other.c.cluster, other.c.namespace, other.c.pod)
            ):
                self.containers[(cluster, namespace, pod)] = int(count)
        for key in fast:
            self.containers.setdefault(key, 1)  # found above: it has this container at least
        for key in sorted(pods & self._odd):
            cluster, namespace, pod = key
            self.containers[key] = int(
                self._conn.execute(
                    select(func.count()).where(
                        s.c.kind == Kind.CONTAINER.value,
                        s.c.cluster == cluster,
                        s.c.namespace == namespace,
                        s.c.pod == pod,
                    )
                ).scalar_one()
            )


class _Teller:
    """Tells a ``Progress`` how many head rows have been compacted (read, whether they became
    samples, duplicates or late samples of an expired block), never past the total."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.total = total
        self.told = 0
        progress(COMPACTING, 0, total)

    def tell(self, report: CompactionReport) -> None:
        done = min(report.samples + report.duplicates_dropped + report.expired_dropped, self.total)
        if done > self.told:
            self.told = done
            self.progress(COMPACTING, done, self.total)

    def finish(self) -> None:
        if self.told < self.total:
            self.told = self.total
            self.progress(COMPACTING, self.total, self.total)


COMPACTING = "compacting head samples"


class Compactor:
    def __init__(
        self, engine: Engine, head: Head, block_ms: int, interval_ms: int = DEFAULT_INTERVAL_MS
    ):
        self._engine = engine
        self._head = head
        self.block_ms = block_ms
        self.interval_ms = interval_ms
        """The poll interval: workloads' statistics align their pods at its multiples."""

    def closed_blocks(self, now_ms: int, grace_ms: int) -> Iterator[int]:
        """Starts of the blocks that have head rows and ended at least ``grace_ms`` ago."""
        limit = block_start(now_ms - grace_ms, self.block_ms)
        after = None
        while True:
            with self._engine.connect() as conn:
                start = heads.first_block(conn, self.block_ms, limit, after)
            if start is None:
                return
            yield start
            after = start + self.block_ms

    def compact(
        self, now_ms: int, grace_ms: int, lock: Any = None, progress: Progress | None = None
    ) -> CompactionReport:
        """Compact every closed block. ``progress`` hears the head samples compacted of those
        the closed blocks held when it began (counting them costs a walk of their rows, so only
        when someone listens)."""
        report = CompactionReport()
        begun = time.perf_counter()
        self._head.cover_strays(self._engine)
        starts = list(self.closed_blocks(now_ms, grace_ms))
        total = self._head_rows_before(starts[-1] + self.block_ms) if progress and starts else 0
        teller = _Teller(progress, total) if progress is not None else None
        for start in starts:
            with lock if lock is not None else nullcontext():
                namespaces = self.compact_block(start, report, teller)
            with lock if lock is not None else nullcontext():
                self.take_workloads(start, namespaces, report)
        if teller is not None:
            teller.finish()
        report.seconds = time.perf_counter() - begun
        return report

    def _head_rows_before(self, end_ms: int) -> int:
        h = schema.samples_head
        with self._engine.connect() as conn:
            query = (
                select(func.count())
                .select_from(h)
                .where(heads.in_time(conn.dialect.name, None, end_ms - 1))
            )
            return int(conn.execute(query).scalar_one())

    def take_workloads(
        self, start: int, namespaces: set[tuple[str, str]], report: CompactionReport
    ) -> None:
        """The statistics of the workloads of ``namespaces`` ((cluster, namespace)) in the
        block at ``start``, once its chunks are stored (``workload_compaction``), in a transaction
        of their own: on failure the block's workloads keep no statistics (their history is
        read from the samples) and compaction goes on."""
        if not namespaces:
            return
        begun = time.perf_counter()
        try:
            with self._engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                report.workloads += workload_compaction.take(
                    conn,
                    start,
                    block_ms=self.block_ms,
                    interval_ms=self.interval_ms,
                    namespaces=namespaces,
                )
        except Exception as exc:  # a derived record: the block's chunks are stored already
            log.warning(
                "the workloads' statistics of block %d were not taken (%s: %s); their history "
                "is read from the samples",
                start,
                type(exc).__name__,
                (str(exc).splitlines() or [""])[0][:300],  # not a driver's SQL and parameters
            )
        report.workload_seconds += time.perf_counter() - begun

    def compact_block(
        self, start: int, report: CompactionReport, teller: _Teller | None = None
    ) -> set[tuple[str, str]]:
        """Compact the block at ``start``: the (cluster, namespace) of every pod it held."""
        end = start + self.block_ms
        h = schema.samples_head
        with self._engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # see the module's docstring
            existing_ids = set(
                conn.execute(
                    select(schema.chunks.c.series_id).where(schema.chunks.c.block_start_ms == start)
                ).scalars()
            )
            # Ordered by series, as the head's rows sort cheapest: the containers of a pod are
            # created together, so their ids are neighbours and a pod is summed (and its
            # samples let go) as soon as its last container has been read.
            with conn.execute(
                select(h.c.series_id, h.c.ts_ms, h.c.window_ms, h.c.cpu_nanocores, h.c.memory_bytes)
                .where(heads.in_time(conn.dialect.name, start, end - 1))
                .order_by(h.c.series_id, h.c.ts_ms)
                .execution_options(stream_results=True, yield_per=STREAM_ROWS)
            ) as rows:
                namespaces = self._compact_rows(conn, start, rows, existing_ids, report, teller)
            self._head.drop_block(conn, start, end)
        report.blocks += 1
        report.block_starts.append(start)
        if report.expired_dropped:
            log.warning(
                "dropped %d late samples for block %d whose full resolution already expired",
                report.expired_dropped,
                start,
            )
        return namespaces

    def _compact_rows(
        self,
        conn: Connection,
        start: int,
        rows: Any,
        existing_ids: set[int],
        report: CompactionReport,
        teller: _Teller | None = None,
    ) -> set[tuple[str, str]]:
        """Chunks of the block's head rows (ordered by series and time) and its pods'
        statistics; the (cluster, namespace) of the pods."""
        pods = _PodsOf(conn)
        block = _Block(start, late=bool(existing_ids), containers=pods.containers)
        block.teller = teller
        current: int | None = None
        pod: PodKey | None = None
        run: list[dedup.Row] = []
        for part in rows.partitions():
            pods.learn({row[0] for row in part})
            for series_id, ts, window, cpu, memory in part:
                if series_id != current:
                    if current is not None:
                        self._close_series(conn, block, current, pod, run, existing_ids, report)
                    current, run = series_id, []
                    pod = pods.of.get(series_id)  # None: a node
                run.append((ts, window, cpu, memory))
        if current is not None:
            self._close_series(conn, block, current, pod, run, existing_ids, report)
        for key in list(block.open):  # pods with a container that has no sample in this block
            self._close_pod(conn, block, key)
        self._flush(conn, block, report)
        return {(cluster, namespace) for cluster, namespace, _pod in pods.containers}

    def _close_series(
        self,
        conn: Connection,
        block: _Block,
        series_id: int,
        pod: PodKey | None,
        rows: list[dedup.Row],
        existing_ids: set[int],
        report: CompactionReport,
    ) -> None:
        existing = None
        if series_id in existing_ids:
            existing = self._stored(conn, series_id, block.start)
            if existing is None:
                # This block's full resolution has already expired: its statistics cannot
                # take samples whose duplicates can no longer be detected.
                report.expired_dropped += len(rows)
                return
        merged, duplicates = dedup.merge(existing, rows)
        report.series += 1
        report.samples += len(rows) - duplicates
        report.duplicates_dropped += duplicates
        chunk = ChunkRow.of(series_id, block.start, merged)
        block.chunks.append(chunk)
        if pod is not None:
            found = block.open.setdefault(pod, _OpenPod())
            found.runs.append(merged)
            found.stats.append(chunk.stats)
            if len(found.runs) == block.containers[pod]:
                self._close_pod(conn, block, pod)
        if len(block.chunks) >= _UPSERT_BATCH or len(block.pod_stats) >= _UPSERT_BATCH:
            self._flush(conn, block, report)

    def _close_pod(self, conn: Connection, block: _Block, pod: PodKey) -> None:
        """The statistics of a pod whose containers have been read: the sum of its containers
        at each instant."""
        found = block.open.pop(pod)
        runs = found.runs
        if block.late:
            # Its containers without a late sample count too, from their stored chunks (the
            # new versions of the others first go to the database).
            if block.chunks:
                upsert_chunks(conn, block.chunks)
                block.chunks = []
            runs = self._stored_containers(conn, block.start, pod)
        elif len(runs) == 1:
            # One container: the pod's statistics are its container's, already taken.
            block.pod_stats[pod] = found.stats[0]
            return
        if runs:
            block.pod_stats[pod] = BlockStats.of(dedup.sum_runs(runs))

    def _flush(self, conn: Connection, block: _Block, report: CompactionReport) -> None:
        """Upsert the pending chunks, then the pending pods' statistics."""
        if block.teller is not None:
            block.teller.tell(report)
        if block.chunks:
            upsert_chunks(conn, block.chunks)
            block.chunks = []
        summed, block.pod_stats = block.pod_stats, {}
        if not summed:
            return
        first_seen = min(stats.first_ms for stats in summed.values())
        ids = pod_series_ids(conn, list(summed), first_seen_ms=first_seen)
        upsert_chunks(
            conn, [ChunkRow(ids[key], block.start, stats, None) for key, stats in summed.items()]
        )
        report.pods += len(summed)

    def _stored_containers(self, conn: Connection, start: int, pod: PodKey) -> list[ChunkSamples]:
        """The samples of every container of ``pod`` stored for the block at ``start``."""
        c, s = schema.chunks, schema.series
        payloads = conn.execute(
            select(c.c.payload)
            .join(s, s.c.id == c.c.series_id)
            .where(c.c.block_start_ms == start, s.c.kind == Kind.CONTAINER.value)
            .where(tuple_(s.c.cluster, s.c.namespace, s.c.pod) == pod)
            .where(c.c.payload.is_not(None))
        ).scalars()
        return [decode_samples(p) for p in payloads]

    def _stored(self, conn: Connection, series_id: int, start: int) -> ChunkSamples | None:
        c = schema.chunks
        payload = conn.execute(
            select(c.c.payload).where(c.c.series_id == series_id, c.c.block_start_ms == start)
        ).scalar()
        return None if payload is None else decode_samples(payload)


def pod_series_ids(
    conn: Connection, pods: Sequence[PodKey], *, first_seen_ms: int
) -> dict[PodKey, int]:
    """The ids of the pods' own series (kind ``pod``), created where missing."""
    s = schema.series
    wanted = set(pods)
    found: dict[PodKey, int] = {}

    def lookup(keys: Sequence[PodKey]) -> None:
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            for sid, cluster, namespace, pod in conn.execute(
                select(s.c.id, s.c.cluster, s.c.namespace, s.c.pod)
                .where(s.c.kind == Kind.POD.value)
                .where(tuple_(s.c.cluster, s.c.namespace, s.c.pod).in_(part))
            ):
                found[(cluster, namespace, pod)] = sid

    lookup(list(wanted))
    missing = [key for key in wanted if key not in found]
    if missing:
        conn.execute(
            dialect_insert(conn, s).on_conflict_do_nothing(),
            [
                {
                    "cluster": cluster,
                    "kind": Kind.POD.value,
                    "node": "",
                    "namespace": namespace,
                    "pod": pod,
                    "container": "",
                    "first_seen_ms": first_seen_ms,
                    "last_seen_ms": first_seen_ms,
                }
                for cluster, namespace, pod in missing
            ],
        )
        lookup(missing)
    return found


def upsert_chunks(conn: Connection, chunk_rows: Sequence[ChunkRow]) -> None:
    """Insert or replace these chunks, and advance their series' ``last_seen_ms``."""
    c = schema.chunks
    values = [row.values() for row in chunk_rows]
    insert = dialect_insert(conn, c)
    replace = {
        name: insert.excluded[name]
        for name in values[0]
        if name not in ("series_id", "block_start_ms")
    }
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[c.c.series_id, c.c.block_start_ms], set_=replace
        ),
        values,
    )
    s = schema.series
    conn.execute(
        update(s)
        .where(s.c.id == bindparam("sid"), s.c.last_seen_ms < bindparam("last"))
        .values(last_seen_ms=bindparam("last")),
        [{"sid": v["series_id"], "last": v["last_ms"]} for v in values],
    )
