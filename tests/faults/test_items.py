"""One odd item, one skewed clock: a poll over a real store (SQLite file and PostgreSQL) keeps
every other sample, counts the rejection by reason, and the series goes on recording."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from recorder.buffer import WriteQueue
from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.exporter import RecorderRegistry, SnapshotHolder, build_registry
from recorder.flusher import Flusher
from recorder.poller import Poller
from recorder.store import Store
from tests.kube_support import PodsWhole

NOW_S = 1_800_000_000.0
NOW_MS = int(NOW_S * 1000)
STAMP = "2027-01-15T08:00:00Z"  # 20 s before NOW


def node(name: str, **changes: Any) -> dict[str, Any]:
    item = {
        "metadata": {"name": name},
        "timestamp": STAMP,
        "window": "30s",
        "usage": {"cpu": "250m", "memory": "1Gi"},
    }
    item.update(changes)
    return item


def pod(name: str, **changes: Any) -> dict[str, Any]:
    item = {
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
        "timestamp": STAMP,
        "window": "30s",
        "containers": [{"name": "app", "usage": {"cpu": "100m", "memory": "64Mi"}}],
    }
    item.update(changes)
    return item


def body(kind: str, items: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "items": items}
    ).encode()


class Source(PodsWhole):
    def __init__(self, nodes: bytes, pods: bytes):
        self.nodes, self.pods = nodes, pods

    def list_nodes(self) -> bytes:
        return self.nodes

    def list_pods(self, namespace: str | None = None) -> bytes:
        return self.pods


def poller_for(
    source: Source, store: Store, clock: Callable[[], float] = lambda: NOW_S
) -> tuple[Poller, RecorderRegistry]:
    holder = SnapshotHolder()
    registry, metrics = build_registry(holder, process_collectors=False)
    flusher = Flusher(WriteQueue(), store, metrics)
    return Poller(source, flusher, holder, metrics, clock=clock), registry


def rejected(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("recorder_samples_rejected_total", {"reason": reason}) or 0.0


def stored(store: Store, kind: Kind) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT COUNT(*) FROM samples_head h JOIN series s ON s.id = h.series_id "
                f"WHERE s.kind = '{kind.value}'"
            ).scalar_one()
        )


# Each one of these in the node list used to kill the whole poll, pods included, uncounted.
HOSTILE_NODES = {
    "calendar_invalid": node("bad", timestamp="2024-13-45T99:99:99Z"),
    "year_zero": node("bad", timestamp="0000-01-01T00:00:00Z"),
    "offset_24h": node("bad", timestamp="2027-01-15T08:00:00+24:00"),
    "above_int64": node("bad", usage={"cpu": "10G", "memory": "1Gi"}),
    "1e999_string": node("bad", usage={"cpu": "1e999", "memory": "1Gi"}),
    "1e999_number": node("bad", usage={"cpu": 1e999, "memory": "1Gi"}),
    "deep_nesting": node("bad", usage={"cpu": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}),
    "window_600h": node("bad", window="600h"),
    "future_1y": node("bad", timestamp="2028-01-15T08:00:00Z"),
    "long_name": node("x" * 5000),
    "nul_in_name": node("bad\u0000node"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NODES))
def test_one_hostile_node_item_costs_only_itself(
    case: str, store: Store, figure: Callable[..., None]
) -> None:
    nodes = [node("good-1"), HOSTILE_NODES[case], node("good-2")]
    raw = body("NodeMetricsList", nodes).replace(b"Infinity", b"1e999")
    poller, registry = poller_for(Source(raw, body("PodMetricsList", [pod("web-1")])), store)
    report = poller.poll_once()
    assert report.ok, report
    assert stored(store, Kind.NODE) == 2 and stored(store, Kind.CONTAINER) == 1
    counted = sum(
        s.value
        for m in registry.collect()
        if m.name == "recorder_samples_rejected"
        for s in m.samples
        if s.name.endswith("_total")
    )
    assert counted == 1
    # /metrics renders the two good nodes and never fails because of a value.
    text = b"".join(registry.exposition(openmetrics=False, gzip=False)).decode()
    assert text.count("recorder_node_cpu_usage_cores{") == 2
    figure(served=4, stored=3, rejected_and_counted=counted, lost=0)


def test_a_node_with_a_wrong_clock_is_rejected_alone_and_keeps_recording(
    store: Store, figure: Callable[..., None]
) -> None:
    pods = body("PodMetricsList", [pod("web-1")])
    ahead = body("NodeMetricsList", [node("skewed", timestamp="2027-01-15T09:00:00Z")])
    poller, registry = poller_for(Source(ahead, pods), store)
    poller.poll_once()
    assert rejected(registry, "future_timestamp") == 1 and stored(store, Kind.NODE) == 0
    # A row stamped in the future that an older recorder stored must not block the series.
    key = SeriesKey.for_node("skewed")
    store.write(
        Batch(Kind.NODE, (Sample(key, NOW_MS + 365 * 86_400_000, 30_000, 1, 1),)), now_ms=NOW_MS
    )
    later = [node("skewed", timestamp=f"2027-01-15T08:00:{s:02d}Z") for s in (10, 20, 30)]
    for item in later:
        poller, _ = poller_for(Source(body("NodeMetricsList", [item]), pods), store)
        assert poller.poll_once().ok
    assert stored(store, Kind.NODE) == 1 + 3
    figure(served=3, stored_after_future_row=3, lost=0)


def test_a_clock_stepped_back_is_stored_and_an_exact_duplicate_once(
    store: Store, figure: Callable[..., None]
) -> None:
    pods = body("PodMetricsList", [])
    stamps = ["2027-01-15T08:00:10Z", "2027-01-15T08:00:00Z", "2027-01-15T08:00:10Z"]
    for stamp in stamps:
        poller, _ = poller_for(
            Source(body("NodeMetricsList", [node("n1", timestamp=stamp)]), pods), store
        )
        assert poller.poll_once().ok
    assert stored(store, Kind.NODE) == 2
    figure(served=3, distinct=2, stored=2, lost=0)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b.replace(b'"250m"', b"[" * 5000 + b"]" * 5000), id="nesting_5000"),
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
    ],
)
def test_a_node_list_that_cannot_be_parsed_fails_only_the_nodes(
    damage: Callable[[bytes], bytes], store: Store, figure: Callable[..., None]
) -> None:
    nodes = damage(body("NodeMetricsList", [node("good-1"), node("good-2")]))
    poller, registry = poller_for(Source(nodes, body("PodMetricsList", [pod("web-1")])), store)
    report = poller.poll_once()
    failed = {o.resource: o.error for o in report.outcomes if o.error is not None}
    assert set(failed) == {"nodes"}
    assert registry.get_sample_value(
        "recorder_poll_errors_total", {"resource": "nodes", "reason": "malformed"}
    )
    assert stored(store, Kind.CONTAINER) == 1
    figure(pods_stored=1, nodes_failed_and_counted=1)


def test_invalid_utf8_in_one_item_costs_only_that_item(
    store: Store, figure: Callable[..., None]
) -> None:
    nodes = body("NodeMetricsList", [node("good-1"), node("bad-2"), node("good-3")])
    poller, registry = poller_for(
        Source(nodes.replace(b"bad-2", b"bad-\xff\xfe"), body("PodMetricsList", [pod("w")])),
        store,
    )
    assert poller.poll_once().ok
    assert stored(store, Kind.NODE) == 2 and stored(store, Kind.CONTAINER) == 1
    assert rejected(registry, "malformed_item") == 1
    figure(served=4, stored=3, rejected_and_counted=1, lost=0)
