"""The handover of a deposed leader's batches (``recorder.store.handover``) on the real
PostgreSQL server, two replicas each with its leadership and fenced store.

Figures each test proves: a handed-over batch is written once by the leader and its row is
gone in the same transaction; the samples of it the leader stored itself are skipped, by
series, timestamp and values; an unreadable payload is deleted and counted as dropped while
the batches behind it are written; a row another transaction holds is passed over; the fence
still refuses the deposed replica's own writes, and a follower takes nothing. A deposed
replica's queue (batches as they wait and spooled) is handed over whole, and when the database
goes silent the handover gives up at its deadline, dropping and counting the rest.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import text

from recorder.buffer import Spool, WriteQueue, decode_batch, encode_batch
from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Sample, SeriesKey
from recorder.exporter import SnapshotHolder, build_registry
from recorder.flusher import Flusher, hand_over
from recorder.store import Store, open_store
from recorder.store import handover as handovers
from recorder.store.handover import Outbox
from recorder.store.leader import Leadership, NotLeader
from tests.tcpproxy import freezable_proxy

T0 = 1_700_000_000_000
STEP = 15_000
LEASE = 1.0
KEY = SeriesKey.for_container("shop", "web", "app")
NODE = SeriesKey.for_node("n1")
NOW = {"app": "web", "version": "2"}

Replica = tuple[Leadership, Store, Outbox]


def sample(key: SeriesKey, i: int, cpu: int | None = None) -> Sample:
    return Sample(key, T0 + i * STEP, STEP, 1_000 + i if cpu is None else cpu, 2_000 + i)


def batch(*samples: Sample) -> Batch:
    return Batch(samples[0].key.kind, samples)


def head(url: str) -> list[tuple[str, int, int]]:
    """(series name, ts_ms, cpu) of every head row, in order."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT s.kind || ':' || s.node || s.pod, h.ts_ms, h.cpu_nanocores "
                    "FROM samples_head h JOIN series s ON s.id = h.series_id "
                    "ORDER BY 1, 2, 3"
                )
            ).all()
    finally:
        engine.dispose()
    return [(str(a), int(b), int(c)) for a, b, c in rows]


