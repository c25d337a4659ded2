"""The worker process of the service: polling, writing and maintenance, apart from serving.

Process model (``service.py`` is the other half):

- The **server** process answers HTTP (probes, ``/metrics``, queries). It starts the worker,
  restarts it if it dies, and on SIGTERM asks it to stop, waits up to the grace period, then
  exits 0. Python's GIL makes this a process boundary: a multi-second decode of a 150k-pod
  list or a stuck database call never delays a probe.
- The **worker** owns the write path: the Metrics API client, the poller (a scheduler thread),
  the write queue and its spool folder (it alone owns the buffer), the writer thread
  (``Flusher.run``) and maintenance. After each snapshot it sends the rendered sample lines,
  and every second its status and self-metrics, over a pipe.
- **Logging**: one line per poll, once its samples are stored (``PollLines``), and one per
  maintenance round (``maintain_logged``); libraries log at WARNING at least
  (``configure_logging``), so ``--log-level DEBUG`` is the recorder's own detail.
- **Leadership** (PostgreSQL; ``elector`` has the rules): a deposed leader hands what it
  fetched and did not store over to the new leader through the ``handover`` table
  (``_hand_over``, bounded by the database timeout; the rest is dropped and counted), and a
  leader's writer thread writes its cluster's handed-over batches at each write round
  (``Flusher.take_handed_over``: ``Store.take_handed_over``).
- **Stopping together**: the server sends ``"stop"``; the worker stops scheduling, waits for
  an in-flight poll until half the grace is gone, writes what waits until the deadline, parks
  the rest in the spool folder, closes the database and exits 0. The elector goes on
  proving the leader lock until that last write is done: a lock session silent for a lease
  is ended by the server (``idle_session_timeout``), and the fence would refuse the rest of
  the write. A worker whose server dies
  (the pipe closes) stops the same way. A database call stuck past the deadline is abandoned
  (the process exits without waiting for it); its batch is in the spool already.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection

from recorder import heap
from recorder.buffer import Spool, WriteQueue, decode_batch
from recorder.domain import Kind, WriteResult
from recorder.elector import Elector
from recorder.errors import ConfigError, RecorderError
from recorder.exporter import (
    ExportFilter,
    KindLines,
    LinePublisher,
    LineRenderer,
    OwnExposition,
    RecorderRegistry,
    SelfMetrics,
    SnapshotHolder,
    build_registry,
    own_exposition,
    send_lines,
)
from recorder.flusher import Flusher, FlushReport, WriteHealth, hand_over
from recorder.kube.client import MetricsClient
from recorder.kube.config import ClusterConfig, load_cluster_config
from recorder.kube.identity import cluster_uid
from recorder.kube.objects import MAX_PAGE_BYTES, Changes, ObjectReader
from recorder.kube.retry import RetryPolicy
from recorder.poller import Poller, PollReport, ResourceOutcome
from recorder.scheduler import PollScheduler
from recorder.settings import Settings
from recorder.store import Store, open_store
from recorder.store.handover import Outbox, Taken
from recorder.store.leader import Leadership
from recorder.store.migrate import current_revision, head_revision
from recorder.store.objects import ObjectStore
from recorder.store.retention import RetentionPolicy
from recorder.store.sql import MaintenanceReport
from recorder.timeutil import now_ms, seconds_to_ms

log = logging.getLogger("recorder.worker")

STATUS_EVERY_SECONDS = 1.0
OBJECTS_START_INTERVALS = 2.0
"""A leader starts reading the cluster objects once a poll is done with nothing left waiting
to be written, or this many poll intervals after it began to lead when nothing waits then,
whichever comes first (see ``Worker._lead``, ``objects_may_start``)."""
OBJECTS_START_LATEST_INTERVALS = 10.0
"""...and at the latest this many intervals after it began to lead, whatever waits."""
STORE_STATISTICS_INTERVAL_SECONDS = 60.0
STOP = "stop"


# --- messages from the worker to the server -----------------------------------------------


@dataclass(frozen=True, slots=True)
class PollState:
    last_success: float | None
    last_attempt: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Status:
    """Sent every second and after each poll: health for ``/readyz``, self-metrics."""

    pid: int
    poll: PollState
    write: WriteHealth
    metrics: OwnExposition
    objects: str | None = None
    """The cluster-object reader's health line (None: switched off, or not the leader)."""
    leader: bool = True
    """Whether this replica leads (polls and writes); a follower's server withdraws the
    cluster usage gauges."""
    role: str = "leader"
    """What ``/readyz`` says of this replica's part in the election."""


