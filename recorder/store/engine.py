"""Engines for SQLite (WAL, one writer) and PostgreSQL, with a deadline on every wait; what the
drivers' errors mean (a value the database refuses, or a database that cannot take the write
now); and safe display of URLs.

Deadlines (``Timeouts``):

- PostgreSQL: connecting (TCP and authentication), every statement of the pooled connections
  (``statement_timeout``; readers set a tighter one per transaction), waiting for a lock
  (``lock_timeout``), and TCP keepalives so a connection to a vanished host is noticed. A server
  that is *frozen* (SIGSTOP, a hung VM) still has a kernel that acknowledges packets: it enforces
  none of its own timeouts, and a statement already sent to it waits until it thaws. Only a new
  connection fails (after ``connect_seconds``); callers that must not wait run their database
  work off their critical path (``Store.ping`` does).
- SQLite: how long a write waits for another process' write lock (``busy_timeout``), then fails
  with "database is locked", which is transient.
- Both: how long a thread waits for a free pooled connection.

Parameters the database URL sets itself (``?connect_timeout=``, ``?options=-c ...``,
``?keepalives_idle=``) win over these.
"""

from __future__ import annotations

import math
import sqlite3
import sys
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from recorder.errors import ConfigError, StoreError, StoreUnavailable
from recorder.settings import redact_url
from recorder.timeutil import seconds_to_ms

SQLITE_PAGE_SIZE = 16_384
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 3
"""A silent peer is given up after 30 + 3 x 10 = 60 s of unanswered keepalives."""


DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 30.0
DEFAULT_LOCK_TIMEOUT_SECONDS = 10.0
DEFAULT_POOL_TIMEOUT_SECONDS = 10.0
DEFAULT_SQLITE_BUSY_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Every wait on the database, in seconds."""

    connect_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    """PostgreSQL: opening a connection (libpq counts whole seconds, at least 2)."""
    statement_seconds: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS
    """PostgreSQL: server-side ``statement_timeout`` of writes and maintenance (readers set
    their own per transaction; migrations have none)."""
    lock_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS
    """PostgreSQL: server-side ``lock_timeout``."""
    pool_seconds: float = DEFAULT_POOL_TIMEOUT_SECONDS
    """Waiting for a free connection of the pool."""
    sqlite_busy_seconds: float = DEFAULT_SQLITE_BUSY_TIMEOUT_SECONDS
    """SQLite: waiting for another connection's write lock."""


def redact(url: str) -> str:
    """The database URL as logs, messages and the CLI show it: its password hidden, wherever
    it is given (``user:password@`` or a query parameter such as ``?password=``, which libpq
    accepts too; ``settings.redact_url``'s rule)."""
    try:
        rendered = make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<invalid database URL>"
    return redact_url(rendered)


def create(
    url: str,
    *,
    timeouts: Timeouts | None = None,
    for_migrations: bool = False,
    pooled: bool = True,
) -> Engine:
    """An engine for ``url`` with ``timeouts`` on every wait.

    ``for_migrations``: on SQLite, every transaction is a real one that DDL joins (pysqlite
    otherwise runs each ``CREATE`` in autocommit mode, so a killed migration leaves half a
    schema) and takes the write lock at its start (``BEGIN IMMEDIATE``); on PostgreSQL, no
    statement timeout (a migration may rewrite a large table). ``pooled=False``: each
    connection is closed when it is given back (an engine used now and then, from threads a
    deadline may abandon: a connection still in use when the engine is disposed would
    otherwise stay open until garbage-collected).
    """
    timeouts = timeouts or Timeouts()
    try:
        parsed = make_url(url)
    except exc.ArgumentError as error:
        raise ConfigError(
            f"invalid database URL {redact(url)!r}: use sqlite:///path/to/file.db or "
            "postgresql+psycopg://user:password@host:5432/db"
        ) from error
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite(parsed, timeouts, for_migrations, pooled)
    if backend == "postgresql":
        return _postgresql(parsed, timeouts, for_migrations, pooled)
    raise ConfigError(f"unsupported database {backend!r}: use sqlite or postgresql+psycopg")


