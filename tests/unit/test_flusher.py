"""The flusher over our own seam: a real store (SQLite and PostgreSQL, the shared ``store``
fixture) behind a switch that fails like a database outage, and a real write queue."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

import recorder.buffer
import recorder.flusher
from recorder import heap
from recorder.buffer import WriteQueue
from recorder.domain import Batch, Kind, Sample, SeriesKey, WriteResult
from recorder.errors import StoreError
from recorder.exporter import build_registry
from recorder.exporter.holder import SnapshotHolder
from recorder.flusher import Flusher
from recorder.store import Store, schema

T0 = 1_800_000_000_000


class Outage:
    """The real store; while ``down``, every call fails as an unreachable database does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False
        self.locked = False
        """Answers no read (a table locked) but ``write`` and ``prepare`` as ``down`` says."""
        self.writes = 0
        self.prepared = 0
        self.asked = 0

    def write(self, batch: Batch, *, now_ms: int) -> WriteResult:
        self.writes += 1
        if self.down:
            raise StoreError("the database is down")
        return self.store.write(batch, now_ms=now_ms)

    def prepare(self) -> None:
        self.prepared += 1
        if self.down:
            raise StoreError("the database is down")
        self.store.prepare()

    def ready(self) -> None:
        self.asked += 1
        if self.down or self.locked:
            raise StoreError("the database is down")
        self.store.ready()


def batch(ts: int, count: int = 50) -> Batch:
    return Batch(
        Kind.CONTAINER,
        tuple(
            Sample(SeriesKey.for_container("shop", f"web-{i}", "app"), ts, 15_000, 1_000 + i, i)
            for i in range(count)
        ),
    )


def test_a_database_still_down_costs_no_read_back_of_parked_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real_restore = recorder.buffer.restore

    def counting_restore(data: bytes) -> Batch | recorder.buffer.Restored:
        found = real_restore(data)
        decoded.append(found.sample_count if isinstance(found, recorder.buffer.Restored) else 0)
        return found

    monkeypatch.setattr(recorder.buffer, "restore", counting_restore)
    sink = Outage(store)
    _registry, metrics = build_registry(SnapshotHolder())
    flusher = Flusher(WriteQueue(), sink, metrics)
    sink.down = True
    flusher.queue.put(batch(T0))
    first = flusher.flush()
    assert first.error is not None and sink.writes == 1  # a batch waiting as it is: tried
    flusher.queue.put(batch(T0 + 15_000))  # parked straight away while writes fail
    for _ in range(5):  # retries while the database stays down
        assert flusher.flush().error is not None
    assert sink.writes == 1 and sink.asked == 5 and sink.prepared == 0  # asked, no load
    assert decoded == []  # no parked batch was read back for a retry that could not write
    assert flusher.queue.pending_samples == 100
    sink.down = False
    report = flusher.flush()
    assert report.error is None and report.written == 100
    assert decoded == [50, 50]
    assert flusher.queue.pending_samples == 0


class PollsAsking:
    """Polls that ask for their turn at chosen moments (``ask``), each on a thread of its
    own: whether each began at once (``at_once``), and whether all had it in the end."""

    def __init__(self, turns: heap.Turns) -> None:
        self.turns = turns
        self.at_once: list[bool] = []
        self._threads: list[threading.Thread] = []
        self._entered: list[threading.Event] = []

    def ask(self) -> None:
        took = threading.Event()

        def poll() -> None:
            with self.turns.poll():
                took.set()

        self._threads.append(threading.Thread(target=poll))
        self._threads[-1].start()
        self._entered.append(took)
        self.at_once.append(took.wait(0.2))

    def all_had_their_turn(self) -> bool:
        for thread in self._threads:
            thread.join(10.0)
        return all(took.is_set() for took in self._entered)


def test_each_batch_is_read_and_written_in_its_turn_with_the_polls(store: Store) -> None:
    """A poll that wants its turn while a batch is written waits until that write is over
    (and goes before the next batch): their memory peaks never add up."""
    turns = heap.Turns(max_wait_seconds=10.0)
    polls = PollsAsking(turns)

    class Watched(Outage):
        def write(self, batch: Batch, *, now_ms: int) -> WriteResult:
            polls.ask()
            return super().write(batch, now_ms=now_ms)

    _registry, metrics = build_registry(SnapshotHolder())
    flusher = Flusher(WriteQueue(), Watched(store), metrics, turns=turns)
    for n in range(3):
        flusher.queue.put(batch(T0 + n * 15_000))
    assert flusher.flush().written == 150
    assert polls.all_had_their_turn()  # each once the write ended
    assert polls.at_once == [False, False, False]  # no poll began during a write
    assert turns.overdue == 0


