"""A registry that has been through what the service does (polls that fail and succeed, items
rejected, maintenance, store statistics), so every family, labelled ones too, has samples."""

from __future__ import annotations

from pathlib import Path

from recorder.buffer import WriteQueue
from recorder.domain import Batch, WriteResult
from recorder.errors import MetricsApiForbidden, StoreError
from recorder.exporter import RecorderRegistry, SnapshotHolder, build_registry
from recorder.flusher import Flusher
from recorder.poller import Poller
from recorder.store import Store
from recorder.worker import maintain_logged

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class FlakySource:
    """Real-world odd responses (with items to reject); the first node list is forbidden."""

    def __init__(self) -> None:
        self.node_calls = 0

    def list_nodes(self) -> bytes:
        self.node_calls += 1
        if self.node_calls == 1:
            raise MetricsApiForbidden("forbidden", status=403)
        return (FIXTURES / "odd_nodes.json").read_bytes()

    def list_pods(self, namespace: str | None = None) -> bytes:
        return (FIXTURES / "odd_pods.json").read_bytes()


class FailingSink:
    """A database that is down: every write fails for a transient reason."""

    def write(self, batch: Batch, *, now_ms: int) -> WriteResult:
        raise StoreError("the database is down")


def populated_registry(store: Store, *, process_collectors: bool = True) -> RecorderRegistry:
    holder = SnapshotHolder(30.0)
    registry, metrics = build_registry(holder, process_collectors=process_collectors)
    # A database outage first: a failed write, a batch dropped from a tiny buffer.
    down = WriteQueue(
        memory_bytes=64, on_drop=lambda n, why: metrics.samples_dropped.labels(reason=why).inc(n)
    )
    assert (
        not Poller(FlakySource(), Flusher(down, FailingSink(), metrics), holder, metrics)
        .poll_once()
        .ok
    )
    poller = Poller(FlakySource(), Flusher(WriteQueue(), store, metrics), holder, metrics)
    poller.poll_once()
    assert poller.poll_once().ok
    assert maintain_logged(store, metrics) is not None
    registry.exposition(openmetrics=False, gzip=False)  # observes a render duration
    return registry