def _sqlite(url: URL, timeouts: Timeouts, for_migrations: bool, pooled: bool) -> Engine:
    if url.database in (None, "", ":memory:"):
        raise ConfigError("an in-memory SQLite database would lose all history: give a file")
    busy_ms = seconds_to_ms(timeouts.sqlite_busy_seconds)
    engine = create_engine(
        url,
        connect_args={"timeout": timeouts.sqlite_busy_seconds},
        **_pool(timeouts, pooled=pooled and not for_migrations),
    )

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # Only takes effect on a new, empty file. Chunk rows are 1-2 KB: 16 KiB pages pack
            # them ~95% full where 4 KiB pages hold two and waste a fifth.
            cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        finally:
            cursor.close()
        if for_migrations:
            # SQLAlchemy's documented pysqlite recipe for transactional DDL: the driver no
            # longer begins transactions on its own; the "begin" listener below does.
            dbapi_connection.isolation_level = None

    event.listen(engine, "connect", pragmas)
    if for_migrations:

        def begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        event.listen(engine, "begin", begin)
    return engine


def _postgresql(url: URL, timeouts: Timeouts, for_migrations: bool, pooled: bool) -> Engine:
    _with_psycopg()
    statement_ms = 0 if for_migrations else seconds_to_ms(timeouts.statement_seconds)
    lock_ms = seconds_to_ms(timeouts.lock_seconds)
    ours = f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms}"
    theirs = url.query.get("options")
    # Later -c settings win: the URL's own options go last.
    options = f"{ours} {theirs}" if isinstance(theirs, str) else ours
    defaults: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(timeouts.connect_seconds)),
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
        "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
        "keepalives_count": KEEPALIVE_COUNT,
    }
    connect_args = {k: v for k, v in defaults.items() if k not in url.query}
    connect_args["options"] = options
    return create_engine(
        url.difference_update_query(["options"]),
        connect_args=connect_args,
        pool_pre_ping=True,
        **_pool(timeouts, pooled=pooled and not for_migrations),
    )


def _pool(timeouts: Timeouts, *, pooled: bool) -> dict[str, Any]:
    # Unpooled: each connection closed when given back (a migration uses one connection once;
    # the handover outbox may be given one back after it was closed).
    if not pooled:
        return {"poolclass": NullPool}
    return {"pool_timeout": timeouts.pool_seconds}


def dialect_insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of the connection's dialect, which has ``on_conflict_do_*`` (both have it)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


# --- what a failure means ----------------------------------------------------------------------

# psycopg is imported only for PostgreSQL (about 9 MB resident in each process on SQLite):
# its exception classes join these tuples when it is (``_with_psycopg``), and a psycopg
# exception cannot exist before.
_CONTENT_ERRORS: tuple[type[BaseException], ...] = (
    exc.DataError,
    exc.IntegrityError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
    # Raised by the drivers while binding a value, before anything is sent.
    OverflowError,
    UnicodeError,
)

DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    exc.SQLAlchemyError,
    sqlite3.Error,
)
"""What a database operation can raise besides ``_CONTENT_ERRORS`` and bugs (psycopg's
``Error`` too once PostgreSQL is used)."""

_TRANSIENT: tuple[type[BaseException], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
    exc.DisconnectionError,
    sqlite3.OperationalError,
)


def _with_psycopg() -> None:
    """Import psycopg and add its exception classes to the tuples above (once)."""
    global _CONTENT_ERRORS, DATABASE_ERRORS, _TRANSIENT
    import psycopg

    if psycopg.Error in DATABASE_ERRORS:
        return
    _CONTENT_ERRORS = (*_CONTENT_ERRORS, psycopg.DataError, psycopg.IntegrityError)
    _TRANSIENT = (*_TRANSIENT, psycopg.OperationalError, psycopg.InterfaceError)
    DATABASE_ERRORS = (*DATABASE_ERRORS, psycopg.Error)


def _sync_psycopg() -> None:
    """``_with_psycopg`` when something else imported psycopg (its exceptions may exist)."""
    if "psycopg" in sys.modules and _TRANSIENT[-1] is sqlite3.OperationalError:
        _with_psycopg()


def _is_pg(error: BaseException, name: str) -> bool:
    """Whether ``error`` is psycopg's ``errors.<name>`` (never, while psycopg is not loaded)."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(error, getattr(psycopg.errors, name))


def original(error: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrapper, or ``error`` itself."""
    inner = getattr(error, "orig", None)
    return inner if isinstance(inner, BaseException) else error


