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
- **Stopping together**: the server sends ``"stop"``; the worker stops scheduling, waits for
  an in-flight poll until half the grace is gone, writes what waits until the deadline, parks
  the rest in the spool folder, closes the database and exits 0. A worker whose server dies
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

from recorder.buffer import Spool, WriteQueue
from recorder.domain import Kind
from recorder.errors import ConfigError, RecorderError
from recorder.exporter import (
    ExportFilter,
    KindLines,
    LineRenderer,
    OwnExposition,
    RecorderRegistry,
    SelfMetrics,
    SnapshotHolder,
    build_registry,
    own_exposition,
)
from recorder.flusher import Flusher, WriteHealth
from recorder.kube.client import MetricsClient
from recorder.kube.config import load_cluster_config
from recorder.kube.retry import RetryPolicy
from recorder.poller import Poller, PollReport
from recorder.scheduler import PollScheduler
from recorder.settings import Settings
from recorder.store import Store, open_store
from recorder.store.retention import RetentionPolicy
from recorder.store.sql import MaintenanceReport
from recorder.timeutil import now_ms, seconds_to_ms

log = logging.getLogger("recorder.worker")

STATUS_EVERY_SECONDS = 1.0
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
    return store


def ready_store(store: Store, *, migrate_sqlite: bool = True) -> Store:
    """``store`` at the current schema: SQLite is migrated (the embedded default needs no
    separate step), PostgreSQL is checked (``recorder migrate`` does it). Closed on failure."""
    try:
        if store.dialect == "sqlite" and migrate_sqlite:
            store.migrate()
        elif not store.schema_is_current():
            raise ConfigError(
                f"the database {store.display_url} is not at the current schema: "
                "run `recorder migrate` first"
            )
    except RecorderError:
        store.close()
        raise
    return store


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
) -> PollPath:
    """The poll path of ``recorder poll`` (``write_inline``: one process) and of the worker
    (a writer thread drains the queue). Whatever was opened is closed again on failure."""
    cluster = load_cluster_config(
        api_url=api_url or settings.api_url,
        kubeconfig=settings.kubeconfig,  # KUBECONFIG and HOME are read from environ
        context=settings.context,
        environ=os.environ,
    )
    with ExitStack() as opened:
        store = ready_store(open_write_store(settings))
        opened.callback(store.close)
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
        flusher = Flusher(queue, store, metrics)
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
        )
        opened.pop_all()
    return PollPath(cluster.server, store, client, holder, registry, queue, flusher, poller)


def maintain_logged(store: Store, metrics: SelfMetrics | None = None) -> MaintenanceReport | None:
    """One maintenance round; a failure is logged and counted, never raised."""
    try:
        report = store.maintain(now_ms=now_ms())
    except RecorderError as exc:
        log.error("maintenance failed (it runs again on schedule): %s", exc)
        if metrics is not None:
            metrics.maintenance_errors.inc()
        return None
    c, r = report.compaction, report.retention
    if metrics is not None and not report.skipped:
        metrics.compaction_duration.observe(c.seconds)
        metrics.refresh_store_statistics(store)
    if c.blocks or r.payloads_dropped or r.chunks_deleted:
        log.info(
            "maintenance: compacted %d blocks (%d series, %d samples, %d duplicates) in %.1fs; "
            "expired %d payloads, %d chunks, %d series",
            c.blocks,
            c.series,
            c.samples,
            c.duplicates_dropped,
            c.seconds,
            r.payloads_dropped,
            r.chunks_deleted,
            r.series_deleted,
        )
    return report


# --- the worker ---------------------------------------------------------------------------


