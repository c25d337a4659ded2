"""One writer among replicas: a PostgreSQL session advisory lock elects the leader, and a fence
in every write transaction refuses a deposed one; SQLite: a lock file beside the database.

PostgreSQL (``Leadership``):

- **Election**: the leader holds the session advisory lock ``(LEADER_CLASS, <cluster>)`` on
  a connection of its own (not pooled); ``<cluster>`` is a number made from the cluster's name
  (``cluster_key``), so the recorders of a fleet sharing one database each elect their own
  leader, and one cluster's takeover never touches another's writes. Followers try to take it
  every ``check_seconds``. A leader that dies loses it when its connection closes (the kernel
  closes the socket).
- **Heartbeat**: the leader runs one short statement every ``check_seconds`` on that
  connection, bounded by a thread-side deadline (``lease_seconds / 2``): an unanswered
  heartbeat (a frozen network, a hung server) deposes it at once, on its side. On the server
  side, ``idle_session_timeout`` (``lease_seconds``) ends a lock session that stopped talking,
  which frees the lock for a follower; TCP keepalives and ``tcp_user_timeout`` on both ends end
  one whose peer vanished. The heartbeat also names the leader's newest stored poll in its
  ``application_name``, which followers read, so a new leader can say how long nobody polled.
- **Fence**: every transaction on a fenced engine first takes the shared advisory lock
  ``(FENCE_CLASS, <cluster>)`` for the transaction, then checks that the leader lock is held by this
  replica's lock session (``pg_locks``); otherwise it raises ``NotLeader`` before anything is
  written. A new leader, once it holds the leader lock, ends the sessions that still hold the
  shared fence lock (the deposed leader's writes in flight) and takes the fence lock
  exclusively once: a transaction that passed the check before the takeover has ended, and
  every later one sees the new holder. So two leaders never both write, whatever the clocks.

SQLite (``SqliteWriterLock``): an exclusive ``flock`` on ``<database>.writer.lock`` held by the
service for its life; a second ``recorder run`` on the same file is refused with a message.
"""

from __future__ import annotations

import fcntl
import logging
import math
import threading
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url

from recorder.errors import ConfigError, StoreUnavailable
from recorder.store.engine import KEEPALIVE_COUNT, Timeouts, first_line

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)


def _load_psycopg() -> None:
    """Import the PostgreSQL driver as this module's ``psycopg``: only a replica of a
    PostgreSQL database elects, and on SQLite the driver would cost each process about
    9 MB."""
    global psycopg
    import psycopg


LOCK_CLASS = 0x6B6D72  # "kmr"
LEADER_CLASS = LOCK_CLASS + 1
"""The first key of a cluster's leader lock (the second: ``cluster_key``)."""
FENCE_CLASS = LOCK_CLASS + 2
"""The first key of a cluster's fence lock (the second: ``cluster_key``)."""
NAME_PREFIX = "kmr-leader"
T = TypeVar("T")


class NotLeader(StoreUnavailable):
    """This replica does not hold the leader lock: it must not write."""


@dataclass(frozen=True, slots=True)
class LeaderMark:
    """What a leader said of itself in its heartbeat: its newest stored poll and its size."""

    polled_ms: int
    samples: int

    @staticmethod
    def parse(name: str | None) -> LeaderMark | None:
        fields = _name_fields(name)
        try:
            return LeaderMark(int(fields["p"]), int(fields["s"]))
        except (KeyError, ValueError):
            return None  # not ours, or a lock session named before its first heartbeat


MAX_NAME_CHARS = 63
"""PostgreSQL keeps at most this much of an ``application_name`` (NAMEDATALEN - 1)."""


def session_name(replica: str, mark: LeaderMark | None = None) -> str:
    """A lock session's ``application_name``: the replica's id, and once it leads, its newest
    poll (``p``, ms) and that poll's size (``s``). Short keys: a longer name is cut."""
    name = f"{NAME_PREFIX} r={replica}"
    if mark is not None:
        name += f" p={mark.polled_ms} s={mark.samples}"
    return name


