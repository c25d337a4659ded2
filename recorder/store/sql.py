"""``Store``: the one object the poller, the HTTP API and the CLI use to reach the database."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, event, func, literal, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from recorder.domain import (
    Batch,
    WriteResult,
)
from recorder.errors import QueryTimeout, StoreError, StoreUnavailable
from recorder.settings import Settings
from recorder.store import clusters, deletion, handover, migrate, rollups, schema
from recorder.store import engine as engines
from recorder.store.compactor import CompactionReport, Compactor, Progress, block_start
from recorder.store.deletion import DeletionReport, Doomed
from recorder.store.head import Head, PostgresHead, SqliteHead
from recorder.store.retention import RetentionPolicy, RetentionReport, apply_retention
from recorder.store.writer import SampleWriter
from recorder.timeutil import HOUR_MS, seconds_to_ms

log = logging.getLogger(__name__)

DEFAULT_BLOCK_MS = HOUR_MS
DEFAULT_GRACE_MS = 600_000
DEFAULT_QUERY_TIMEOUT_SECONDS = 30.0
DEFAULT_CHECK_TIMEOUT_SECONDS = 5.0
_MAINTENANCE_LOCK_KEY = 0x6B6D72  # "kmr": one maintainer at a time across replicas
MAINTENANCE_WAIT_SECONDS = 900.0
"""How long ``maintenance_excluded`` waits for a maintenance round in progress to end."""


@dataclass
class MaintenanceReport:
    compaction: CompactionReport
    retention: RetentionReport
    skipped: bool = False


class Store:
    """Writes batches (one transaction each), compacts and expires, reads history.

    Thread-safe: one writer at a time inside this process, any number of readers. On SQLite,
    compaction of a block takes the same lock as writes, since SQLite has one writer anyway.

    Failures: ``StoreUnavailable`` (a ``StoreError``) when the database cannot take the
    operation now (retry it as is), a plain ``StoreError`` when an operator must act (e.g. the
    schema is missing). ``write`` never raises for rows the database refuses for their content:
    it writes the rest and reports them in ``WriteResult.rejected``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        display_url: str,
        block_ms: int = DEFAULT_BLOCK_MS,
        retention: RetentionPolicy | None = None,
        timeouts: engines.Timeouts | None = None,
    ):
        self.engine = engine
        self.display_url = display_url
        self.timeouts = timeouts or engines.Timeouts()
        self.block_ms = block_ms
        self.retention = retention or RetentionPolicy()
        self.head: Head = PostgresHead(block_ms) if self.dialect == "postgresql" else SqliteHead()
        self._writer = SampleWriter(engine, self.head)
        self._compactor = Compactor(engine, self.head, block_ms)
        self._write_lock = threading.Lock()
        self._ping_check = _BoundedCheck()
        self._schema_check = _BoundedCheck()
        self.query_timeout_seconds = DEFAULT_QUERY_TIMEOUT_SECONDS
        if self.dialect == "sqlite":
            event.listen(engine, "connect", _install_deadline_check)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def interval_ms(self) -> int:
        """The poll interval, at whose multiples compaction aligns each workload's pods
        (``workload_stats``); ``RECORDER_INTERVAL``'s default until set."""
        return self._compactor.interval_ms

    @interval_ms.setter
    def interval_ms(self, value: int) -> None:
        self._compactor.interval_ms = max(int(value), 1)

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision, each migration in one transaction."""
        migrate.upgrade(self.engine, timeouts=self.timeouts)

    def schema_is_current(
        self, timeout_seconds: float = DEFAULT_CHECK_TIMEOUT_SECONDS, *, head: str | None = None
    ) -> bool:
        """Whether the database is at the newest schema revision (``head`` when the caller
        knows it). Logs nothing; answers within ``timeout_seconds`` or raises
        ``StoreUnavailable``."""
        return self._schema_check.run(
            lambda: migrate.is_current(self.engine, head),
            timeout_seconds,
            f"reading the schema version of {self.display_url}",
            self.timeouts,
        )

    def ping(self, timeout_seconds: float = DEFAULT_CHECK_TIMEOUT_SECONDS) -> None:
        """Check that the database answers a query within ``timeout_seconds``, even when it is
        frozen and a statement sent to it would wait forever: the query runs in a thread of its
        own (one at a time; while one is still waiting, the next check fails at once)."""
        self._ping_check.run(
            self._ping, timeout_seconds, f"reaching the database {self.display_url}", self.timeouts
        )

    def _ping(self) -> None:
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT 1"))
            else:
                # Reads the file's first page, so an unreadable file fails here.
                conn.execute(text("SELECT count(*) FROM sqlite_master"))

    def volume_bytes(self) -> tuple[str, int, int] | None:
        """(folder, size, available) of the filesystem holding a SQLite file, available as an
        unprivileged process may use it; ``None`` for PostgreSQL (its server watches its own
        disk)."""
        if self.dialect != "sqlite" or not self.engine.url.database:
            return None
        folder = Path(self.engine.url.database).resolve().parent
        try:
            found = os.statvfs(folder)
        except OSError:
            return None
        return str(folder), found.f_blocks * found.f_frsize, found.f_bavail * found.f_frsize

    def size_bytes(self) -> int:
        """Bytes the database takes: SQLite's pages plus its write-ahead log, PostgreSQL's
        ``pg_database_size``. Cheap on both (no table scan)."""
        try:
            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    size = conn.execute(text("SELECT pg_database_size(current_database())"))
                    return int(size.scalar_one())
                pages = int(conn.execute(text("PRAGMA page_count")).scalar_one())
                page_size = int(conn.execute(text("PRAGMA page_size")).scalar_one())
        except SQLAlchemyError as exc:
            raise engines.failure(
                exc, f"reading the size of {self.display_url}", self.timeouts
            ) from exc
        wal = Path(f"{self.engine.url.database}-wal")
        return pages * page_size + (wal.stat().st_size if wal.is_file() else 0)

    def series_counts(self) -> dict[str, int]:
        """Series in the database by kind (``node``, ``container``): one scan of the series
        table, so callers cache it (the service refreshes it every minute)."""
        query = select(schema.series.c.kind, func.count()).group_by(schema.series.c.kind)
        try:
            with self.engine.connect() as conn:
                return {str(kind): int(count) for kind, count in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise engines.failure(
                exc, f"counting the series in {self.display_url}", self.timeouts
            ) from exc

    def write(self, batch: Batch, *, now_ms: int) -> WriteResult:
        """Write a batch: samples that fit their columns and that the database takes are
        written (mostly in one transaction), exact duplicates skipped, and the rest reported in
        ``WriteResult.rejected``; see ``writer``.

        Raises ``StoreUnavailable`` when the database cannot take the write now, ``StoreError``
        when an operator must act; either way the batch should be retried as a whole."""
        with self._write_lock:
            try:
                return self._writer.write(batch, now_ms)
            except engines.DATABASE_ERRORS as exc:
                raise engines.failure(
                    exc,
                    f"writing {len(batch.samples)} {batch.kind.value} samples to "
                    f"{self.display_url}",
                    self.timeouts,
                ) from exc

    def take_handed_over(
        self, cluster: str, decode: Callable[[bytes], Batch], *, now_ms: int
    ) -> handover.Taken | None:
        """Write the oldest batch a deposed leader of ``cluster`` handed over and delete it, in
        one transaction (see ``recorder.store.handover``); its samples the head holds already
        are skipped. None when no batch waits. A payload ``decode`` refuses (``ValueError``, or
        any other error) is deleted unwritten and reported (``Taken.error``). Raises as
        ``write`` does (``NotLeader`` on a fenced engine of a replica that does not lead); the
        batch then stays."""
        with self._write_lock:
            try:
                with self.engine.begin() as conn:
                    row = handover.oldest(conn, cluster)
                    if row is None:
                        return None
                    taken = handover.Taken(
                        row.id, row.kind, row.samples, row.replica, row.created_ms
                    )
                    try:
                        batch = decode(row.payload)
                    except Exception as exc:  # any way of not being a batch: never blocks
                        handover.remove(conn, row.id)
                        return dataclasses.replace(taken, error=str(exc) or repr(exc))
                    result = self._writer.write(batch, now_ms, conn, against_head=True)
                    handover.remove(conn, row.id)
                return dataclasses.replace(taken, result=result)
            except BaseException as exc:
                # The writer's maps learned writes that rolled back with the transaction.
                self._writer.invalidate()
                self.head.forget()
                if isinstance(exc, engines.DATABASE_ERRORS):
                    raise engines.failure(
                        exc, f"writing a handed-over batch to {self.display_url}", self.timeouts
                    ) from exc
                raise

    def prepare(self) -> None:
        """Read what the writer needs from the database (series ids, newest samples, pods'
        labels) unless it holds them already: the flusher asks before it reads a batch back
        from the buffer, so while the database is down a retry costs this read and no decode.
        Raises as ``write`` does."""
        with self._write_lock:
            try:
                self._writer.prepare()
            except engines.DATABASE_ERRORS as exc:
                raise engines.failure(
                    exc, f"reading the series to write from {self.display_url}", self.timeouts
                ) from exc

    def ready(self) -> None:
        """Ask the database for the reads of ``prepare`` before it runs, when it would load:
        one row of each table it reads. A held lock (a stuck migration, ``LOCK TABLE``)
        makes this wait and fail as the load would (``lock_timeout``), but the caller holds
        nothing meanwhile: the flusher asks it outside its write turn, and the load, in the
        turn, no longer waits out a lock while a poll waits for the turn (at 150,000 pods
        the poll then went on after a third of an interval, and when the lock went both read
        at once: the worker was OOM-killed in 512 MiB). Raises as ``prepare`` does."""
        with self._write_lock:
            if self._writer.loaded:
                return
            try:
                with self.engine.connect() as conn:
                    for table in (schema.series, schema.pod_labels, schema.samples_head):
                        conn.execute(select(literal(1)).select_from(table).limit(1)).all()
                    if self.dialect == "sqlite":
                        # In WAL mode a file locked by another writer still answers reads:
                        # the load would run, and the write after it wait out the busy
                        # timeout and fail; so a load at each retry of an outage (at 150,000
                        # pods, 200,000 series read back beside the polls every few seconds: in
                        # one bench.scale run the worker was OOM-killed twice in 512 MiB). Ask
                        # for the write lock too.
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                        conn.rollback()
            except engines.DATABASE_ERRORS as exc:
                raise engines.failure(
                    exc, f"reading the series to write from {self.display_url}", self.timeouts
                ) from exc

    def invalidate_writer(self) -> None:
        """Make the next write reload series ids and newest timestamps from the database (after
        another process, such as ``recorder copy``, changed them)."""
        with self._write_lock:
            self._writer.invalidate()

    def maintain(
        self, *, now_ms: int, grace_ms: int = DEFAULT_GRACE_MS, progress: Progress | None = None
    ) -> MaintenanceReport:
        """Compact every closed block, then apply retention. On PostgreSQL only one replica
        maintains at a time; the others skip the round (and so does every replica while
        ``recorder copy`` writes into this database). ``progress`` hears how far compaction
        has come."""
        try:
            with self._maintenance_lock() as acquired:
                if not acquired:
                    log.info("another replica is maintaining the database; skipping this round")
                    return MaintenanceReport(CompactionReport(), RetentionReport(), skipped=True)
                lock = self._write_lock if self.dialect == "sqlite" else None
                compaction = self._compactor.compact(now_ms, grace_ms, lock=lock, progress=progress)
                compaction.rollup_days = rollups.build(
                    self.engine,
                    block_start(now_ms - grace_ms, self.block_ms),
                    compaction.block_starts,
                )
                retention = apply_retention(self.engine, now_ms, self.retention, self.block_ms)
                if retention.series_deleted:
                    self.invalidate_writer()
                return MaintenanceReport(compaction, retention)
        except engines.DATABASE_ERRORS as exc:
            raise engines.failure(exc, f"maintenance of {self.display_url}", self.timeouts) from exc

    def own_cluster(
        self,
        settings: Settings,
        context: str | None = None,
        *,
        uid: str | None = None,
        now_ms: int = 0,
    ) -> str:
        """The cluster name this recorder records under in this database
        (``recorder.store.clusters.choose_cluster``; ``context``: the kubeconfig context's
        name; ``uid``: the cluster's ``kube-system`` UID when it was read, then kept beside
        the name with ``now_ms`` as its last start); ``ConfigError`` (one line) when it was
        not chosen and the database holds another cluster's history, or when the name is
        recorded beside another cluster's UID."""
        for attempt in (1, 2):
            try:
                with self.engine.begin() as conn:
                    stored = clusters.stored_clusters(conn)
                    known = clusters.known_clusters(conn)
                    name = clusters.choose_cluster(
                        settings, context, stored, self.display_url, uid=uid, known=known
                    )
                    if uid is not None:
                        clusters.record_identity(conn, name, uid, now_ms)
                    return name
            except engines.DATABASE_ERRORS as exc:
                if attempt == 1 and isinstance(exc, IntegrityError):
                    continue  # another recorder recorded this name meanwhile: decide again
                raise engines.failure(exc, "choosing the cluster's name", self.timeouts) from exc
        raise AssertionError("unreachable")

    def series_held(self, doomed: Doomed) -> int:
        """How many series ``delete_history(doomed)`` would delete."""
        try:
            with self.engine.connect() as conn:
                return deletion.held(conn, doomed)
        except engines.DATABASE_ERRORS as exc:
            raise engines.failure(exc, f"counting {doomed}'s series", self.timeouts) from exc

    def delete_history(self, doomed: Doomed) -> DeletionReport:
        """Delete one cluster's or namespace's history (``recorder.store.deletion``), holding
        the maintenance lock on PostgreSQL so no compaction runs meanwhile; a ``StoreError``
        when another process maintains (try again) or the database fails."""
        try:
            with self._maintenance_lock() as acquired:
                if not acquired:
                    raise StoreError(
                        "another process is maintaining the database; try again in a minute"
                    )
                lock: AbstractContextManager[Any] = (
                    self._write_lock if self.dialect == "sqlite" else nullcontext()
                )
                with lock, self.engine.begin() as conn:
                    report = deletion.delete_history(conn, doomed)
                self.invalidate_writer()
                return report
        except engines.DATABASE_ERRORS as exc:
            raise engines.failure(
                exc, f"deleting {doomed} in {self.display_url}", self.timeouts
            ) from exc

    @contextmanager
    def _maintenance_lock(self) -> Iterator[bool]:
        if self.dialect != "postgresql":
            yield True
            return
        with self.engine.connect() as conn:
            acquired = _try_advisory_lock(conn)
            try:
                yield acquired
            finally:
                if acquired:
                    _advisory_unlock(conn)

    @contextmanager
    def maintenance_excluded(
        self, *, wait_seconds: float = MAINTENANCE_WAIT_SECONDS, on_wait: Callable[[], None]
    ) -> Iterator[None]:
        """No maintenance round runs in this database inside the block (``recorder copy``
        merging chunks and head rows into a live database: a compaction in between could
        overwrite a merged chunk, or drop head rows it had not read). On PostgreSQL this holds
        the lock every replica's maintenance takes (they skip their rounds meanwhile), after
        waiting for a round in progress to end (``on_wait`` is told once); on SQLite it does
        nothing, since each block's compaction takes the file's write lock before it reads and
        every write of the copy is a transaction of its own."""
        if self.dialect != "postgresql":
            yield
            return
        try:
            with self.engine.connect() as conn:
                deadline = time.monotonic() + wait_seconds
                told = False
                while not _try_advisory_lock(conn):
                    if time.monotonic() > deadline:
                        raise StoreUnavailable(
                            f"{self.display_url} has been maintained by another process for "
                            f"over {wait_seconds:g}s: try again once its maintenance round is "
                            "done"
                        )
                    if not told:
                        on_wait()
                        told = True
                    time.sleep(0.5)
                try:
                    yield
                finally:
                    _advisory_unlock(conn)
        except engines.DATABASE_ERRORS as exc:
            raise engines.failure(
                exc, f"locking out maintenance of {self.display_url}", self.timeouts
            ) from exc

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection whose statements stop after ``query_timeout_seconds``."""
        timeout_ms = seconds_to_ms(self.query_timeout_seconds)
        try:
            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
                else:
                    _deadline.at = time.monotonic() + self.query_timeout_seconds
                yield conn
        except engines.DATABASE_ERRORS as exc:
            if engines.is_cancelled(exc):
                raise QueryTimeout(
                    f"the query ran longer than {self.query_timeout_seconds:g}s: narrow the "
                    "time range or the filters, or use a step that block statistics answer"
                ) from exc
            raise engines.failure(
                exc, f"reading history from {self.display_url}", self.timeouts
            ) from exc
        finally:
            _deadline.at = None

    def close(self) -> None:
        self.engine.dispose()


def _try_advisory_lock(conn: Connection) -> bool:
    acquired = bool(
        conn.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": _MAINTENANCE_LOCK_KEY}
        ).scalar()
    )
    conn.commit()
    return acquired


def _advisory_unlock(conn: Connection) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MAINTENANCE_LOCK_KEY})
    conn.commit()


class _Deadline(threading.local):
    at: float | None = None


_deadline = _Deadline()


def _past_deadline() -> int:
    """SQLite progress handler: a non-zero answer interrupts the running statement."""
    at = _deadline.at
    return 1 if at is not None and time.monotonic() > at else 0


def _install_deadline_check(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.set_progress_handler(_past_deadline, 20_000)


R = TypeVar("R")


class _BoundedCheck:
    """Runs a check in a daemon thread and waits for it at most a deadline, so a frozen
    database fails a probe instead of holding its thread. One check in flight at a time: while
    one is still waiting for the database, the next fails at once instead of piling up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None

    def run(
        self, check: Callable[[], R], timeout_seconds: float, doing: str, timeouts: engines.Timeouts
    ) -> R:
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["value"] = check()
            except BaseException as exc:
                outcome["error"] = exc

        with self._lock:
            if self._running is not None and self._running.is_alive():
                raise StoreUnavailable(
                    f"{doing} failed: the previous check has not returned yet; the database is "
                    "not answering"
                )
            thread = threading.Thread(target=target, name="store-check", daemon=True)
            self._running = thread
            thread.start()
        thread.join(timeout_seconds)
        if thread.is_alive():
            raise StoreUnavailable(
                f"{doing} failed: no answer within {timeout_seconds:g}s; check that the database "
                "is running and not overloaded"
            )
        error = outcome.get("error")
        if error is None:
            return outcome["value"]  # type: ignore[no-any-return]
        if isinstance(error, StoreError):
            raise error
        if isinstance(error, engines.DATABASE_ERRORS):
            raise engines.failure(error, doing, timeouts) from error
        raise error