@dataclass(frozen=True, slots=True)
class Started:
    pid: int
    server: str
    """The Metrics API base URL polled (for the server's log line)."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The worker could not start: a configuration or database error, said to the user."""

    message: str


@dataclass(frozen=True, slots=True)
class Stopped:
    written: int
    spooled_samples: int
    lost_samples: int


# --- building the write path --------------------------------------------------------------


def open_write_store(settings: Settings, url: str | None = None) -> Store:
    """The store for ``settings`` (or another database ``url``): retention, block size and
    every timeout from the settings. Used by every command and both processes."""
    store = open_store(
        url or settings.database_url.get_secret_value(),
        block_ms=seconds_to_ms(settings.block_seconds),
        retention=RetentionPolicy(
            full_resolution_ms=seconds_to_ms(settings.full_resolution_retention_seconds),
            statistics_ms=seconds_to_ms(settings.statistics_retention_seconds),
            rollups_ms=seconds_to_ms(settings.rollup_retention_seconds),
        ),
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        statement_timeout_seconds=settings.database_timeout_seconds,
    )
    store.query_timeout_seconds = settings.query_timeout_seconds
    store.interval_ms = seconds_to_ms(settings.interval_seconds)
    return store


def ready_store(
    store: Store, *, migrate_sqlite: bool = True, schema_head: str | None = None
) -> Store:
    """``store`` at the current schema: SQLite is migrated (the embedded default needs no
    separate step), PostgreSQL is checked (``recorder migrate`` does it). With
    ``schema_head`` (the worker: the server process migrated already and says which revision
    that is) it is only checked against it. Closed on failure."""
    try:
        if store.dialect == "sqlite" and migrate_sqlite and schema_head is None:
            migrate_logged(store)
        elif not store.schema_is_current(head=schema_head):
            raise ConfigError(
                f"the database {store.display_url} is not at the current schema: "
                "run `recorder migrate` first"
            )
    except RecorderError:
        store.close()
        raise
    return store


def migrate_to_newest(store: Store) -> tuple[str, str] | None:
    """Migrate ``store`` if its schema is not the newest: the revisions it went from and to,
    or None when it was current. Alembic's own lines stay below WARNING."""
    if store.schema_is_current():
        return None
    try:
        before = current_revision(store.engine) or "no schema"
    except Exception:  # the revision only colours the message; migrate() reports failures
        before = "an unknown schema"
    store.migrate()
    return before, head_revision() or "the newest schema"


def migrate_logged(store: Store) -> None:
    """``migrate_to_newest``, said in one line ("migrated the database ... from 0001 to
    0002")."""
    done = migrate_to_newest(store)
    if done is not None:
        log.info("migrated the database %s from %s to %s", store.display_url, *done)


def export_filter(settings: Settings) -> ExportFilter:
    return ExportFilter(
        containers=settings.metrics_containers,
        namespaces=tuple(settings.metrics_namespace),
        exclude_namespaces=tuple(settings.metrics_exclude_namespace),
    )


@dataclass
class PollPath:
    """Everything one poll needs, from the Metrics API to the database, built from settings."""

    server: str
    store: Store
    client: MetricsClient
    holder: SnapshotHolder
    registry: RecorderRegistry
    queue: WriteQueue
    flusher: Flusher
    poller: Poller

    @property
    def metrics(self) -> SelfMetrics:
        return self.registry.metrics

    def close(self) -> None:
        for close in (self.queue.close, self.client.close, self.store.close):
            try:
                close()
            except Exception as exc:  # closing must not turn a clean stop into a crash
                log.warning("closing failed: %s", exc)