def replica_of(name: str | None) -> str | None:
    """The replica id a lock session's ``application_name`` carries."""
    return _name_fields(name).get("r") or None


def _name_fields(name: str | None) -> dict[str, str]:
    if not name or not name.startswith(NAME_PREFIX + " "):
        return {}
    return dict(part.split("=", 1) for part in name[len(NAME_PREFIX) :].split() if "=" in part)


def cluster_key(cluster: str) -> int:
    """The second key of a cluster's locks: a stable non-negative 31-bit number from its name
    (CRC-32: two names of one fleet sharing a number, about one chance in 4 billion per pair,
    would share a leader)."""
    return zlib.crc32(cluster.encode()) & 0x7FFFFFFF


_HERE = "(SELECT oid FROM pg_database WHERE datname = current_database())"


@dataclass(frozen=True, slots=True)
class _Statements:
    """The election's SQL for one cluster's locks."""

    key: int

    @property
    def held(self) -> str:
        return (
            "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = "
            f"{LEADER_CLASS} AND objid = {self.key} AND objsubid = 2 AND granted AND pid = %s)"
        )

    @property
    def held_by_me(self) -> str:
        return f"SELECT {self.held}"

    @property
    def leader_name(self) -> str:
        return (
            "SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a "
            f"ON a.pid = l.pid WHERE l.database = {_HERE} AND l.locktype = 'advisory' "
            f"AND l.classid = {LEADER_CLASS} AND l.objid = {self.key} AND l.objsubid = 2 "
            "AND l.granted"
        )

    @property
    def fence_holders(self) -> str:
        return (
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND "
            f"classid = {FENCE_CLASS} AND objid = {self.key} AND objsubid = 2 AND "
            f"database = {_HERE} AND pid <> pg_backend_pid()"
        )