def waiting(url: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return handovers.waiting(conn)
    finally:
        engine.dispose()


def replica(url: str) -> Replica:
    store = open_store(url, statement_timeout_seconds=5)
    leadership = Leadership(url, lease_seconds=LEASE, timeouts=store.timeouts)
    leadership.fence(store.engine)
    outbox = Outbox(url, cluster=DEFAULT_CLUSTER, replica=leadership.replica)
    return leadership, store, outbox


@pytest.fixture
def deposed(migrated: str) -> Iterator[tuple[Replica, Replica]]:
    """Replica a led and wrote ``sample(KEY, 0)``; its lock session was ended (as a partition
    ends it) and b leads now; a has not noticed."""
    a, b = replica(migrated), replica(migrated)
    assert a[0].try_lead()
    assert a[1].write(batch(sample(KEY, 0)), now_ms=T0).written == 1
    admin = sqlalchemy.create_engine(migrated, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": a[0].leader_pid})
    admin.dispose()
    for _ in range(40):
        if b[0].try_lead():
            break
        threading.Event().wait(b[0].check_seconds)
    assert b[0].is_leader
    yield a, b
    for leadership, store, outbox in (a, b):
        outbox.close()
        leadership.close()
        store.close()


def hand(outbox: Outbox, handed: Batch) -> None:
    outbox.put(handed.kind.value, len(handed.samples), encode_batch(handed), created_ms=T0)


def take(store: Store) -> handovers.Taken | None:
    return store.take_handed_over(DEFAULT_CLUSTER, decode_batch, now_ms=T0 + 60 * STEP)


def test_a_handed_over_batch_is_written_once_by_the_leader_and_removed(
    deposed: tuple[Replica, Replica], migrated: str
) -> None:
    (_, store_a, outbox_a), (_, store_b, _) = deposed
    late = batch(sample(KEY, 1), sample(KEY, 2))
    with pytest.raises(NotLeader):  # the fence refuses the deposed replica's own write
        store_a.write(late, now_ms=T0)
    hand(outbox_a, late)  # not a write of history: no fence
    with pytest.raises(NotLeader):  # and it takes nothing back: the row stays for the leader
        take(store_a)
    assert waiting(migrated) == 1
    taken = take(store_b)
    assert taken is not None and taken.result is not None and taken.error is None
    assert (taken.result.written, taken.result.skipped_duplicates) == (2, 0)
    assert taken.replica == outbox_a.replica and taken.samples == 2
    assert waiting(migrated) == 0
    assert take(store_b) is None
    assert [ts for _, ts, _ in head(migrated)] == [T0, T0 + STEP, T0 + 2 * STEP]
    # The leader's writer goes on from there: its next poll is written, nothing twice.
    assert store_b.write(batch(sample(KEY, 2), sample(KEY, 3)), now_ms=T0).written == 1
    assert len(head(migrated)) == 4


def test_samples_the_leader_stored_itself_are_skipped(
    deposed: tuple[Replica, Replica], migrated: str
) -> None:
    (_, _, outbox_a), (_, store_b, _) = deposed
    # b polled the same metrics-server window: samples 2 and 3 are stored, 3 its newest, and
    # the pod's labels as they are now.
    polled = Batch(Kind.CONTAINER, (sample(KEY, 2), sample(KEY, 3)), {("shop", "web"): NOW})
    assert store_b.write(polled, now_ms=T0).written == 2
    assert store_b.write(batch(sample(NODE, 3)), now_ms=T0).written == 1
    # a fetched 1, 2 and 3 of the container (2 and 3 as b did) with the pod's older labels,
    # and 1 to 3 of the node, with another value at 2 (kept: a stored timestamp with other
    # values is the rule's to judge).
    older = {("shop", "web"): {"app": "web", "version": "1"}}
    hand(outbox_a, Batch(Kind.CONTAINER, (sample(KEY, 1), sample(KEY, 2), sample(KEY, 3)), older))
    hand(outbox_a, batch(sample(NODE, 1), sample(NODE, 2, cpu=7), sample(NODE, 3)))
    first, second = take(store_b), take(store_b)
    assert first is not None and first.result is not None
    assert (first.result.written, first.result.skipped_duplicates) == (1, 2)
    assert second is not None and second.result is not None
    assert (second.result.written, second.result.skipped_duplicates) == (2, 1)
    rows = head(migrated)
    container = [ts for name, ts, _ in rows if name.startswith("container")]
    assert container == [T0 + i * STEP for i in range(4)]  # continuous, nothing twice
    node = [ts for name, ts, _ in rows if name.startswith("node")]
    assert node == [T0 + STEP, T0 + 2 * STEP, T0 + 3 * STEP]
    assert waiting(migrated) == 0
    engine = sqlalchemy.create_engine(migrated)
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT labels_json FROM pod_labels")).scalars().all()
    finally:
        engine.dispose()
    assert [json.loads(labels) for labels in stored] == [NOW]  # not the handed-over ones


def test_an_unreadable_batch_is_dropped_and_counted_and_the_next_is_written(
    deposed: tuple[Replica, Replica], migrated: str
) -> None:
    (_, _, outbox_a), (_, store_b, _) = deposed
    outbox_a.put("container", 5, b"KMRB2\nnot zlib at all", created_ms=T0)
    outbox_a.put("node", 3, b"an unknown format", created_ms=T0)
    hand(outbox_a, batch(sample(KEY, 1)))
    registry, metrics = build_registry(SnapshotHolder(30.0))
    flusher = Flusher(
        WriteQueue(),
        store_b,
        metrics,
        take_handed_over=lambda now: store_b.take_handed_over(
            DEFAULT_CLUSTER, decode_batch, now_ms=now
        ),
    )
    flusher.flush()
    value = registry.own.get_sample_value
    assert value("recorder_samples_dropped_total", {"reason": "unreadable"}) == 8
    assert value("recorder_samples_written_total") == 1
    assert waiting(migrated) == 0
    assert [ts for _, ts, _ in head(migrated)] == [T0, T0 + STEP]


def test_a_batch_another_transaction_holds_is_passed_over(
    deposed: tuple[Replica, Replica], migrated: str
) -> None:
    (_, _, outbox_a), (_, store_b, _) = deposed
    hand(outbox_a, batch(sample(KEY, 1)))
    hand(outbox_a, batch(sample(KEY, 2)))
    other = sqlalchemy.create_engine(migrated)
    try:
        with other.begin() as conn:
            held = handovers.oldest(conn, DEFAULT_CLUSTER)  # locked FOR UPDATE until the end
            assert held is not None
            taken = take(store_b)
            assert taken is not None and taken.id != held.id
            assert take(store_b) is None
        assert waiting(migrated) == 1
        taken = take(store_b)
        assert taken is not None and taken.id == held.id
    finally:
        other.dispose()
    assert [ts for _, ts, _ in head(migrated)] == [T0, T0 + STEP, T0 + 2 * STEP]


def test_a_deposed_queue_is_handed_over_and_a_silent_database_bounds_the_handover(
    migrated: str, tmp_path: Path
) -> None:
    registry, metrics = build_registry(SnapshotHolder(30.0))
    queue = WriteQueue(
        spool=Spool(tmp_path / "spool"),
        max_raw=1,  # the first batch waits as it is, the others are spooled
        on_drop=lambda n, why: metrics.samples_dropped.labels(reason=why).inc(n),
    )
    for i in range(3):
        queue.put(batch(sample(KEY, i), sample(KEY, i + 10)))
    assert queue.samples_by_place == (2, 0, 4)
    url = sqlalchemy.engine.make_url(migrated)
    value = registry.own.get_sample_value
    with freezable_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        behind = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        outbox = Outbox(behind, cluster=DEFAULT_CLUSTER, replica="r1")
        try:
            report = hand_over(queue, outbox, metrics, reason="deposed", deadline_seconds=10)
            assert (report.samples, report.batches, report.dropped) == (6, 3, 0)
            assert len(queue) == 0 and not list((tmp_path / "spool").glob("*.batch"))
            assert value("recorder_samples_handed_over_total") == 6
            queue.put(batch(sample(KEY, 20)))
            queue.put(batch(sample(KEY, 21), sample(KEY, 22)))
            proxy.freeze()  # the database answered the election, then went silent
            begun = time.monotonic()
            report = hand_over(queue, outbox, metrics, reason="deposed", deadline_seconds=1.0)
            assert time.monotonic() - begun < 2.0
            assert (report.samples, report.dropped) == (0, 3)
            assert report.failure == "not done within 1s"
            assert value("recorder_samples_dropped_total", {"reason": "deposed"}) == 3
            assert len(queue) == 0
        finally:
            proxy.thaw()
            outbox.close()
            queue.close()
    leader = open_store(migrated)  # no election here: the handed-over rows read back
    try:
        taken = [take(leader) for _ in range(3)]
    finally:
        leader.close()
    assert [t.result.written for t in taken if t is not None and t.result is not None] == [2, 2, 2]
    assert [ts for _, ts, _ in head(migrated)] == sorted(
        T0 + i * STEP for i in (0, 1, 2, 10, 11, 12)
    )