class Worker:
    def __init__(self, settings: Settings, conn: Connection, api_url: str | None = None):
        self._settings = settings
        self._conn = conn
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._polling = threading.Lock()
        self._last_error: str | None = None
        self._path = path = build_poll_path(
            settings,
            api_url=api_url,
            write_inline=False,
            on_publish=self._send_lines,
            process_collectors=False,  # the server's process metrics are the ones served
        )
        self.server = path.server
        self.metrics = path.metrics
        self._store, self._holder, self._registry = path.store, path.holder, path.registry
        self._queue, self._flusher, self._poller = path.queue, path.flusher, path.poller
        self._renderer = LineRenderer(export_filter(settings))

    # --- running --------------------------------------------------------------------------

    def run(self) -> int:
        settings = self._settings
        self._send(Started(os.getpid(), self.server))
        writer = threading.Thread(
            target=self._flusher.run, args=(self._stop,), name="writer", daemon=True
        )
        writer.start()
        scheduler = PollScheduler(self._poll, settings.interval_seconds)
        scheduler.add_job(
            lambda: maintain_logged(self._store, self.metrics),
            settings.maintenance_interval_seconds,
            "maintain",
        )
        scheduler.add_job(
            lambda: self.metrics.refresh_store_statistics(self._store),
            STORE_STATISTICS_INTERVAL_SECONDS,
            "store-statistics",
        )
        scheduler.start()
        try:
            while not self._stop.is_set():
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

    def _poll(self) -> PollReport:
        with self._polling:
            report = self._poller.poll_once()
        failed = [o for o in report.outcomes if o.error is not None]
        self._last_error = "; ".join(f"{o.resource}: {o.error}" for o in failed) if failed else None
        self._send_status()
        return report

    def _shutdown(self, scheduler: PollScheduler, writer: threading.Thread) -> int:
        begun = time.monotonic()
        grace = self._settings.shutdown_grace_seconds
        deadline = begun + grace * 0.9
        self._stop.set()
        scheduler.shutdown(wait=False)
        if not self._polling.acquire(timeout=max(0.0, grace / 2)):
            log.warning("abandoning the poll in flight to stop in time")
        writer.join(timeout=max(0.0, deadline - time.monotonic()))
        written = 0
        if not writer.is_alive():
            written = self._flusher.flush(deadline=deadline).written
        else:
            log.warning("the database did not answer in time; parking what waits")
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
        self._send(Stopped(written, spooled, lost))
        self._send_status()
        if not writer.is_alive():
            self._path.close()
        log.info("worker stopped in %.1fs", time.monotonic() - begun)
        return 0

    # --- talking to the server ------------------------------------------------------------

    def _send_lines(self, kind: Kind) -> None:
        view = self._holder.view()
        published = view.nodes if kind is Kind.NODE else view.containers
        if published is None:
            return
        begun = time.perf_counter()
        lines = self._renderer.render(kind, published.samples)
        self.metrics.render_duration.observe(time.perf_counter() - begun)
        if lines is not None:
            self._send(lines)

    def _send_status(self) -> None:
        poller = self._poller
        self._send(
            Status(
                os.getpid(),
                PollState(poller.last_success_time, poller.last_attempt_time, self._last_error),
                self._flusher.health(),
                own_exposition(self._registry.own),
            )
        )

    def _send(self, message: Started | Status | KindLines | Stopped | Failed) -> None:
        with self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, ValueError):
                self._stop.set()  # the server is gone


def worker_main(settings: Settings, conn: Connection, api_url: str | None = None) -> None:
    """Entry point of the worker process (``multiprocessing`` spawn target)."""
    # Ctrl+C reaches the whole process group: the server decides when the worker stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(settings.log_level)
    code = 0
    try:
        worker = Worker(settings, conn, api_url)
    except RecorderError as exc:
        try:
            conn.send(Failed(str(exc)))
        except (OSError, ValueError):
            pass
        code = 2
    except Exception as exc:  # a traceback must never reach the user: say it in one line
        log.exception("the worker failed to start")
        try:
            conn.send(Failed(f"unexpected error: {exc!r}"))
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
    chosen = (level or "INFO").upper()
    logging.basicConfig(
        level=chosen,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if chosen != "DEBUG":
        # One line per request and per job run would drown the recorder's own messages.
        for noisy in ("httpx", "httpcore", "apscheduler"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