def build_poll_path(
    settings: Settings,
    *,
    api_url: str | None = None,
    write_inline: bool = True,
    on_publish: Callable[[Kind], None] = lambda kind: None,
    process_collectors: bool = True,
    announce: bool = True,
    schema_head: str | None = None,
    identify: bool = True,
) -> PollPath:
    """The poll path of ``recorder poll`` (``write_inline``: one process, which prints what
    failed) and of the worker (a writer thread drains the queue). ``announce``: log the
    configuration's warnings (the worker leaves them to the server process, which said them
    already). ``identify``: read the cluster's identity to choose its name (the worker is
    given the name the server process chose). Whatever was opened is closed again on
    failure."""
    cluster = load_cluster_config(
        api_url=api_url or settings.api_url,
        kubeconfig=settings.kubeconfig,  # KUBECONFIG and HOME are read from environ
        context=settings.context,
        environ=os.environ,
        announce=announce,
    )
    with ExitStack() as opened:
        store = ready_store(open_write_store(settings), schema_head=schema_head)
        opened.callback(store.close)
        name = own_cluster(settings, cluster, store)[0] if identify else store.own_cluster(settings)
        settings = settings.model_copy(update={"cluster": name})
        client = MetricsClient(
            cluster,
            timeout_seconds=settings.request_timeout_seconds,
            # Retries of one request stop after half an interval: a poll never runs into the next.
            retry=RetryPolicy(budget_seconds=settings.interval_seconds / 2),
            max_response_bytes=settings.max_response_bytes,
        )
        opened.callback(client.close)
        holder = SnapshotHolder(settings.interval_seconds)
        registry, metrics = build_registry(
            holder, export_filter(settings), process_collectors=process_collectors
        )
        spool_path = settings.spool_path()
        queue = WriteQueue(
            memory_bytes=settings.buffer_max_bytes,
            spool=Spool(spool_path, settings.spool_max_bytes) if spool_path else None,
            on_drop=lambda n, why: metrics.samples_dropped.labels(reason=why).inc(n),
        )
        # The writer thread writes while polls go on: they take turns (``heap.Turns``). A
        # step waits at most a third of an interval for its turn.
        turns = None if write_inline else heap.Turns(settings.interval_seconds / 3)
        flusher = Flusher(queue, store, metrics, quiet=write_inline, turns=turns)
        poller = Poller(
            client,
            flusher,
            holder,
            metrics,
            namespaces=settings.namespace,
            cluster=settings.cluster,
            max_future_skew_ms=seconds_to_ms(settings.max_future_skew_seconds),
            write_inline=write_inline,
            on_publish=on_publish,
            deadline_seconds=max(settings.interval_seconds, settings.request_timeout_seconds),
            turns=turns,
        )
        opened.pop_all()
    return PollPath(cluster.server, store, client, holder, registry, queue, flusher, poller)


def own_cluster(settings: Settings, cluster: ClusterConfig, store: Store) -> tuple[str, str | None]:
    """The name to record ``cluster`` under in ``store`` (``recorder.store.clusters``) and
    the cluster's ``kube-system`` UID when known: in a pod, it is read first (one line and
    the name chosen without it when that fails), then kept beside the name. ``ConfigError``
    (one line) when the database refuses this cluster."""
    uid = None
    if cluster.in_cluster:
        named = settings.cluster if "cluster" in settings.model_fields_set else None
        uid = cluster_uid(cluster, timeout_seconds=settings.request_timeout_seconds, named=named)
    name = store.own_cluster(settings, cluster.context, uid=uid, now_ms=now_ms())
    if uid is not None:
        log.info("recording cluster %s (kube-system UID %s)", name, uid)
    return name, uid


def build_object_reader(settings: Settings, path: PollPath) -> ObjectReader:
    """The cluster-object reader of ``path``'s cluster, storing into ``path``'s database: a
    client of its own (same credentials, TLS and limits, its own connections and a page-sized
    response limit), so a long watch never holds up a poll."""
    client = MetricsClient(
        path.client.config,
        timeout_seconds=settings.request_timeout_seconds,
        retry=RetryPolicy(budget_seconds=max(settings.request_timeout_seconds * 3, 30.0)),
        max_response_bytes=min(settings.max_response_bytes, MAX_PAGE_BYTES),
    )
    objects = ObjectStore(path.store.engine, settings.cluster, timeouts=path.store.timeouts)

    def store(changes: Changes) -> None:
        now = now_ms()
        objects.record_pods(changes.pods, now_ms=now)
        objects.record_containers(changes.containers, now_ms=now)
        objects.record_nodes(changes.nodes, now_ms=now)
        if changes.hpas is not None:
            objects.replace_hpas(changes.hpas, now_ms=now, namespaces=changes.hpa_namespaces)

    return ObjectReader(client, store, namespaces=settings.namespace)