def open_store(
    url: str,
    *,
    block_ms: int = DEFAULT_BLOCK_MS,
    retention: RetentionPolicy | None = None,
    connect_timeout_seconds: float = engines.DEFAULT_CONNECT_TIMEOUT_SECONDS,
    statement_timeout_seconds: float = engines.DEFAULT_STATEMENT_TIMEOUT_SECONDS,
    lock_timeout_seconds: float = engines.DEFAULT_LOCK_TIMEOUT_SECONDS,
    pool_timeout_seconds: float = engines.DEFAULT_POOL_TIMEOUT_SECONDS,
    sqlite_busy_timeout_seconds: float | None = None,
) -> Store:
    """A ``Store`` for ``url``, with a deadline on every wait (see ``engine.Timeouts``):
    PostgreSQL's connect timeout and server-side statement and lock timeouts of writes and
    maintenance, the wait for a pooled connection, and SQLite's wait for a locked file
    (``sqlite_busy_timeout_seconds``, by default the connect timeout: the one "how long may
    reaching the database take" setting)."""
    timeouts = engines.Timeouts(
        connect_seconds=connect_timeout_seconds,
        statement_seconds=statement_timeout_seconds,
        lock_seconds=lock_timeout_seconds,
        pool_seconds=pool_timeout_seconds,
        sqlite_busy_seconds=(
            connect_timeout_seconds
            if sqlite_busy_timeout_seconds is None
            else sqlite_busy_timeout_seconds
        ),
    )
    return Store(
        engines.create(url, timeouts=timeouts),
        display_url=engines.redact(url),
        block_ms=block_ms,
        retention=retention,
        timeouts=timeouts,
    )


def missing_sqlite_file(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist (opening it would create an
    empty one): commands that only read a database, or maintain one, check this first, so a
    typo in a path is reported rather than turned into an empty database. False for other
    databases, for invalid URLs (opening them says what is wrong) and for SQLite URI filenames
    (``?uri=true``), which SQLite resolves itself."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    if parsed.get_backend_name() != "sqlite" or parsed.query.get("uri") == "true":
        return False
    database = parsed.database
    if not database or database == ":memory:":
        return False
    return not Path(database).exists()
