"""Decoding and normalizing real and odd Metrics API responses (pure, no I/O but fixtures)."""

from __future__ import annotations

import calendar
import json
from pathlib import Path

import pytest

from recorder.domain import Kind, Sample, SeriesKey
from recorder.errors import DecodeError
from recorder.kube.decode import decode_node_list, decode_pod_list
from recorder.kube.normalize import normalize_nodes, normalize_pods

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KI, MI, GI = 1024, 1024**2, 1024**3


def utc_ms(*fields: int, ms: int = 0) -> int:
    return calendar.timegm((*fields, 0, 0, 0)) * 1000 + ms


def as_list(item: dict[str, object], kind: str) -> bytes:
    return json.dumps({"kind": kind, "apiVersion": item["apiVersion"], "items": [item]}).encode()


def test_real_single_node_metrics(shared_fixtures: Path) -> None:
    item = json.loads((shared_fixtures / "01_website_nodemetrics_minikube.json").read_text())
    nodes, bad = decode_node_list(as_list(item, "NodeMetricsList"))
    batch = normalize_nodes(nodes)
    assert bad == [] and batch.rejections == ()
    assert batch.samples == (
        Sample(
            SeriesKey.for_node("minikube"),
            utc_ms(2022, 1, 27, 18, 48, 33),
            30_000,
            487_558_164,
            732_212 * KI,
        ),
    )


def test_real_single_pod_metrics(shared_fixtures: Path) -> None:
    item = json.loads(
        (shared_fixtures / "02_website_podmetrics_kube-scheduler-minikube.json").read_text()
    )
    pods, bad = decode_pod_list(as_list(item, "PodMetricsList"))
    batch = normalize_pods(pods)
    assert bad == [] and batch.rejections == ()
    assert batch.samples == (
        Sample(
            SeriesKey.for_container("kube-system", "kube-scheduler-minikube", "kube-scheduler"),
            utc_ms(2022, 1, 27, 19, 24, 31),
            30_000,
            9_559_630,
            22_244 * KI,
        ),
    )


def test_real_node_list(shared_fixtures: Path) -> None:
    body = (shared_fixtures / "03_libcloud_gke_nodemetricslist.json").read_bytes()
    nodes, bad = decode_node_list(body)
    batch = normalize_nodes(nodes)
    assert bad == []
    assert [(s.key.node, s.cpu_nanocores, s.memory_bytes) for s in batch.samples] == [
        ("gke-cluster-3-default-pool-76fd57f7-l83v", 110_691_045, 801_112 * KI)
    ]


def test_real_multicontainer_pod_list(shared_fixtures: Path) -> None:
    body = (shared_fixtures / "04_libcloud_gke_podmetricslist_multicontainer.json").read_bytes()
    raw = json.loads(body)
    pods, bad = decode_pod_list(body)
    batch = normalize_pods(pods)
    assert bad == [] and batch.rejections == ()
    expected_containers = sum(len(item["containers"]) for item in raw["items"])
    assert len(batch.samples) == expected_containers
    by_key = {s.key: s for s in batch.samples}
    nanny = by_key[
        SeriesKey.for_container(
            "kube-system",
            "stackdriver-metadata-agent-cluster-level-849ff68b6d-fphxl",
            "metadata-agent-nanny",
        )
    ]
    assert (nanny.cpu_nanocores, nanny.memory_bytes) == (30_081_564, 7_376 * KI)
    assert nanny.timestamp_ms == utc_ms(2021, 8, 13, 10, 24, 47)