class Leadership:
    """This replica's side of the election, over one dedicated connection.

    Not thread-safe except ``leader_pid`` (read by the fence from any thread): one elector
    thread calls ``step``.
    """

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float,
        cluster: str = "default",
        timeouts: Timeouts | None = None,
    ) -> None:
        """``cluster``: whose leader this replica may become (a fleet's recorders share a
        database, each cluster electing its own)."""
        _load_psycopg()
        self._url = url
        self.replica = uuid.uuid4().hex[:12]
        """This replica's id, in the name of every lock session it opens: a session of its
        own found holding the lock (an earlier one cut off by a partition, or an attempt given
        up that answered late) is ended, never taken for another replica leading."""
        self._key = cluster_key(cluster)
        self._sql = _Statements(self._key)
        self.lease_seconds = lease_seconds
        self.check_seconds = lease_seconds / 4
        self._timeouts = timeouts or Timeouts()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid: int | None = None
        self._leader_pid: int | None = None
        self._abandoned: set[int] = set()
        self.last_seen_leader: LeaderMark | None = None
        """The newest mark read from the current leader while following."""
        self.other_leads = False
        """Whether the last ``try_lead`` found the lock held by another replica's session."""

    @property
    def leader_pid(self) -> int | None:
        """The backend pid of this replica's lock session while it leads, else None."""
        return self._leader_pid

    @property
    def is_leader(self) -> bool:
        return self._leader_pid is not None

    def _connect(self) -> psycopg.Connection[Any]:
        """A new lock session: autocommit, the lease as every server-side deadline, keepalives
        and ``tcp_user_timeout`` on both ends."""
        lease_ms = max(1000, math.ceil(self.lease_seconds * 1000))
        idle = max(1, math.ceil(self.lease_seconds / (KEEPALIVE_COUNT + 1)))
        options = (
            f"-c idle_session_timeout={lease_ms} -c statement_timeout={lease_ms} "
            f"-c lock_timeout={lease_ms} -c tcp_keepalives_idle={idle} "
            f"-c tcp_keepalives_interval={idle} -c tcp_keepalives_count={KEEPALIVE_COUNT} "
            f"-c tcp_user_timeout={lease_ms}"
        )
        url = make_url(self._url).set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        conn = psycopg.connect(
            conninfo,
            autocommit=True,
            connect_timeout=max(2, math.ceil(self._timeouts.connect_seconds)),
            keepalives=1,
            keepalives_idle=idle,
            keepalives_interval=idle,
            keepalives_count=KEEPALIVE_COUNT,
            tcp_user_timeout=lease_ms,
            options=options,
            application_name=session_name(self.replica),
        )
        return conn

    def _bounded(
        self, work: Callable[[], T], seconds: float, on_late: Callable[[T], None] | None = None
    ) -> T:
        """``work()`` in a thread of its own, given up after ``seconds``: a frozen network
        must not hold the elector. What an abandoned ``work`` returns later goes to
        ``on_late`` (which closes what it opened), never to this replica's state."""
        lock = threading.Lock()
        done = threading.Event()
        outcome: list[tuple[T | None, BaseException | None]] = []
        abandoned = False

        def run() -> None:
            try:
                value: T | None = work()
                error: BaseException | None = None
            except BaseException as exc:
                value, error = None, exc
            with lock:
                late = abandoned
                if not late:
                    outcome.append((value, error))
                    done.set()
            if late and error is None and on_late is not None and value is not None:
                on_late(value)

        threading.Thread(target=run, name="leader-check", daemon=True).start()
        if not done.wait(seconds):
            with lock:
                if not done.is_set():
                    abandoned = True
            if abandoned:
                raise TimeoutError(f"no answer within {seconds:g}s")
        value, error = outcome[0]
        if error is not None:
            raise error
        assert value is not None
        return value

    def try_lead(self) -> bool:
        """Take the leader lock if it is free; True when this replica leads now (after the
        takeover: the deposed leader's writes in flight ended). A follower remembers the
        current leader's mark. Raises ``StoreUnavailable`` when the database cannot say."""
        if self.is_leader:
            return True
        conn = self._conn if self._conn is not None and not self._conn.closed else None
        abandoned = frozenset(self._abandoned)
        try:
            attempt = self._bounded(
                lambda: self._attempt(conn, abandoned), self.lease_seconds, _Attempt.close
            )
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._drop()
            raise StoreUnavailable(
                f"taking part in the leader election failed: {_why(exc)}"
            ) from None
        self._conn, self._pid = attempt.conn, attempt.pid
        if attempt.ended is not None:
            self._abandoned.discard(attempt.ended)
        self.other_leads = attempt.holder is not None and attempt.ended is None
        if attempt.acquired:
            self._leader_pid = attempt.pid
            return True
        mark = LeaderMark.parse(attempt.holder_name)
        if mark is not None:
            self.last_seen_leader = mark
        return False

    def _attempt(self, conn: psycopg.Connection[Any] | None, abandoned: frozenset[int]) -> _Attempt:
        """One try at the lock (in the bounded thread: it touches no state of ``self``)."""
        opened = conn is None
        if conn is None:
            conn = self._connect()
        try:
            pid = int(_one(conn.execute("SELECT pg_backend_pid()").fetchone()))
            got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LEADER_CLASS, self._key))
            if not _one(got.fetchone()):
                holder = conn.execute(self._sql.leader_name).fetchone()
                if holder is None:
                    return _Attempt(conn, pid, False, None, None, None)
                holder_pid = int(holder[0])
                if holder_pid in abandoned or replica_of(holder[1]) == self.replica:
                    # Our own lock session: an earlier one given up while the network was
                    # silent and still alive on the server, or an attempt given up that took
                    # the lock when it answered late. End it; the lock is ours to take again.
                    conn.execute("SELECT pg_terminate_backend(%s, %s)", (holder_pid, 1000))
                    return _Attempt(conn, pid, False, holder_pid, None, holder_pid)
                return _Attempt(conn, pid, False, holder_pid, holder[1], None)
            # The deposed leader's transactions that passed the fence before now: end them,
            # then wait (lock_timeout) for the fence lock, which no old transaction holds now.
            conn.execute(self._sql.fence_holders)
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (FENCE_CLASS, self._key))
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (FENCE_CLASS, self._key))
            return _Attempt(conn, pid, True, None, None, None)
        except BaseException:
            if opened:
                _close_quietly(conn)
            raise

    def heartbeat(self, mark: LeaderMark | None) -> None:
        """Prove the lock session alive within half the lease (and publish ``mark``); on any
        failure this replica is no longer the leader and ``NotLeader`` is raised."""
        conn = self._conn
        if conn is None or not self.is_leader:
            raise NotLeader("this replica does not lead")
        name = session_name(self.replica, mark or LeaderMark(0, 0))
        pid = self._pid

        def beat() -> bool:
            row = conn.execute(
                f"SELECT set_config('application_name', %s, false), {self._sql.held}",
                (name, pid),
            ).fetchone()
            return bool(row and row[1])

        try:
            held = self._bounded(beat, self.lease_seconds / 2)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._drop()
            raise NotLeader(f"the leader lock's session failed: {_why(exc)}") from None
        if not held:
            self._drop()
            raise NotLeader("the leader lock is no longer held by this replica")

    def _drop(self, *, abandon: bool = True) -> None:
        """Forget the lock session; ``abandon``: it failed and may live on at the server."""
        self._leader_pid = None
        if abandon and self._pid is not None:
            self._abandoned = {self._pid}  # only the newest: an old pid may be reused
        self._pid = None
        conn, self._conn = self._conn, None
        if conn is not None:
            threading.Thread(target=_close_quietly, args=(conn,), daemon=True).start()

    def close(self) -> None:
        """Give the lock up (closing the session frees it at once)."""
        self._drop(abandon=False)

    # --- the fence ------------------------------------------------------------------------

    def fence(self, engine: Engine) -> None:
        """Make every transaction on ``engine`` check that this replica leads (see the
        module's docstring); a transaction that fails it raises ``NotLeader``."""

        def check(conn: Connection) -> None:
            pid = self._leader_pid
            if pid is None:
                raise NotLeader("this replica is not the leader: it does not write")
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({FENCE_CLASS}, {self._key})")
            held = conn.exec_driver_sql(self._sql.held_by_me, (pid,)).scalar()
            if not held:
                raise NotLeader(
                    "this replica was deposed: it no longer holds the leader lock (its lock "
                    "session ended, or another replica took the lock); write refused"
                )

        event.listen(engine, "begin", check)


