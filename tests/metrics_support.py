"""A registry that has been through what the service does (polls that fail and succeed, items
rejected, maintenance, store statistics), so every family, labelled ones too, has samples."""

from __future__ import annotations

import os
from pathlib import Path

from recorder.api.guard import Denials
from recorder.api.httpmetrics import HttpMetrics
from recorder.api.prometheus_api import result_cache
from recorder.buffer import WriteQueue
from recorder.domain import Batch, Kind, WriteResult
from recorder.elector import Elector
from recorder.errors import MetricsApiForbidden, StoreError
from recorder.exporter import (
    LineRenderer,
    RecorderRegistry,
    RelayRegistry,
    SnapshotHolder,
    build_registry,
    own_exposition,
)
from recorder.flusher import Flusher
from recorder.poller import Poller
from recorder.service import WorkerCollector
from recorder.store import Store
from recorder.worker import maintain_logged
from tests.kube_support import PodsWhole

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLUSTER = "prod-eu-1"
"""The cluster the populated registry's polls are of (not the default: it must show)."""


class FlakySource(PodsWhole):
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

    def prepare(self) -> None:
        raise StoreError("the database is down")

    def ready(self) -> None:
        raise StoreError("the database is down")


def populated_registry(store: Store, *, process_collectors: bool = True) -> RecorderRegistry:
    holder = SnapshotHolder(30.0)
    registry, metrics = build_registry(holder, process_collectors=process_collectors)
    # A database outage first: a failed write, a batch dropped from a tiny buffer.
    down = WriteQueue(
        memory_bytes=64, on_drop=lambda n, why: metrics.samples_dropped.labels(reason=why).inc(n)
    )
    assert (
        not Poller(
            FlakySource(), Flusher(down, FailingSink(), metrics), holder, metrics, cluster=CLUSTER
        )
        .poll_once()
        .ok
    )
    poller = Poller(
        FlakySource(), Flusher(WriteQueue(), store, metrics), holder, metrics, cluster=CLUSTER
    )
    poller.poll_once()
    assert poller.poll_once().ok
    assert maintain_logged(store, metrics) is not None
    registry.exposition(openmetrics=False, gzip=False)  # observes a render duration
    return registry


class _Worker:
    """The server's view of a worker process (``WorkerCollector`` reads these two)."""

    pid = os.getpid()
    restarts = 1


def _nothing() -> None:
    pass


def relayed_registry(store: Store) -> tuple[RelayRegistry, RecorderRegistry]:
    """What the service's ``/metrics`` serves: the worker's data and self-metrics (a
    ``populated_registry`` without process collectors), relayed by the server with its own
    process, worker and HTTP metrics (after a shed request, so that every labelled family has
    samples); and the worker's registry, for comparison."""
    worker = populated_registry(store, process_collectors=False)
    Elector(None, worker.own, 30.0, on_lead=_nothing, on_lost=_nothing, on_depose=_nothing)
    relay = RelayRegistry(30.0)
    renderer = LineRenderer()
    view = worker.holder.view()
    for kind, published in ((Kind.NODE, view.nodes), (Kind.CONTAINER, view.containers)):
        assert published is not None
        lines = renderer.render(kind, published.samples)
        assert lines is not None
        relay.publish(lines)
    relay.set_worker_metrics(own_exposition(worker.own))
    relay.own.register(WorkerCollector(_Worker()))  # type: ignore[arg-type]
    http = HttpMetrics(relay.own)
    http.requests.labels("/api/v1/history", "503").inc()
    http.shed.labels("/api/v1/history").inc()
    http.duration.labels("/api/v1/history").observe(0.1)
    Denials(relay.own).count("forbidden")
    result_cache(relay.own)
    return relay, worker