def test_reading_the_maps_before_a_parked_batch_is_done_in_its_turn_too(store: Store) -> None:
    """Before a parked batch is read back the store reloads what the writer needs (every
    series and pod's labels at a database that answers reads but refuses writes): that takes
    its turn as a write does, so a poll never runs beside it."""
    turns = heap.Turns(max_wait_seconds=10.0)
    polls = PollsAsking(turns)

    class Watched(Outage):
        def prepare(self) -> None:
            polls.ask()
            super().prepare()

    _registry, metrics = build_registry(SnapshotHolder())
    flusher = Flusher(WriteQueue(), Watched(store), metrics, turns=turns)
    flusher.queue.put(batch(T0))
    flusher.queue.park_all()  # as after a failed write: the next flush prepares first
    assert flusher.flush().written == 50
    assert polls.all_had_their_turn()  # the poll once the maps were read
    assert polls.at_once == [False]  # no poll began while they were read
    assert turns.overdue == 0


def test_whether_the_database_answers_is_asked_outside_the_turn(store: Store) -> None:
    """Before the maps are read again in a turn, the store is asked (``ready``) outside it:
    a read that waits out a held lock holds no turn, so a poll takes its own at once; while
    the database answers no read, nothing is read in a turn at all."""
    turns = heap.Turns(max_wait_seconds=10.0)
    polls = PollsAsking(turns)

    class Watched(Outage):
        def ready(self) -> None:
            polls.ask()
            super().ready()

    sink = Watched(store)
    _registry, metrics = build_registry(SnapshotHolder())
    flusher = Flusher(WriteQueue(), sink, metrics, turns=turns)
    flusher.queue.put(batch(T0))
    flusher.queue.park_all()  # as after a failed write: the next flush asks, then prepares
    sink.locked = True
    assert flusher.flush().error is not None
    assert (sink.asked, sink.prepared, sink.writes) == (1, 0, 0)
    sink.locked = False
    assert flusher.flush().written == 50
    assert (sink.asked, sink.prepared, sink.writes) == (2, 1, 1)
    assert polls.all_had_their_turn()
    assert polls.at_once == [True, True]  # each poll began while the store was asked
    assert turns.overdue == 0


