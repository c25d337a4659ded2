"""The flusher over our own seam: a real store (SQLite and PostgreSQL, the shared ``store``
fixture) behind a switch that fails like a database outage, and a real write queue."""

from __future__ import annotations

import pytest

import recorder.buffer
from recorder.buffer import WriteQueue
from recorder.domain import Batch, Kind, Sample, SeriesKey, WriteResult
from recorder.errors import StoreError
from recorder.exporter import build_registry
from recorder.exporter.holder import SnapshotHolder
from recorder.flusher import Flusher
from recorder.store import Store

T0 = 1_800_000_000_000


class Outage:
    """The real store; while ``down``, every call fails as an unreachable database does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False
        self.writes = 0
        self.prepared = 0

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
    real_decode = recorder.buffer.decode_batch

    def counting_decode(data: bytes) -> Batch:
        found = real_decode(data)
        decoded.append(len(found.samples))
        return found

    monkeypatch.setattr(recorder.buffer, "decode_batch", counting_decode)
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
    assert sink.writes == 1 and sink.prepared == 5
    assert decoded == []  # no parked batch was read back for a retry that could not write
    assert flusher.queue.pending_samples == 100
    sink.down = False
    report = flusher.flush()
    assert report.error is None and report.written == 100
    assert decoded == [50, 50]
    assert flusher.queue.pending_samples == 0
