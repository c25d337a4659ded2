"""The poll cycle over our own seams: a fake Metrics API source and a real store (the shared
``store`` fixture: SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from recorder.buffer import WriteQueue
from recorder.domain import Batch, WriteResult
from recorder.errors import MetricsApiForbidden, StoreError
from recorder.exporter import RecorderRegistry, SnapshotHolder, build_registry
from recorder.flusher import Flusher
from recorder.poller import Poller
from recorder.store import Store
from tests.kube_support import PodsWhole

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class Source(PodsWhole):
    def __init__(self, nodes: bytes, pods: bytes):
        self.nodes, self.pods = nodes, pods
        self.pod_calls: list[str | None] = []
        self.fail_nodes: Exception | None = None

    def list_nodes(self) -> bytes:
        if self.fail_nodes:
            raise self.fail_nodes
        return self.nodes

    def list_pods(self, namespace: str | None = None) -> bytes:
        self.pod_calls.append(namespace)
        return self.pods


class OutageSink:
    """The real store behind a switch that makes it fail like a database outage."""

    def __init__(self, store: Store):
        self.store = store
        self.down = False

    def write(self, batch: Batch, *, now_ms: int) -> WriteResult:
        if self.down:
            raise StoreError("database is down")
        return self.store.write(batch, now_ms=now_ms)

    def prepare(self) -> None:
        if self.down:
            raise StoreError("database is down")
        self.store.prepare()

    def ready(self) -> None:
        if self.down:
            raise StoreError("database is down")
        self.store.ready()


class RecordingSink:
    """A database that accepts everything and keeps the batches it was given."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def write(self, batch: Batch, *, now_ms: int) -> WriteResult:
        self.batches.append(batch)
        return WriteResult(len(batch.samples), 0)

    def prepare(self) -> None:
        pass

    def ready(self) -> None:
        pass


NOW = 1.8e9  # 2027-01-15: after the fixtures' timestamps, within no skew of them


def make(
    source: Source, sink: object, memory_bytes: int = 1 << 20, **kwargs: object
) -> tuple[Poller, CollectorRegistry]:
    holder = SnapshotHolder()
    registry, metrics = build_registry(holder)
    queue = WriteQueue(
        memory_bytes=memory_bytes,
        on_drop=lambda n, why: metrics.samples_dropped.labels(reason=why).inc(n),
    )
    flusher = Flusher(queue, sink, metrics)  # type: ignore[arg-type]
    poller = Poller(source, flusher, holder, metrics, clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]
    return poller, registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def odd_source() -> Source:
    return Source(
        (FIXTURES / "odd_nodes.json").read_bytes(), (FIXTURES / "odd_pods.json").read_bytes()
    )


def test_poll_stores_good_items_rejects_bad_ones_and_counts(store: Store) -> None:
    poller, registry = make(odd_source(), store)
    report = poller.poll_once()
    assert report.ok
    assert [(o.resource, o.samples, o.written, len(o.rejections)) for o in report.outcomes] == [
        ("nodes", 2, 2, 3),
        ("pods", 4, 4, 5),
    ]
    assert value(registry, "recorder_samples_written_total") == 6
    assert value(registry, "recorder_samples_rejected_total", reason="missing_usage") == 2
    assert value(registry, "recorder_samples_rejected_total", reason="malformed_item") == 1
    assert value(registry, "recorder_metrics_api_up") == 1
    assert value(registry, "recorder_last_successful_poll_timestamp_seconds") == NOW
    again = poller.poll_once()
    assert again.written == 0
    assert [o.skipped for o in again.outcomes] == [2, 4]


def test_api_failure_is_counted_by_reason_and_pods_still_stored(store: Store) -> None:
    source = odd_source()
    source.fail_nodes = MetricsApiForbidden("no", status=403)
    poller, registry = make(source, store)
    report = poller.poll_once()
    assert not report.ok
    assert report.outcomes[0].error is source.fail_nodes
    assert report.outcomes[1].written == 4
    assert value(registry, "recorder_poll_errors_total", resource="nodes", reason="forbidden") == 1
    assert value(registry, "recorder_metrics_api_up") == 0
    assert value(registry, "recorder_polls_total", resource="nodes") == 1


def test_every_sample_published_and_queued_carries_the_pollers_cluster(store: Store) -> None:
    poller, registry = make(odd_source(), store, cluster="prod-eu-1")
    report = poller.poll_once()
    assert report.ok and report.written == 6
    assert isinstance(registry, RecorderRegistry)
    view = registry.holder.view()
    assert view.nodes is not None and view.containers is not None
    published = (*view.nodes.samples, *view.containers.samples)
    assert len(published) == 6 and {s.key.cluster for s in published} == {"prod-eu-1"}
    default_poller, default_registry = make(odd_source(), store)
    default_poller.poll_once()
    assert isinstance(default_registry, RecorderRegistry)
    default_view = default_registry.holder.view()
    assert default_view.nodes is not None
    assert {s.key.cluster for s in default_view.nodes.samples} == {"default"}