def is_content_error(error: BaseException) -> bool:
    """True when the database or its driver refused a *value* (too long, out of range, a NUL in
    text, a constraint): the same rows would be refused again, however often they are retried.
    """
    _sync_psycopg()
    return isinstance(error, _CONTENT_ERRORS) or isinstance(original(error), _CONTENT_ERRORS)


def first_line(error: BaseException) -> str:
    """The driver's own first message line (no SQL, no parameters, no DETAIL with row values)."""
    lines = str(original(error)).strip().splitlines()
    return lines[0] if lines else original(error).__class__.__name__


def reason(error: BaseException) -> str:
    return f"{original(error).__class__.__name__}: {first_line(error)}"


def sqlite_code(error: BaseException) -> int | None:
    """SQLite's primary result code under ``error`` (``sqlite3.SQLITE_BUSY``, ...), if any."""
    code = getattr(original(error), "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_cancelled(error: BaseException) -> bool:
    """True when a statement was stopped by its deadline: PostgreSQL's ``statement_timeout``
    (``QueryCanceled``) or SQLite's progress handler (``SQLITE_INTERRUPT``)."""
    return (
        _is_pg(original(error), "QueryCanceled") or sqlite_code(error) == sqlite3.SQLITE_INTERRUPT
    )


def failure(error: BaseException, doing: str, timeouts: Timeouts | None = None) -> StoreError:
    """The ``StoreError`` for a failed database operation: ``StoreUnavailable`` when it is worth
    retrying as is (the database is unreachable, busy, locked, out of space or timed out), a
    plain ``StoreError`` otherwise (the schema is missing, the file cannot be opened or another
    problem an operator must fix). Content errors are not raised as either: callers isolate the
    offending rows. The message is ``doing``, the driver's first line (no SQL, no parameters,
    no credentials) and what to do about it; the service retries either kind on its own."""
    _sync_psycopg()
    timeouts = timeouts or Timeouts()
    inner = original(error)
    code = sqlite_code(error)
    text = first_line(error).lower()
    message = f"{doing} failed: {reason(error)}"
    if "no such table" in text or _is_pg(inner, "UndefinedTable"):
        return StoreError(f"{message}: the schema is missing; run `recorder migrate`")
    if "no such column" in text or _is_pg(inner, "UndefinedColumn"):
        return StoreError(
            f"{message}: the schema is not the one this version expects; run `recorder migrate`"
        )
    if code == sqlite3.SQLITE_CANTOPEN:
        return StoreError(
            f"{message}: check that the SQLite file's folder exists and that the recorder may "
            "read and write there (or fix --database-url)"
        )
    if code == sqlite3.SQLITE_NOTADB:
        return StoreError(f"{message}: the file is not a SQLite database; fix --database-url")
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
        return StoreError(
            f"{message}: the recorder may not write the SQLite file or its folder; fix the "
            "permissions or the volume"
        )
    if _is_pg(inner, "QueryCanceled"):
        advice = (
            f"a statement ran past statement_timeout ({timeouts.statement_seconds:g}s): "
            "the database is overloaded or a lock is held; try again later"
        )
    elif _is_pg(inner, "LockNotAvailable"):
        advice = (
            f"another session held a lock longer than lock_timeout ({timeouts.lock_seconds:g}s)"
            "; try again when it is done"
        )
    elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        advice = (
            "another process held a lock on the SQLite file longer than the busy timeout "
            f"({timeouts.sqlite_busy_seconds:g}s): let it finish (or stop it) and try again, "
            "or raise RECORDER_DATABASE_CONNECT_TIMEOUT"
        )
    elif code == sqlite3.SQLITE_FULL or _is_pg(inner, "DiskFull"):
        advice = "free space on the database's volume"
    elif code == sqlite3.SQLITE_IOERR:
        advice = "check the volume that holds the database"
    elif _is_unavailable(error):
        advice = "check that the database is running and reachable from here"
        if "timeout" in text or "timed out" in text:
            advice += ", or raise RECORDER_DATABASE_CONNECT_TIMEOUT if it is only slow"
    else:
        return StoreError(message)
    return StoreUnavailable(f"{message}: {advice}")


def _is_unavailable(error: BaseException) -> bool:
    if getattr(error, "connection_invalidated", False):
        return True
    return isinstance(error, _TRANSIENT) or isinstance(original(error), _TRANSIENT)