def test_odd_nodes() -> None:
    nodes, bad = decode_node_list((FIXTURES / "odd_nodes.json").read_bytes())
    batch = normalize_nodes(nodes)
    assert bad == []
    t0 = utc_ms(2024, 5, 1, 10, 0, 0)
    assert batch.samples == (
        Sample(
            SeriesKey.for_node("ip-10-0-1-23.ec2.internal"),
            t0,
            10_043,
            2_250_000_000,
            3_977_756 * KI,
        ),
        Sample(SeriesKey.for_node("10.0.2.15"), t0, 60_000, 0, GI),
    )
    assert sorted((r.name, r.reason) for r in batch.rejections) == [
        ("bad-window-node", "bad_window"),
        ("null-ts-node", "null_timestamp"),
        ("null-usage-node", "missing_usage"),
    ]


def test_odd_pods_keep_every_good_container_and_reject_each_bad_one() -> None:
    pods, bad = decode_pod_list((FIXTURES / "odd_pods.json").read_bytes())
    assert [(r.namespace, r.name, r.reason) for r in bad] == [
        ("kube-system", "wrong-type", "malformed_item")
    ]
    batch = normalize_pods(pods)
    t0 = utc_ms(2024, 5, 1, 10, 0, 0)
    assert batch.samples == (
        Sample(
            SeriesKey.for_container("shop", "web-7c9f", "app"), t0, 60_000, 1_500_000_000, 512 * MI
        ),
        Sample(SeriesKey.for_container("shop", "web-7c9f", "sidecar"), t0, 60_000, 0, 10_043 * KI),
        Sample(
            SeriesKey.for_container("kube-system", "bad-quantity", "ok"),
            t0 + 2000,
            30_000,
            7_338_891,
            24_716 * KI,
        ),
        Sample(
            SeriesKey.for_container("kube-system", "dns-1", "coredns"),
            t0 + 3500,
            30_000,
            2_501_000_000,
            70 * MI,
        ),
    )
    assert sorted((r.namespace, r.name, r.reason) for r in batch.rejections) == [
        ("kube-system", "?", "missing_name"),
        ("kube-system", "bad-quantity/broken", "bad_quantity"),
        ("kube-system", "bad-quantity/no-memory", "missing_usage"),
        ("shop", "no-timestamp", "null_timestamp"),
    ]
    assert all(r.kind is Kind.CONTAINER for r in batch.rejections)
    assert batch.pod_labels[("shop", "web-7c9f")] == {
        "app": "web",
        "tier": "",
        "pod-template-hash": "7c9f",
    }
    assert batch.pod_labels[("shop", "starting-1")] == {}


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b'{"kind": "NodeMetricsList", "items": 5}', b'{"kind": "Status"}'],
)
def test_unusable_node_list_is_one_clear_error(body: bytes) -> None:
    with pytest.raises(DecodeError, match="NodeMetricsList"):
        decode_node_list(body)


@pytest.mark.parametrize(
    "timestamp", ["2024-05-01 10:00:00Z", "2024-05-01T10:00:00", "yesterday", ""]
)
def test_bad_timestamps_are_rejected(timestamp: str) -> None:
    body = json.dumps(
        {
            "kind": "NodeMetricsList",
            "items": [
                {
                    "metadata": {"name": "n"},
                    "timestamp": timestamp,
                    "window": "30s",
                    "usage": {"cpu": "1", "memory": "1"},
                }
            ],
        }
    ).encode()
    nodes, _ = decode_node_list(body)
    batch = normalize_nodes(nodes)
    assert batch.samples == ()
    assert [r.reason for r in batch.rejections] == ["bad_timestamp"]


def test_offset_timestamps_are_converted_to_utc() -> None:
    body = json.dumps(
        {
            "kind": "NodeMetricsList",
            "items": [
                {
                    "metadata": {"name": "n"},
                    "timestamp": "2024-05-01T12:00:00.123456789+02:00",
                    "usage": {"cpu": "1", "memory": "1"},
                }
            ],
        }
    ).encode()
    nodes, _ = decode_node_list(body)
    (sample,) = normalize_nodes(nodes).samples
    assert sample.timestamp_ms == utc_ms(2024, 5, 1, 10, 0, 0, ms=123)
    assert sample.window_ms == 0  # missing window: unknown, not invented