def test_the_batches_written_are_of_the_pollers_cluster_labels_included() -> None:
    for namespaces in ((), ("shop", "kube-system")):  # one list per kind, or merged lists
        sink = RecordingSink()
        poller, _ = make(odd_source(), sink, cluster="prod-eu-1", namespaces=namespaces)
        assert poller.poll_once().ok
        assert sink.batches and all(b.cluster == "prod-eu-1" for b in sink.batches)
        assert {s.key.cluster for b in sink.batches for s in b.samples} == {"prod-eu-1"}
        assert any(b.pod_labels for b in sink.batches)


def test_namespaced_mode_lists_each_namespace_and_skips_nodes(store: Store) -> None:
    source = odd_source()
    poller, _ = make(source, store, namespaces=["shop", "kube-system"])
    report = poller.poll_once()
    assert [o.resource for o in report.outcomes] == ["pods"]
    assert source.pod_calls == ["shop", "kube-system"]


def test_database_outage_keeps_samples_and_writes_them_later(store: Store) -> None:
    sink = OutageSink(store)
    poller, registry = make(odd_source(), sink)
    sink.down = True
    report = poller.poll_once()
    assert not report.ok
    assert poller.buffered_samples == 6
    assert value(registry, "recorder_poll_errors_total", resource="pods", reason="store") == 1
    # The exporter still shows the current values while the database is down.
    node = {"cluster": "default", "node": "10.0.2.15"}
    assert registry.get_sample_value("recorder_node_cpu_usage_cores", node) == 0.0
    assert (
        value(
            registry,
            "recorder_container_cpu_usage_cores",
            cluster="default",
            namespace="shop",
            pod="web-7c9f",
            container="app",
        )
        == 1.5
    )
    sink.down = False
    recovered = poller.poll_once()
    assert recovered.flushed_from_buffer == 6
    assert recovered.ok and poller.buffered_samples == 0
    assert value(registry, "recorder_samples_written_total") == 6


def test_outage_longer_than_the_buffer_drops_oldest_and_counts(store: Store) -> None:
    sink = OutageSink(store)
    poller, registry = make(odd_source(), sink, memory_bytes=2_000)
    sink.down = True
    for _ in range(6):
        poller.poll_once()
    dropped = value(registry, "recorder_samples_dropped_total", reason="buffer_full")
    assert dropped > 0
    # What was not dropped is still there, and is written once the database is back.
    waiting = poller.buffered_samples
    assert 0 < waiting < 6 * 6
    assert waiting + dropped == 6 * 6
    sink.down = False
    assert poller.poll_once().ok
    assert poller.buffered_samples == 0


class SlowSource(Source):
    """Each list call takes ``seconds``."""

    def __init__(self, seconds: float):
        base = odd_source()
        super().__init__(base.nodes, base.pods)
        self.seconds = seconds

    def list_pods(self, namespace: str | None = None) -> bytes:
        import time

        time.sleep(self.seconds)
        return super().list_pods(namespace)


def test_a_poll_starts_no_request_past_its_deadline(store: Store) -> None:
    source = SlowSource(0.2)
    poller, registry = make(source, store, namespaces=["a", "b", "c"], deadline_seconds=0.3)
    report = poller.poll_once()
    assert source.pod_calls == ["a", "b"]  # "c" would start after the 0.3 s deadline
    assert report.outcomes[0].error is not None
    assert value(registry, "recorder_poll_errors_total", resource="pods", reason="timeout") == 1
    assert report.outcomes[0].written == 4  # what "a" and "b" answered is kept


class OneNamespaceForbidden(Source):
    def list_pods(self, namespace: str | None = None) -> bytes:
        if namespace == "locked":
            self.pod_calls.append(namespace)
            raise MetricsApiForbidden("no", status=403)
        return super().list_pods(namespace)


def test_one_namespace_that_fails_costs_only_its_own_list(store: Store) -> None:
    base = odd_source()
    source = OneNamespaceForbidden(base.nodes, base.pods)
    poller, registry = make(source, store, namespaces=["locked", "shop"])
    report = poller.poll_once()
    assert source.pod_calls == ["locked", "shop"]
    assert not report.ok and report.outcomes[0].written == 4
    assert value(registry, "recorder_poll_errors_total", resource="pods", reason="forbidden") == 1