def lease_seconds(interval_seconds: float) -> float:
    """How long a silent leader keeps the lock: one interval, within 1 s to 15 s, so a
    partitioned leader is replaced within two intervals (lease + a quarter lease to notice)."""
    return min(max(interval_seconds, 1.0), 15.0)


def objects_may_start(
    now: float, due: float, latest: float, waiting_samples: int, *, when_due: bool
) -> bool:
    """Whether the cluster-object reader may start now (``Worker._lead``): once nothing waits
    to be written (a poll is done, or ``due`` has come), or once ``latest`` has come whatever
    waits. ``when_due``: asked by the clock, which waits for ``due``; a poll done starts it
    at once."""
    if now >= latest:
        return True
    if waiting_samples:
        return False  # the batches that waited are written first
    return not when_due or now >= due


def maintain_logged(store: Store, metrics: SelfMetrics | None = None) -> MaintenanceReport | None:
    """One maintenance round, said in one line (what compaction and retention did, and how
    long the round took); a failure is logged and counted, never raised."""
    begun = time.perf_counter()
    try:
        report = store.maintain(now_ms=now_ms())
    except RecorderError as exc:
        log.error(
            "maintenance failed after %.2fs (it runs again on schedule): %s",
            time.perf_counter() - begun,
            exc,
        )
        if metrics is not None:
            metrics.maintenance_errors.inc()
        return None
    if report.skipped:
        return report  # the store said why (another replica maintains)
    if metrics is not None:
        metrics.compaction_duration.observe(report.compaction.seconds)
        metrics.refresh_store_statistics(store)
    log.info("maintenance in %.2fs: %s", time.perf_counter() - begun, maintenance_summary(report))
    return report


def maintenance_summary(report: MaintenanceReport) -> str:
    """What a maintenance round did, in a few words."""
    c, r = report.compaction, report.retention
    done = []
    if c.blocks:
        done.append(
            f"compacted {_count(c.blocks, 'block')} ({c.series} series, {c.samples} samples; "
            f"dropped {c.duplicates_dropped} duplicates and {c.expired_dropped} expired samples"
            + (f"; {_count(c.workloads, 'workload')}' statistics" if c.workloads else "")
            + ")"
        )
    if c.rollup_days:
        done.append(f"rolled up {_count(c.rollup_days, 'day')}")
    expired = {
        "payloads": r.payloads_dropped,
        "chunks": r.chunks_deleted,
        "workload statistics": r.workload_stats_deleted,
        "rollups": r.rollups_deleted,
        "series": r.series_deleted,
    }
    if any(expired.values()):
        done.append("expired " + ", ".join(f"{n} {what}" for what, n in expired.items() if n))
    return "; ".join(done) or "nothing to compact or expire"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- the service's log line per poll --------------------------------------------------------


@dataclass
class _OpenPoll:
    report: PollReport
    started: float
    waiting: dict[int, ResourceOutcome]
    """The poll's outcomes whose batch the writer has not stored yet, by queue number."""


