"""How the database's faults reach the store (``recorder.store.engine``: connection settings,
timeouts, and which errors are content, transient or an operator's to fix), on real databases.

Figures each test proves:
- a locked SQLite file fails a write transiently after the busy timeout (0.5 s here), a held
  PostgreSQL lock after lock_timeout (0.5 s here); both write normally afterwards;
- a private PostgreSQL stopped: the write fails at once (``StoreUnavailable``); started again:
  written; frozen: a new connection fails within the connect timeout (2 s), a ping within its
  deadline (1 s); thawed: written.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy

from recorder.domain import Batch, Kind
from recorder.errors import StoreError, StoreUnavailable
from recorder.store import Store, open_store
from recorder.store.engine import is_content_error
from tests.integration.test_store_writer import T0, good, head_count
from tests.pgcluster import PgCluster, running_cluster, wait_until


def test_driver_and_database_refusals_are_content_errors(postgres_url: str, tmp_path) -> None:
    engine = sqlalchemy.create_engine(postgres_url)
    errors: list[BaseException] = []
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (name varchar(253), n int4)")
    for statement, value in (
        ("INSERT INTO t (name) VALUES (%s)", "x" * 5_000),  # value too long: server side
        ("INSERT INTO t (name) VALUES (%s)", "a\x00b"),  # NUL: psycopg refuses it client side
        ("INSERT INTO t (n) VALUES (%s)", 2**40),  # out of range for int4
    ):
        with pytest.raises(sqlalchemy.exc.DBAPIError) as caught, engine.begin() as conn:
            conn.exec_driver_sql(statement, (value,))
        errors.append(caught.value)
    engine.dispose()
    lite = sqlite3.connect(tmp_path / "x.db")
    with pytest.raises(OverflowError) as overflow:
        lite.execute("SELECT ?", (2**64,))
    lite.close()
    errors.append(overflow.value)
    assert [is_content_error(e) for e in errors] == [True] * 4
    assert isinstance(errors[1], sqlalchemy.exc.DataError)
    assert isinstance(errors[1].orig, psycopg.DataError)


def test_a_locked_sqlite_file_fails_transiently_after_the_busy_timeout(sqlite_url: str) -> None:
    store = open_store(sqlite_url, sqlite_busy_timeout_seconds=0.5)
    store.migrate()
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    begun = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"database is locked.*busy timeout"):
        store.write(Batch(Kind.NODE, tuple(good(1))), now_ms=T0)
    assert 0.4 < time.monotonic() - begun < 3
    holder.execute("ROLLBACK")
    holder.close()
    assert store.write(Batch(Kind.NODE, tuple(good(1))), now_ms=T0).written == 1
    store.close()


def test_postgres_write_and_maintenance_connections_carry_server_side_timeouts(
    postgres_url: str,
) -> None:
    store = open_store(postgres_url, lock_timeout_seconds=0.5, statement_timeout_seconds=20)
    store.migrate()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "20s"
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "500ms"
        client = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        assert (client["connect_timeout"], client["keepalives_idle"]) == ("5", "30")
    holder = sqlalchemy.create_engine(postgres_url)
    with holder.connect() as conn:
        conn.exec_driver_sql("LOCK TABLE samples_head IN ACCESS EXCLUSIVE MODE")
        begun = time.monotonic()
        with pytest.raises(StoreUnavailable, match="lock_timeout"):
            store.write(Batch(Kind.CONTAINER, tuple(good(10))), now_ms=T0)
        assert time.monotonic() - begun < 3
        conn.rollback()
    holder.dispose()
    assert store.write(Batch(Kind.CONTAINER, tuple(good(10))), now_ms=T0).written == 10
    store.close()


def test_ready_asks_what_the_writers_load_reads_and_waits_out_no_more_than_a_lock_timeout(
    postgres_url: str,
) -> None:
    """``Store.ready`` (asked by the flusher outside its write turn): while the head is
    locked it fails after lock_timeout, as the writer's load would; once the lock goes it
    answers, the load reads, and with the maps held it asks nothing (even under a lock)."""
    store = open_store(postgres_url, lock_timeout_seconds=0.5)
    store.migrate()
    holder = sqlalchemy.create_engine(postgres_url)
    with holder.connect() as conn:
        conn.exec_driver_sql("LOCK TABLE samples_head IN ACCESS EXCLUSIVE MODE")
        begun = time.monotonic()
        with pytest.raises(StoreUnavailable, match="lock_timeout"):
            store.ready()
        assert 0.4 < time.monotonic() - begun < 3
        conn.rollback()
    store.ready()
    store.prepare()
    with holder.connect() as conn:
        conn.exec_driver_sql("LOCK TABLE samples_head IN ACCESS EXCLUSIVE MODE")
        begun = time.monotonic()
        store.ready()  # the maps are held: nothing to ask
        assert time.monotonic() - begun < 0.3
        conn.rollback()
    holder.dispose()
    assert store.write(Batch(Kind.CONTAINER, tuple(good(10))), now_ms=T0).written == 10
    store.close()


def test_on_sqlite_ready_asks_for_the_write_lock_that_reads_do_not_wait_for(
    sqlite_url: str,
) -> None:
    """In WAL mode a file another process holds write-locked (``BEGIN EXCLUSIVE``, as a
    stuck migration) still answers reads: ``ready`` must fail after the busy timeout all the
    same, or the writer reloads its maps at every retry of an outage only to fail its
    write."""
    store = open_store(sqlite_url, sqlite_busy_timeout_seconds=0.5)
    store.migrate()
    assert store.write(Batch(Kind.CONTAINER, tuple(good(10))), now_ms=T0).written == 10
    store.invalidate_writer()
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert head_count(store) == 10  # reads answer
        begun = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            store.ready()
        assert 0.4 < time.monotonic() - begun < 3
        assert not store._writer.loaded
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.ready()
    store.prepare()
    assert store.write(Batch(Kind.CONTAINER, tuple(good(10, T0 + 15_000))), now_ms=T0).written == 10
    assert head_count(store) == 20
    store.close()


def test_a_missing_schema_is_an_operator_error_not_a_transient_one(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE pod_labels")
    with pytest.raises(StoreError, match="recorder migrate") as caught:
        store.write(Batch(Kind.CONTAINER, tuple(good(1)), {("shop", "web-0"): {}}), now_ms=T0)
    assert not isinstance(caught.value, StoreUnavailable)


# --- a private PostgreSQL: outage and freeze ------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    with running_cluster() as started:
        yield started


def test_postgres_outage_fails_writes_at_once_and_recovers(cluster: PgCluster) -> None:
    store = open_store(cluster.url, connect_timeout_seconds=2)
    store.migrate()
    assert store.write(Batch(Kind.NODE, tuple(good(5))), now_ms=T0).written == 5
    cluster.stop()
    begun = time.monotonic()
    with pytest.raises(StoreUnavailable, match="reachable"):
        store.write(Batch(Kind.NODE, tuple(good(5, T0 + 1))), now_ms=T0)
    assert time.monotonic() - begun < 2.5
    with pytest.raises(StoreUnavailable):
        store.ping(timeout_seconds=2)
    cluster.start()
    assert store.write(Batch(Kind.NODE, tuple(good(5, T0 + 1))), now_ms=T0).written == 5
    assert head_count(store) == 10
    store.close()


def test_frozen_postgres_fails_new_connections_and_pings_within_their_deadlines(
    cluster: PgCluster,
) -> None:
    store = open_store(cluster.url, connect_timeout_seconds=2)
    store.migrate()
    store.ping()
    cluster.freeze()
    try:
        fresh = open_store(cluster.url, connect_timeout_seconds=2)
        begun = time.monotonic()
        with pytest.raises(StoreUnavailable, match="reachable"):
            fresh.write(Batch(Kind.NODE, tuple(good(5))), now_ms=T0)
        assert time.monotonic() - begun < 3.5
        fresh.close()
        begun = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no answer within 1s"):
            store.ping(timeout_seconds=1)  # a pooled connection: the server never answers
        with pytest.raises(StoreUnavailable, match="previous check has not returned"):
            store.ping(timeout_seconds=1)
        assert time.monotonic() - begun < 2
    finally:
        cluster.thaw()
    assert wait_until(lambda: _pings(store), timeout=10)
    assert store.write(Batch(Kind.NODE, tuple(good(5))), now_ms=T0).written == 5
    store.close()


def _pings(store: Store) -> bool:
    try:
        store.ping(timeout_seconds=2)
    except StoreUnavailable:
        return False
    return True


def test_ping_threads_do_not_pile_up(cluster: PgCluster) -> None:
    store = open_store(cluster.url, connect_timeout_seconds=2)
    store.ping()
    before = threading.active_count()
    cluster.freeze()
    try:
        for _ in range(5):
            with pytest.raises(StoreUnavailable):
                store.ping(timeout_seconds=0.2)
        assert threading.active_count() <= before + 1
    finally:
        cluster.thaw()
    assert wait_until(lambda: _pings(store), timeout=10)
    store.close()
