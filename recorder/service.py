"""The service (``recorder run``/``demo``): the server process and the worker it supervises.

See ``worker.py`` for the process model. Here: check the configuration and the schema, start
the worker and wait for it to be ready, serve HTTP (probes, ``/metrics`` relayed from the
worker, queries read straight from the database), restart the worker if it dies, and on
SIGTERM or Ctrl+C stop both within the grace period and exit 0.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recorder import heap
from recorder.api.access import Authorizer, OpenAccess
from recorder.api.app import AppDeps, create_app
from recorder.api.kubernetes_access import KubernetesAccess
from recorder.api.server import build_server
from recorder.api.tls import check_pair
from recorder.api.tokens import TokenAccess
from recorder.errors import ConfigError
from recorder.exporter import KindLines, OwnExposition, RelayRegistry, receive
from recorder.kube.config import ClusterConfig, load_cluster_config
from recorder.kube.reviews import ReviewClient
from recorder.settings import Settings, listen_socket
from recorder.store import Store
from recorder.store.leader import SqliteWriterLock
from recorder.store.migrate import head_revision
from recorder.timeutil import seconds_to_ms
from recorder.worker import (
    STOP,
    Failed,
    Started,
    Status,
    Stopped,
    export_filter,
    open_write_store,
    own_cluster,
    ready_store,
)

log = logging.getLogger("recorder")

START_TIMEOUT_SECONDS = 120.0
"""Longest wait for the worker to open the database and the client (exec plugins included)."""
MAX_RESTART_DELAY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class _Exit:
    code: int | None
    at: float


_CHILD_CODE = (
    "import sys; from multiprocessing.connection import Connection; "
    "conn = Connection(int(sys.argv[1])); sys.path[:] = conn.recv(); "
    "from recorder.worker import worker_child; worker_child(conn)"
)
"""What the worker process runs: only the standard library until it has the server's
``sys.path`` (as ``multiprocessing``'s spawn does), then the worker with what it is sent."""


class WorkerProcess:
    """The worker process: a fresh interpreter, as ``multiprocessing``'s spawn starts one, and
    one end of a socket pair to talk to it.

    Spawn also starts a resource tracker process beside it (13 MiB at rest, for shared memory
    and named semaphores the recorder does not use): one process fewer in the container.
    ``subprocess.Popen`` reaps the process safely from several threads (the supervisor waits
    while probes ask whether it runs)."""

    def __init__(self, args: tuple[object, ...]) -> None:
        """Start it and send it ``args`` (``worker_main``'s, after the connection)."""
        parent, child = multiprocessing.Pipe(duplex=True)
        fd = child.fileno()
        try:
            # The interpreter's own flags (-O, -X ...), as multiprocessing passes them.
            flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags", list)()
            self._popen = subprocess.Popen(
                [sys.executable, *flags, "-c", _CHILD_CODE, str(fd)],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,  # as spawn's: it never reads the terminal
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.conn = parent
        try:
            parent.send([p for p in sys.path if isinstance(p, str)])
            parent.send(args)
        except (OSError, ValueError):
            pass  # it died at once: its exit code says why

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def exitcode(self) -> int | None:
        """Its exit code once it exited (negative: the signal that ended it)."""
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        """Wait until it exits, at most ``timeout`` seconds."""
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        self._popen.kill()  # nothing once it was reaped (Popen checks)


class WorkerHandle:
    """Starts the worker process, reads what it sends, restarts it when it dies."""

    def __init__(
        self,
        settings: Settings,
        relay: RelayRegistry,
        api_url: str | None = None,
        schema_head: str | None = None,
        *,
        elected: bool = False,
    ):
        """``schema_head``: the revision this process migrated or checked the database at;
        the worker checks against it and never loads Alembic. ``elected``: replicas elect a
        leader (PostgreSQL), so a dead worker's usage gauges go with it."""
        self._settings = settings
        self._relay = relay
        self._api_url = api_url
        self._schema_head = schema_head
        self._elected = elected
        self._lock = threading.Lock()
        self._process: WorkerProcess | None = None
        self._conn: Connection | None = None
        self._status: Status | None = None
        self._started = threading.Event()
        self._failed: str | None = None
        self._stopping = False
        self._stop_requested = threading.Event()
        self._stopped: Stopped | None = None
        self._last_exit: _Exit | None = None
        self.restarts = 0
        self.server = ""
        self._supervisor: threading.Thread | None = None
        self._receiver: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker and wait until it polls; ``ConfigError`` when it cannot start."""
        self._spawn()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._started.wait(0.1):
            if self._failed is not None:
                self._join(5.0)
                raise ConfigError(self._failed)
            if time.monotonic() > deadline:
                self._kill()
                raise ConfigError(
                    f"the worker did not start within {START_TIMEOUT_SECONDS:.0f}s (a database "
                    "or an exec credential plugin that does not answer?)"
                )
            process = self._process
            if process is not None and not process.is_alive() and self._failed is None:
                raise ConfigError(f"the worker exited at start (code {process.exitcode})")
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._supervisor.start()

    def stop(self, deadline: float) -> Stopped | None:
        """Ask the worker to stop; wait until ``deadline`` (monotonic), then kill it."""
        with self._lock:
            self._stopping = True
            conn = self._conn
        self._stop_requested.set()
        if conn is not None:
            try:
                conn.send(STOP)
            except (OSError, ValueError):
                pass
        if not self._join(max(0.0, deadline - time.monotonic())):
            log.error("the worker did not stop within the grace period; killing it")
            self._kill()
        return self._stopped

    def _spawn(self) -> None:
        process = WorkerProcess((self._settings, self._api_url, self._schema_head))
        parent = process.conn
        with self._lock:
            self._process, self._conn = process, parent
        receiver = threading.Thread(
            target=self._receive, args=(parent,), name="receiver", daemon=True
        )
        receiver.start()
        self._receiver = receiver

    def _join(self, timeout: float) -> bool:
        """Wait until the worker has exited. Once the supervisor runs, it alone reaps the
        process: two threads joining one process race in ``waitpid``, and the loser saw a
        worker that had stopped cleanly as still alive ("did not stop within the grace
        period; killing it")."""
        supervisor = self._supervisor
        if supervisor is not None and supervisor.is_alive():
            supervisor.join(timeout)
            return not supervisor.is_alive()
        process = self._process
        if process is None:
            return True
        process.join(timeout)
        return not process.is_alive()

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.is_alive():
            process.kill()
            self._join(5.0)

    def _supervise(self) -> None:
        delay = 1.0
        while True:
            process = self._process
            if process is None:
                return
            spawned = time.monotonic()
            process.join()
            with self._lock:
                if self._stopping:
                    return
            self._forget_worker()
            if time.monotonic() - spawned > 60:
                delay = 1.0  # it ran for a while: not a crash loop
            self._last_exit = _Exit(process.exitcode, time.time())
            log.error(
                "the worker process exited unexpectedly (code %s); restarting it in %.0fs",
                process.exitcode,
                delay,
            )
            if self._stop_requested.wait(delay):
                return
            self.restarts += 1
            self._spawn()
            delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)

    def _forget_worker(self) -> None:
        """The worker died. What it sent must not outlive it: its self-metrics
        (``recorder_leader 1``: a worker restarting every 30 s would keep them for good) are
        withdrawn, and ``/readyz`` no longer names it the leader. Among elected replicas its
        lock session ended with it, so another replica may lead within two intervals: its usage
        gauges go too (else Prometheus scraping both replicas stores each container twice
        until they grow stale, three intervals). A lone SQLite service keeps them for those
        intervals, as after a failed poll. The restarted worker sends its own."""
        receiver = self._receiver
        if receiver is not None:
            receiver.join(1.0)  # what it sent before it died is read first
        if self._elected:
            self._relay.withdraw()
        self._relay.set_worker_metrics(OwnExposition(b"", b""))
        status = self._status
        if status is not None:
            self._status = replace(status, leader=False, role="none: the worker is not running")

    # --- messages -------------------------------------------------------------------------

    def _receive(self, conn: Connection) -> None:
        while True:
            try:
                message = receive(conn)  # KindLines: compressed lines, kept as they came
            except (EOFError, OSError):
                return
            except Exception as exc:  # a message we cannot read must not stop the relay
                log.warning("unreadable message from the worker: %r", exc)
                continue
            if isinstance(message, KindLines):
                self._relay.publish(message)
            elif isinstance(message, Status):
                self._status = message
                self._relay.set_worker_metrics(message.metrics)
                if not message.leader:
                    self._relay.withdraw()  # only the leader's replica exposes usage gauges
            elif isinstance(message, Started):
                self.server = message.server
                self._started.set()
            elif isinstance(message, Failed):
                self._failed = message.message
            elif isinstance(message, Stopped):
                self._stopped = message

    # --- health ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def details(self, now: float, interval_seconds: float) -> dict[str, str]:
        """The worker's health for ``/readyz``'s details (not its verdict)."""
        details: dict[str, str] = {}
        pid = self.pid
        if pid is None:
            exited = self._last_exit
            code = exited.code if exited is not None else None
            details["worker"] = f"not running (last exit code {code}); restarting"
        else:
            details["worker"] = f"ok (pid {pid}, {self.restarts} restarts)"
        status = self._status
        if status is None:
            details["poll"] = "ok (starting)"
            return details
        allowed = max(3 * interval_seconds, 60.0)
        poll = status.poll
        if status.role.startswith("follower"):
            details["poll"] = "not polling: another replica leads"
        elif poll.last_attempt is None or now - poll.last_attempt > allowed:
            details["poll"] = f"stalled: no poll started in the last {allowed:.0f}s"
        elif poll.last_success is not None and now - poll.last_success <= allowed:
            details["poll"] = "ok"
        else:
            details["poll"] = f"failing: no successful poll in the last {allowed:.0f}s"
            if poll.last_error:
                details["poll"] += f": {poll.last_error}"
        details["role"] = status.role
        if status.objects is not None:
            details["cluster_objects"] = status.objects
        write = status.write
        if write.ok:
            details["write"] = "ok"
        else:
            # Anonymous clients read this: the error (which names the database) is in the log.
            since = write.failing_since or now
            details["write"] = f"failing for {now - since:.0f}s (the log says why)"
        if write.pending_samples:
            details["buffered"] = (
                f"{write.pending_samples} samples waiting ({write.memory_bytes} bytes in "
                f"memory, {write.spool_bytes} bytes spooled)"
            )
        return details


class WorkerCollector(Collector):
    """The worker process seen from the server: up, restarts, resident memory."""

    def __init__(self, handle: WorkerHandle) -> None:
        self._handle = handle

    def collect(self) -> Iterable[Metric]:
        pid = self._handle.pid
        yield GaugeMetricFamily(
            "recorder_worker_up",
            "1 while the worker process (polling and writing) runs, else 0",
            value=0 if pid is None else 1,
        )
        yield CounterMetricFamily(
            "recorder_worker_restarts",
            "Times the worker process died and was started again",
            value=self._handle.restarts,
        )
        rss = _resident_bytes(pid) if pid is not None else None
        if rss is not None:
            yield GaugeMetricFamily(
                "recorder_worker_resident_memory_bytes",
                "Resident memory of the worker process in bytes (process_resident_memory_bytes "
                "is the server process's)",
                value=rss,
                unit="bytes",
            )


def _resident_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def serve(settings: Settings, *, api_url: str | None = None, banner: Sequence[str] = ()) -> int:
    """Run the service until SIGTERM/SIGINT; 0 after a clean stop. ``banner`` is printed
    once the HTTP server listens (``recorder demo``'s URLs), never before a failure."""
    heap.limit_arenas()  # before the HTTP server's and the queries' threads start
    heap.map_large_blocks()
    settings.warn_about_interval()
    # Fail fast, in the user's terminal, when no cluster is configured or the address is taken.
    cluster = load_cluster_config(
        api_url=api_url or settings.api_url,
        kubeconfig=settings.kubeconfig,
        context=settings.context,
        environ=os.environ,
    )
    access = authorizer(settings, cluster)  # a bad token file stops the start, here
    _check_tls(settings)
    host, port = settings.listen_address
    sock = listen_socket(host, port)
    writer_lock: SqliteWriterLock | None = None
    try:
        # The schema is migrated (SQLite) or checked before the worker starts: both agree on it.
        store = ready_store(open_write_store(settings))
        if store.dialect == "sqlite" and store.engine.url.database:
            # One writing service per SQLite file (replicas need PostgreSQL, where they elect
            # one writer); held until this process exits. Taken once the file opened, so a
            # file that cannot be used says why first.
            try:
                writer_lock = SqliteWriterLock(Path(store.engine.url.database))
            except BaseException:
                store.close()
                raise
    except BaseException:
        if writer_lock is not None:
            writer_lock.close()
        sock.close()
        raise
    try:
        # The name it records under, or one line in the terminal before anything starts.
        name, uid = own_cluster(settings, cluster, store)
        settings = settings.model_copy(update={"cluster": name})
    except BaseException:
        store.close()
        sock.close()
        raise
    try:
        relay = RelayRegistry(
            settings.interval_seconds,
            export_filter(settings),
        )
        handle = WorkerHandle(
            settings, relay, api_url, head_revision(), elected=store.dialect == "postgresql"
        )
        relay.own.register(WorkerCollector(handle))
        try:
            handle.start()
        except BaseException:
            sock.close()
            raise
        try:
            app = create_app(_app_deps(settings, store, relay, handle, access, uid))
            server = build_server(
                app,
                host,
                port,
                max_connections=settings.http_max_connections,
                header_timeout_seconds=settings.http_header_timeout_seconds,
                # Open requests get a quarter of the grace; the worker has all of it.
                graceful_shutdown_seconds=max(1, int(settings.shutdown_grace_seconds / 4)),
                tls_cert_file=settings.tls_cert_file,
                tls_key_file=settings.tls_key_file,
            )
            sock.listen(server.config.backlog)
            log.info(
                "recording from %s into %s every %gs; HTTP on %s",
                cluster.server,
                store.display_url,
                settings.interval_seconds,
                settings.listen,
            )
            for line in banner:
                print(line, flush=True)
            server.run(sockets=[sock])
            started = server.started
        finally:
            sock.close()
            stopping = time.monotonic()
            stopped = handle.stop(stopping + settings.shutdown_grace_seconds)
            if stopped is not None:
                log.info(
                    "stopped: %d samples written at shutdown, %d spooled for the next start",
                    stopped.written,
                    stopped.spooled_samples,
                )
    finally:
        store.close()
        if writer_lock is not None:
            writer_lock.close()
    return 0 if started else 1


def _check_tls(settings: Settings) -> None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return
    try:
        check_pair(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--tls-cert-file {settings.tls_cert_file} and --tls-key-file "
            f"{settings.tls_key_file} are not a usable certificate and key: {exc}"
        ) from None


def authorizer(settings: Settings, cluster: ClusterConfig) -> Authorizer:
    """Who may read what, as ``settings.auth`` says; the reviews of ``kubernetes`` mode go to
    the cluster the recorder polls, with its credentials."""
    if settings.auth == "tokens":
        assert settings.auth_token_file is not None  # Settings checks it
        return TokenAccess(Path(settings.auth_token_file))
    if settings.auth == "kubernetes":
        client = ReviewClient(cluster, timeout_seconds=settings.auth_review_timeout_seconds)
        return KubernetesAccess(client, cache_seconds=settings.auth_cache_seconds)
    return OpenAccess()


def _app_deps(
    settings: Settings,
    store: Store,
    relay: RelayRegistry,
    handle: WorkerHandle,
    access: Authorizer,
    uid: str | None = None,
) -> AppDeps:
    # Which cluster this replica records, in /readyz's details (with its identity when known).
    identity = {"cluster": settings.cluster} | ({"clusterUid": uid} if uid else {})

    def poller_status() -> Mapping[str, str]:
        return {**handle.details(time.time(), settings.interval_seconds), **identity}

    return AppDeps(
        store=store,
        registry=relay,
        http_registry=relay.own,
        poller_status=poller_status,
        max_points=settings.max_points,
        max_samples=settings.max_samples,
        max_series=settings.max_series,
        max_range_ms=seconds_to_ms(settings.query_max_range_seconds),
        interval_ms=max(seconds_to_ms(settings.interval_seconds), 1),
        max_concurrent_queries=settings.max_concurrent_queries or max(2, os.cpu_count() or 2),
        max_queued_queries=settings.max_queued_queries,
        queue_timeout_seconds=settings.query_queue_timeout_seconds,
        authorizer=access,
        rate_limit=settings.rate_limit_per_second,
        rate_limit_burst=settings.rate_limit_burst,
        max_request_body_bytes=settings.max_request_body_bytes,
    )