def test_a_parked_batch_is_written_in_parts_and_a_part_that_fails_costs_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch read back packed is written ``RESTORED_PART_SAMPLES`` at a time. When a part
    fails, the batch waits whole: written again, its parts already stored are skipped as
    exact duplicates, and every sample is stored once."""
    monkeypatch.setattr(recorder.flusher, "RESTORED_PART_SAMPLES", 20)

    class FailsOnce(Outage):
        def write(self, batch: Batch, *, now_ms: int) -> WriteResult:
            self.down = self.writes == 1  # the second part of the first attempt
            return super().write(batch, now_ms=now_ms)

    sink = FailsOnce(store)
    registry, metrics = build_registry(SnapshotHolder())
    flusher = Flusher(WriteQueue(), sink, metrics)
    flusher.queue.put(batch(T0))
    flusher.queue.park_all()  # as after a failed write: read back packed
    failed = flusher.flush()
    assert failed.error is not None and sink.writes == 2
    assert flusher.queue.pending_samples == 50  # the whole batch still waits
    sink.down = False
    report = flusher.flush()
    assert report.error is None and sink.writes == 2 + 3  # parts of 20, 20 and 10 samples
    [result] = report.by_seq.values()
    assert (result.written, result.skipped_duplicates) == (30, 20)
    # The first part was counted when it was stored; written again, it is a duplicate.
    assert registry.get_sample_value("recorder_samples_written_total") == 50
    assert flusher.queue.pending_samples == 0
    with store.reading() as conn:
        rows = conn.execute(select(func.count()).select_from(schema.samples_head)).scalar_one()
    assert rows == 50


def test_a_render_begins_once_the_polls_batches_are_written_or_parked(store: Store) -> None:
    """``after_writes`` (the gauges' render): it waits for the batch queued before it to be
    written, or parked when the database fails, at most its wait, then holds a turn that a
    poll waits for."""
    turns = heap.Turns(max_wait_seconds=10.0)
    outage = Outage(store)
    _registry, metrics = build_registry(SnapshotHolder())
    flusher = Flusher(WriteQueue(), outage, metrics, turns=turns)
    polls = PollsAsking(turns)

    def render(wait: float, seen: list[int], done: threading.Event) -> threading.Thread:
        def run() -> None:
            with flusher.after_writes(wait):
                seen.append(flusher.queue.samples_by_place[0])  # as objects
                polls.ask()  # a poll asking now waits for the render's turn
            done.set()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    flusher.queue.put(batch(T0))
    seen: list[int] = []
    done = threading.Event()
    thread = render(10.0, seen, done)
    assert not done.wait(0.3)  # the batch waits to be written: so does the render
    assert flusher.flush().written == 50
    assert done.wait(5.0)
    thread.join(5.0)
    assert seen == [0]  # no batch waited as objects when it began
    assert polls.at_once == [False] and polls.all_had_their_turn()

    outage.down = True
    flusher.queue.put(batch(T0 + 15_000))
    done = threading.Event()
    thread = render(10.0, seen, done)
    assert not done.wait(0.3)
    assert flusher.flush().error is not None  # parked: nothing waits as objects
    assert done.wait(5.0)
    thread.join(5.0)
    assert seen[-1] == 0 and flusher.queue.pending_samples == 50

    outage.down = False
    flusher.queue.resume()
    flusher.queue.put(batch(T0 + 30_000))  # no one writes it: the render waits 0.3 s only
    done = threading.Event()
    thread = render(0.3, seen, done)
    assert done.wait(5.0)
    thread.join(5.0)
    assert seen[-1] == 50


class Slow(Outage):
    """The real store, with each write taking ``per_sample`` seconds per sample more and
    each ``prepare`` ``reload_seconds`` more: the times of a slow machine at 150,000 pods,
    scaled down."""

    def __init__(self, store: Store, per_sample: float) -> None:
        super().__init__(store)
        self.per_sample = per_sample
        self.reload_seconds = 0.0

    def write(self, batch: Batch, *, now_ms: int) -> WriteResult:
        result = super().write(batch, now_ms=now_ms)
        time.sleep(self.per_sample * len(batch.samples))
        return result

    def prepare(self) -> None:
        super().prepare()
        time.sleep(self.reload_seconds)


def test_a_write_that_would_end_past_the_deadline_is_not_begun(store: Store) -> None:
    """A write cannot be stopped once begun: with a deadline (a shutdown's), a batch the
    recent writes say would end past it waits in the queue (the worker spools it) instead of
    running into the server's kill; one that fits is written."""
    sink = Slow(store, per_sample=0.002)
    _registry, metrics = build_registry(SnapshotHolder())
    flusher = Flusher(WriteQueue(), sink, metrics)
    flusher.queue.put(batch(T0, 10))
    assert flusher.expected_seconds(200, reload=False) is None  # nothing seen: no guess
    assert flusher.flush(deadline=time.monotonic() + 0.01).written == 10  # so it is begun
    for n in (1, 2):
        flusher.queue.put(batch(T0 + n * 15_000, 10))
    assert flusher.flush().written == 20
    expected = flusher.expected_seconds(200, reload=False)
    assert expected is not None and expected >= 200 * 0.002  # at least what it will take
    flusher.queue.put(batch(T0 + 3 * 15_000, 200))  # 0.4 s of writing
    report = flusher.flush(deadline=time.monotonic() + 0.2)
    assert report.deferred_samples == 200 and report.written == 0
    assert sink.writes == 3  # not begun
    assert flusher.queue.pending_samples == 200  # waits, whole
    report = flusher.flush(deadline=time.monotonic() + 10)
    assert report.written == 200 and report.deferred_samples == 0
    assert flusher.queue.pending_samples == 0


def test_after_a_failure_the_reload_of_the_maps_counts_toward_the_deadline(
    store: Store,
) -> None:
    """After a failed write the writer reads its maps again before the parked batch (16 s at
    150,000 pods on a slow machine): a deadline that leaves too little for that and the
    write begins neither."""
    sink = Slow(store, per_sample=0.0001)
    _registry, metrics = build_registry(SnapshotHolder())
    flusher = Flusher(WriteQueue(), sink, metrics)
    for n in range(3):
        flusher.queue.put(batch(T0 + n * 15_000, 10))
    assert flusher.flush().written == 30
    sink.reload_seconds = 0.3

    def fail_then_recover(ts: int) -> None:
        sink.down = True
        flusher.queue.put(batch(ts, 10))
        assert flusher.flush().error is not None  # parked; the maps are read again next
        sink.down = False

    fail_then_recover(T0 + 3 * 15_000)
    assert flusher.flush().written == 10  # the reload is measured: 0.3 s
    fail_then_recover(T0 + 4 * 15_000)
    prepared = sink.prepared
    report = flusher.flush(deadline=time.monotonic() + 0.15)
    assert report.deferred_samples == 10 and sink.prepared == prepared  # nothing begun
    assert flusher.queue.pending_samples == 10
    assert flusher.flush(deadline=time.monotonic() + 10).written == 10
    assert sink.prepared == prepared + 1
