"""Leader election and the write fence (``recorder.store.leader``) on the real PostgreSQL
server, a partition made by a freezable TCP proxy; SQLite's writer lock on a real file.

Figures each test proves: a follower's write and a deposed leader's late write are refused by
the database-side check (not by the replica's own belief); a partitioned leader is deposed on
its side within half a lease and replaced within about a lease and a check; a transaction that
passed the fence before a takeover is ended by it; a second SQLite writer is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine import make_url

from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.errors import ConfigError
from recorder.store import Store, open_store
from recorder.store.leader import (
    LEADER_CLASS,
    MAX_NAME_CHARS,
    LeaderMark,
    Leadership,
    NotLeader,
    SqliteWriterLock,
    cluster_key,
    session_name,
)
from tests.tcpproxy import freezable_proxy

T0 = 1_700_000_000_000
Replica = tuple[Leadership, Store]
Two = tuple[Replica, Replica]
LEASE = 1.0


def batch(ts: int) -> Batch:
    key = SeriesKey.for_container("shop", "web", "app")
    return Batch(Kind.CONTAINER, (Sample(key, ts, 15_000, 1_000, 2_000),))


def head_rows(url: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM samples_head")).scalar_one())
    finally:
        engine.dispose()


def replica(url: str) -> tuple[Leadership, Store]:
    store = open_store(url, statement_timeout_seconds=5)
    leadership = Leadership(url, lease_seconds=LEASE, timeouts=store.timeouts)
    leadership.fence(store.engine)
    return leadership, store


@pytest.fixture
def two(migrated: str) -> Iterator[Two]:
    a, b = replica(migrated), replica(migrated)
    yield a, b
    for leadership, store in (a, b):
        leadership.close()
        store.close()


def wait_lead(leadership: Leadership, timeout: float) -> float:
    begun = time.monotonic()
    while not leadership.try_lead():
        assert time.monotonic() - begun < timeout, "no takeover in time"
        time.sleep(leadership.check_seconds)
    return time.monotonic() - begun


def test_one_leader_and_a_follower_write_refused(two: Two, migrated: str) -> None:
    (a, store_a), (b, store_b) = two
    assert a.try_lead()
    assert not b.try_lead()
    a.heartbeat(LeaderMark(T0, 7))
    assert not b.try_lead()
    assert b.last_seen_leader == LeaderMark(T0, 7)  # what the new leader will report
    assert store_a.write(batch(T0), now_ms=T0).written == 1
    with pytest.raises(NotLeader):
        store_b.write(batch(T0 + 1000), now_ms=T0)
    assert head_rows(migrated) == 1


def test_a_deposed_leader_that_still_believes_it_leads_is_refused(two: Two, migrated: str) -> None:
    (a, store_a), (b, store_b) = two
    assert a.try_lead()
    # A's lock session is ended behind its back (as a partition ends it); A has not noticed.
    admin = sqlalchemy.create_engine(migrated, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": a.leader_pid})
    admin.dispose()
    wait_lead(b, 5)
    assert a.is_leader  # its own belief
    with pytest.raises(NotLeader, match="deposed"):
        store_a.write(batch(T0), now_ms=T0)
    assert store_b.write(batch(T0), now_ms=T0).written == 1
    with pytest.raises(NotLeader):
        a.heartbeat(None)
    assert not a.is_leader


def test_a_takeover_ends_the_deposed_leaders_transaction_in_flight(two: Two, migrated: str) -> None:
    (a, store_a), (b, _) = two
    assert a.try_lead()
    conn = store_a.engine.connect()
    conn.execute(text("SELECT 1"))  # passed the fence: holds its shared lock
    a.close()  # the lock session goes (A crashed halfway)
    wait_lead(b, 5)  # does not wait for A's open transaction: it ends it
    with pytest.raises(sqlalchemy.exc.OperationalError):
        conn.execute(text("INSERT INTO samples_head VALUES (1, 1, 1, 1, 1)"))
        conn.commit()
    conn.invalidate()
    conn.close()
    assert head_rows(migrated) == 0


def test_each_cluster_of_a_fleet_elects_its_own_leader(migrated: str) -> None:
    """Recorders of two clusters share one database: each cluster has its leader, and one
    cluster's takeover neither waits for nor ends the other's writes in flight."""
    store_us = open_store(migrated, statement_timeout_seconds=5)
    eu = Leadership(migrated, lease_seconds=LEASE, cluster="eu")
    eu_too = Leadership(migrated, lease_seconds=LEASE, cluster="eu")
    us = Leadership(migrated, lease_seconds=LEASE, cluster="us", timeouts=store_us.timeouts)
    us.fence(store_us.engine)
    try:
        assert eu.try_lead() and us.try_lead()
        assert not eu_too.try_lead() and eu_too.other_leads
        conn = store_us.engine.connect()
        conn.execute(text("SELECT 1"))  # us's transaction past its fence
        eu.close()
        wait_lead(eu_too, 5)  # eu's takeover
        conn.execute(text("INSERT INTO samples_head VALUES (1, 1, 1, 1, 1)"))
        conn.commit()  # us's write was not ended by it
        conn.close()
        assert head_rows(migrated) == 1
    finally:
        for leadership in (eu, eu_too, us):
            leadership.close()
        store_us.close()


def test_a_lock_session_of_its_own_is_ended_not_taken_for_another_leader(migrated: str) -> None:
    """A lock attempt given up during a database freeze may take the lock when the database
    thaws: the replica must end that session of its own, not take it for another leader (a
    lone replica deposed itself and discarded what it buffered during the freeze)."""
    a = Leadership(migrated, lease_seconds=LEASE)
    conninfo = make_url(migrated).set(drivername="postgresql").render_as_string(False)
    late = psycopg.connect(conninfo, autocommit=True, application_name=session_name(a.replica))
    try:
        late.execute("SELECT pg_try_advisory_lock(%s, %s)", (LEADER_CLASS, cluster_key("default")))
        assert not a.try_lead() and not a.other_leads
        wait_lead(a, 5)
    finally:
        a.close()
        late.close()
    # The longest name a heartbeat sets is kept whole by PostgreSQL.
    longest = session_name(a.replica, LeaderMark(99_999_999_999_999, 999_999_999))
    assert len(longest) <= MAX_NAME_CHARS
    assert LeaderMark.parse(longest) == LeaderMark(99_999_999_999_999, 999_999_999)


def test_a_partitioned_leader_is_deposed_and_replaced(migrated: str) -> None:
    url = sqlalchemy.engine.make_url(migrated)
    with freezable_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        behind = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        a, store_a = replica(behind)
        b, store_b = replica(migrated)
        try:
            assert a.try_lead()
            a.heartbeat(None)
            believed = a.leader_pid
            proxy.freeze()
            begun = time.monotonic()
            with pytest.raises(NotLeader):
                a.heartbeat(None)
            deposed = time.monotonic() - begun
            assert deposed <= LEASE / 2 + 0.3
            took_over = wait_lead(b, 5)
            assert took_over <= LEASE + 2 * b.check_seconds + 1.0
            assert store_b.write(batch(T0), now_ms=T0).written == 1
            proxy.thaw()
            a._leader_pid = believed  # the worst case: A still believes it leads
            with pytest.raises(NotLeader):
                store_a.write(batch(T0 + 1000), now_ms=T0)
            assert head_rows(migrated) == 1
        finally:
            proxy.thaw()
            for leadership, store in ((a, store_a), (b, store_b)):
                leadership.close()
                store.close()


def test_a_second_sqlite_writer_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "recorder.db"
    first = SqliteWriterLock(database)
    with pytest.raises(ConfigError, match="another recorder already writes to"):
        SqliteWriterLock(database)
    first.close()
    SqliteWriterLock(database).close()  # free again once the first is gone


def test_an_answer_that_comes_too_late_is_handed_back_not_taken() -> None:
    """A lock attempt stuck on a silent network is given up; if it succeeds later, what it
    opened is closed (``on_late``), never adopted as this replica's lock session."""
    leadership = Leadership("postgresql+psycopg://nobody@127.0.0.1:1/none", lease_seconds=LEASE)
    late: list[str] = []
    answered = threading.Event()

    def slow() -> str:
        time.sleep(0.3)
        return "session"

    def closed(value: str) -> None:
        late.append(value)
        answered.set()

    with pytest.raises(TimeoutError):
        leadership._bounded(slow, 0.05, closed)
    assert answered.wait(5) and late == ["session"]
    assert leadership._bounded(lambda: "quick", 1.0, closed) == "quick"
    assert late == ["session"]