@dataclass(frozen=True, slots=True)
class _Attempt:
    conn: psycopg.Connection[Any]
    pid: int
    """This lock session's backend pid."""
    acquired: bool
    holder: int | None
    """The pid of the session holding the leader lock when not acquired (None: nobody)."""
    holder_name: str | None
    ended: int | None
    """Our own abandoned session, ended by this attempt."""

    def close(self) -> None:
        """An attempt that came back too late: its session (and any lock it took) goes."""
        _close_quietly(self.conn)


def _one(row: tuple[Any, ...] | None) -> Any:
    if row is None:
        raise psycopg.OperationalError("the database returned no row")
    return row[0]


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:  # an abandoned session: the server ends it (idle_session_timeout)
        pass


def _why(exc: BaseException) -> str:
    return first_line(exc) if isinstance(exc, psycopg.Error) else str(exc) or type(exc).__name__


class SqliteWriterLock:
    """An exclusive lock on ``<database>.writer.lock``: one writing service per SQLite file."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".writer.lock")
        self._file: IO[bytes] | None = None
        try:
            handle = open(self.path, "a+b")
        except OSError as exc:
            raise ConfigError(
                f"cannot create the writer lock {self.path} ({exc.strerror or exc}): the "
                "folder of the SQLite file must be writable"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ConfigError(
                f"another recorder already writes to {database} (it holds {self.path}): "
                "SQLite takes one writing service; run one replica, or use PostgreSQL for "
                "several (they elect one writer)"
            ) from None
        self._file = handle

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