class PollLines:
    """The service's one log line per poll, said once the poll's samples are stored.

    The writer thread stores a poll's batches after ``poll_once`` returned, or just before:
    ``polled`` hears each poll's report, ``flushed`` what each write round stored. A poll's
    line goes out when all its batches are stored, at once when the database is failing (its
    samples wait), or when the next poll comes first. Stored batches no poll waits for are
    samples held from earlier polls, counted in the next line.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        """``observe`` hears each poll's seconds from its start until its samples are stored
        (or wait for the database): ``recorder_poll_duration_seconds``."""
        self._log = logger or log
        self._clock = clock
        self._observe = observe
        self._lock = threading.Lock()
        self._open: list[_OpenPoll] = []
        self._unclaimed: dict[int, WriteResult] = {}
        self._failing = False

    def polled(self, report: PollReport, started: float) -> None:
        """``report`` of a poll that began at ``started`` (``clock``)."""
        waiting = {o.seq: o for o in report.outcomes if o.seq is not None and not o.stored}
        with self._lock:
            earlier, self._open = self._open, []
            for poll in earlier:  # a write that did not come back within an interval
                _waiting(poll.waiting)
            for seq in list(waiting):
                result = self._unclaimed.pop(seq, None)
                if result is not None:
                    _stored(waiting.pop(seq), result)
            report.flushed_from_buffer += sum(r.written for r in self._unclaimed.values())
            self._unclaimed.clear()
            if waiting and self._failing:
                _waiting(waiting)
            if waiting:
                self._open.append(_OpenPoll(report, started, waiting))
        for poll in earlier:
            self._say(poll)
        if not waiting:
            self._say(_OpenPoll(report, started, waiting))

    def flushed(self, flush: FlushReport) -> None:
        """What one write round stored (``Flusher.run``'s ``on_flush``)."""
        with self._lock:
            for seq, result in flush.by_seq.items():
                poll = next((p for p in self._open if seq in p.waiting), None)
                if poll is None:
                    self._unclaimed[seq] = result
                else:
                    _stored(poll.waiting.pop(seq), result)
            if flush.by_seq or flush.error is not None:
                self._failing = flush.error is not None
            if self._failing:
                for poll in self._open:
                    _waiting(poll.waiting)
            done = [p for p in self._open if not p.waiting]
            self._open = [p for p in self._open if p.waiting]
        for poll in done:
            self._say(poll)

    def close(self) -> None:
        """Say the polls still waiting for the writer (at shutdown, their samples wait)."""
        with self._lock:
            left, self._open = self._open, []
            for poll in left:
                _waiting(poll.waiting)
        for poll in left:
            self._say(poll)

    def _say(self, poll: _OpenPoll) -> None:
        elapsed = self._clock() - poll.started
        self._observe(elapsed)
        level, line = poll.report.log_line(elapsed)
        self._log.log(level, "%s", line)


def _stored(outcome: ResourceOutcome, result: WriteResult) -> None:
    outcome.written, outcome.skipped = result.written, result.skipped_duplicates
    outcome.rejections.extend(result.rejected)
    outcome.stored = True


def _waiting(outcomes: dict[int, ResourceOutcome]) -> None:
    for outcome in outcomes.values():
        outcome.waiting = True
    outcomes.clear()


# --- the worker ---------------------------------------------------------------------------


class Worker:
    def __init__(
        self,
        settings: Settings,
        conn: Connection,
        api_url: str | None = None,
        schema_head: str | None = None,
    ):
        self._settings = settings
        self._conn = conn
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._elector_stop = threading.Event()
        """Set after the last write at shutdown, not with ``_stop``: see ``_shutdown``."""
        self._polling = threading.Lock()
        self._last_error: str | None = None
        self._path = path = build_poll_path(
            settings,
            api_url=api_url,
            write_inline=False,
            on_publish=self._send_lines,
            process_collectors=False,  # the server's process metrics are the ones served
            announce=False,  # the server process said the configuration's warnings
            identify=False,  # and chose the cluster's name (given in settings.cluster)
            schema_head=schema_head,  # the server migrated: no Alembic in this process
        )
        self.server = path.server
        self.metrics = path.metrics
        self._published: set[Kind] = set()
        self._published_lock = threading.Lock()
        self._poll_lines = PollLines(observe=self._poll_stored)
        self._store, self._holder, self._registry = path.store, path.holder, path.registry
        self._queue, self._flusher, self._poller = path.queue, path.flusher, path.poller
        self._objects: ObjectReader | None = None
        self._objects_due: float | None = None
        """When the built reader starts by the clock if nothing waits to be written
        (``time.monotonic()``); None once it started, or while there is none."""
        self._objects_latest = 0.0
        """When it starts even while batches wait to be written (``objects_may_start``)."""
        self._objects_lock = threading.Lock()
        leadership: Leadership | None = None
        self._outbox: Outbox | None = None
        if self._store.dialect == "postgresql":
            url = settings.database_url.get_secret_value()
            leadership = Leadership(
                url,
                lease_seconds=lease_seconds(settings.interval_seconds),
                cluster=settings.cluster,
                timeouts=self._store.timeouts,
            )
            leadership.fence(self._store.engine)  # every write transaction checks it
            self._outbox = Outbox(
                url,
                cluster=settings.cluster,
                replica=leadership.replica,
                timeouts=path.store.timeouts,
            )
            self._flusher.take_handed_over = self._take_handed_over
        self._elector = Elector(
            leadership,
            self._registry.own,
            settings.interval_seconds,
            on_lead=self._lead,
            on_lost=self._lost,
            on_depose=self._depose,
        )
        self._lines = LinePublisher(
            self._holder,
            LineRenderer(export_filter(settings)),
            self._send,
            self.metrics.render_duration.observe,
            # After the poll's write, in a turn of its own (waiting a third of an interval at
            # most for each): the poll is stored sooner and the two peaks do not add up.
            lambda: self._flusher.after_writes(settings.interval_seconds / 3),
        )

    # --- running --------------------------------------------------------------------------

    def run(self) -> int:
        settings = self._settings
        self._send(Started(os.getpid(), self.server))
        self._elector.begin()  # lead at once when no one does
        if not self._elector.is_leader and len(self._queue):
            # Batches spooled by an earlier run belong to its term: another replica leads.
            self._hand_over("not_leader")
        self._elector_thread = threading.Thread(
            target=self._elector.run, args=(self._elector_stop,), name="elector", daemon=True
        )
        self._elector_thread.start()
        writer = threading.Thread(
            target=self._flusher.run,
            args=(self._stop, self._poll_lines.flushed),
            name="writer",
            daemon=True,
        )
        writer.start()
        self._lines.start()
        scheduler = PollScheduler(self._poll, settings.interval_seconds)
        scheduler.add_job(self._maintain, settings.maintenance_interval_seconds, "maintain")
        scheduler.add_job(
            self._refresh_statistics, STORE_STATISTICS_INTERVAL_SECONDS, "store-statistics"
        )
        scheduler.start()
        try:
            while not self._stop.is_set():
                self._start_objects(when_due=True)
                self._send_status()
                if self._conn.poll(STATUS_EVERY_SECONDS):
                    try:
                        message = self._conn.recv()
                    except (EOFError, OSError):
                        log.warning("the server process is gone; stopping")
                        break
                    if message == STOP:
                        break
        except (EOFError, OSError):
            log.warning("the server process is gone; stopping")
        return self._shutdown(scheduler, writer)

    def _maintain(self) -> None:
        if self._elector.is_leader:  # one maintainer: the leader
            maintain_logged(self._store, self.metrics)

    def _refresh_statistics(self) -> None:
        if self._elector.is_leader:  # a follower's fenced engine reads nothing
            self.metrics.refresh_store_statistics(self._store)

    def _poll(self) -> PollReport | None:
        if not self._elector.may_poll:
            return None  # a follower serves; the leader polls
        begun = time.monotonic()
        with self._polling:  # held until its line is handed over: shutdown waits for both
            report = self._poller.poll_once()
            self._poll_lines.polled(report, begun)
        failed = [o for o in report.outcomes if o.error is not None]
        if not failed:
            self._elector.polled(time.time(), sum(o.samples for o in report.outcomes))
        self._last_error = "; ".join(f"{o.resource}: {o.error}" for o in failed) if failed else None
        self._send_status()
        return report

    def _shutdown(self, scheduler: PollScheduler, writer: threading.Thread) -> int:
        begun = time.monotonic()
        grace = self._settings.shutdown_grace_seconds
        deadline = begun + grace * 0.9
        self._stop.set()
        scheduler.shutdown(wait=False)
        self._stop_objects(min(2.0, grace / 4))
        self._lines.close()
        if not self._polling.acquire(timeout=max(0.0, grace / 2)):
            log.warning("abandoning the poll in flight to stop in time")
        writer.join(timeout=max(0.0, deadline - time.monotonic()))
        written = 0
        if not writer.is_alive():
            flushed = self._flusher.flush(deadline=deadline)
            self._poll_lines.flushed(flushed)
            written = flushed.written
        else:
            log.warning("the database did not answer in time; parking what waits")
        self._poll_lines.close()
        self._queue.park_all()
        raw, lost, spooled = self._queue.samples_by_place
        lost += raw
        if lost:
            log.error(
                "stopping with %d samples that could not be written nor spooled: they are lost "
                "(set RECORDER_SPOOL_DIR to a writable folder to keep them across restarts)",
                lost,
            )
        elif spooled:
            log.info("stopping: %d samples spooled for the next start", spooled)
        # The heartbeat ran through the write: stop it now (a round in flight ends within
        # half a lease, its own deadline), then the lock goes and another replica leads.
        self._elector_stop.set()
        left = begun + grace - time.monotonic()
        self._elector_thread.join(timeout=max(0.1, min(self._elector.check_seconds * 2, left)))
        self._elector.close()
        self._send(Stopped(written, spooled, lost))
        self._send_status()
        if not writer.is_alive():
            self._path.close()
        if self._outbox is not None:
            self._outbox.close()
        log.info("worker stopped in %.1fs", time.monotonic() - begun)
        return 0

    # --- leadership -----------------------------------------------------------------------

    def _lead(self) -> None:
        """This replica leads now: the writer reloads what others wrote meanwhile, and the
        cluster-object reader is made, to start once a poll is done (``_poll_stored``).

        Not at once: at 150,000 pods its first lists (150,000 pods' records kept, pages of
        JSON read and freed) ran beside the writer's load of its maps, the batches spooled
        by the last run and the first poll, all keeping objects amid others' short-lived
        ones, so the heap's arenas stayed pinned: a restart's worker peaked at 434 MB and
        rested at 378 MB between polls, against 363 and 324 MB started so (VmRSS). It
        reads in threads of its own, never in the poll's way. Nor while the writer works
        through batches that waited (spooled by the last run, or held through an outage):
        at 150,000 pods on a slow machine a restart with three polls spooled read the first
        lists beside them and the worker went from 388 to 548 MB (563 at the peak, 496
        when they wait; the backlog alone still overflows a 512 MiB pod there). At the
        latest ``OBJECTS_START_INTERVALS`` intervals later when nothing waits (a poll that
        never succeeds: the reader does not depend on it), ``OBJECTS_START_LATEST_INTERVALS``
        whatever waits (a database that stays down)."""
        self._store.invalidate_writer()
        if not self._settings.cluster_objects:
            return
        with self._objects_lock:
            if self._objects is None and not self._stop.is_set():
                self._objects = build_object_reader(self._settings, self._path)
                now = time.monotonic()
                interval = self._settings.interval_seconds
                self._objects_due = now + OBJECTS_START_INTERVALS * interval
                self._objects_latest = now + OBJECTS_START_LATEST_INTERVALS * interval

    def _start_objects(self, *, when_due: bool) -> None:
        """Start the cluster-object reader made by ``_lead`` unless it runs, when
        ``objects_may_start`` says so (``when_due``: asked by the clock, not by a poll)."""
        with self._objects_lock:
            due = self._objects_due
            if self._objects is None or due is None or self._stop.is_set():
                return
            waiting = self._queue.pending_samples
            if not objects_may_start(
                time.monotonic(), due, self._objects_latest, waiting, when_due=when_due
            ):
                return
            self._objects_due = None
            self._objects.start()

    def _lost(self) -> None:
        """The lock is lost (polling goes on into the buffer): the cluster-object reader stops
        and the server withdraws the usage gauges."""
        self._stop_objects(2.0)
        self._send_status()

    def _depose(self) -> None:
        """Another replica leads: what this one fetched and did not store (the fence refuses
        it) is handed over to the new leader, which writes it (``_hand_over``)."""
        # A poll in flight puts its batches first (no new poll starts: this replica follows).
        if self._polling.acquire(timeout=self._settings.interval_seconds):
            self._polling.release()
        self._hand_over("deposed")
        self._send_status()

    def _hand_over(self, reason: str) -> None:
        """Hand every waiting batch over to the leader (``flusher.hand_over``), within the
        database timeout; the rest is dropped and counted for ``reason``."""
        if self._outbox is None:
            self._queue.drop_all(reason)
            return
        hand_over(
            self._queue,
            self._outbox,
            self.metrics,
            reason=reason,
            deadline_seconds=self._settings.database_timeout_seconds,
        )

    def _take_handed_over(self, now: int) -> Taken | None:
        """The writer's check for handed-over batches: the leader's alone (a follower's
        fenced store would refuse it, after a round trip to check out a connection)."""
        if not self._elector.is_leader:
            return None
        return self._store.take_handed_over(self._settings.cluster, decode_batch, now_ms=now)

    def _stop_objects(self, timeout_seconds: float) -> None:
        with self._objects_lock:
            objects, self._objects, self._objects_due = self._objects, None, None
        if objects is not None:
            objects.stop(timeout_seconds=timeout_seconds)
            objects.client.close()

    # --- talking to the server ------------------------------------------------------------

    def _send_lines(self, kind: Kind) -> None:
        """A new snapshot of ``kind``: its gauges are rendered once the poll's samples are
        stored (``_poll_stored``), so rendering never competes with the poll and the write
        for the interpreter (a third of a poll's CPU at 150,000 pods)."""
        with self._published_lock:
            self._published.add(kind)

    def _poll_stored(self, seconds: float) -> None:
        """A poll's samples are stored, or wait for the database (or it had none): its
        duration is observed, its snapshots go to the relay thread, and the cluster-object
        reader starts if it waits for a poll (``_lead``)."""
        self.metrics.poll_duration.observe(seconds)
        self._start_objects(when_due=False)
        with self._published_lock:
            kinds, self._published = self._published, set()
        for kind in sorted(kinds):
            self._lines.announce(kind)  # rendered on the relay thread

    def _send_status(self) -> None:
        poller = self._poller
        self._send(
            Status(
                os.getpid(),
                PollState(poller.last_success_time, poller.last_attempt_time, self._last_error),
                self._flusher.health(),
                own_exposition(self._registry.own),
                self._objects.health() if self._objects is not None else None,
                leader=self._elector.is_leader,
                role=self._elector.role,
            )
        )

    def _send(self, message: Started | Status | KindLines | Stopped | Failed) -> None:
        with self._send_lock:
            try:
                if isinstance(message, KindLines):
                    send_lines(self._conn, message)
                else:
                    self._conn.send(message)
            except (OSError, ValueError):
                self._stop.set()  # the server is gone


def worker_child(conn: Connection) -> None:
    """Entry point of the worker process (``service.WorkerProcess``): ``worker_main`` with the
    arguments the server sends first. A server gone before it sent them ends it (code 2)."""
    try:
        settings, api_url, schema_head = conn.recv()
    except (EOFError, OSError, ValueError):
        os._exit(2)
    worker_main(settings, conn, api_url, schema_head)


def worker_main(
    settings: Settings,
    conn: Connection,
    api_url: str | None = None,
    schema_head: str | None = None,
) -> None:
    """The worker process's life, from ``worker_child``; it exits the process. ``schema_head``:
    the schema revision the server process migrated the database to."""
    # Ctrl+C reaches the whole process group: the server decides when the worker stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    heap.limit_arenas()  # before the poller, writer and relay threads start
    heap.map_large_blocks()
    configure_logging(settings.log_level)
    code = 0
    try:
        worker = Worker(settings, conn, api_url, schema_head)
    except RecorderError as exc:
        try:
            conn.send(Failed(str(exc)))
        except (OSError, ValueError):
            pass
        code = 2
    except Exception as exc:  # a bug: the server says it in one line, the traceback is DEBUG
        log.debug("the worker failed to start", exc_info=True)
        try:
            conn.send(
                Failed(
                    f"the worker failed to start with an unexpected error: {exc!r} (run with "
                    "--log-level DEBUG for the traceback, and please report it)"
                )
            )
        except (OSError, ValueError):
            pass
        code = 2
    else:
        code = worker.run()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    # Threads stuck in a database call must not keep a stopping process alive.
    os._exit(code)


def configure_logging(level: str | None) -> None:
    """Log lines to stderr: the recorder's own loggers (``recorder.*``) at ``level`` (default
    INFO), every library's at WARNING at least whatever ``level`` is. ``--log-level DEBUG``
    is the recorder's detail, not httpcore's trace of each request, APScheduler's of each job,
    SQLAlchemy's pool, Alembic's "Context impl" or asyncio's selector."""
    chosen = logging.getLevelNamesMapping()[(level or "INFO").upper()]
    logging.basicConfig(
        level=max(chosen, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("recorder").setLevel(chosen)
