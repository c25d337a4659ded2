"""Normalizing real and odd Metrics API responses to samples (recorder/kube/normalize.py), after
decoding as the poller does (pure, no I/O but fixtures)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import msgspec
import pytest

from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Sample, SeriesKey
from recorder.kube import normalize, wire
from recorder.kube.decode import decode_node_list, decode_pod_list
from recorder.kube.normalize import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    INT64_MAX,
    MAX_WINDOW_MS,
    MIN_TIMESTAMP_MS,
    Remembered,
    normalize_nodes,
    normalize_pods,
)
from tests.kube_support import (
    GI,
    GOOD_NODE,
    KI,
    MI,
    NOW_MS,
    T0,
    T0_MS,
    assert_only_bad_rejected,
    list_body,
    node,
    nodes_of,
    pod,
    pods_of,
    utc_ms,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def as_list(item: dict[str, object], kind: str) -> bytes:
    return json.dumps({"kind": kind, "apiVersion": item["apiVersion"], "items": [item]}).encode()


def test_real_single_node_metrics(shared_fixtures: Path) -> None:
    item = json.loads((shared_fixtures / "01_website_nodemetrics_minikube.json").read_text())
    nodes, bad = decode_node_list(as_list(item, "NodeMetricsList"))
    batch = normalize_nodes(nodes, now_ms=NOW_MS)
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
    batch = normalize_pods(pods, now_ms=NOW_MS)
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
    batch = normalize_nodes(nodes, now_ms=NOW_MS)
    assert bad == []
    assert [(s.key.node, s.cpu_nanocores, s.memory_bytes) for s in batch.samples] == [
        ("gke-cluster-3-default-pool-76fd57f7-l83v", 110_691_045, 801_112 * KI)
    ]


def test_real_multicontainer_pod_list(shared_fixtures: Path) -> None:
    body = (shared_fixtures / "04_libcloud_gke_podmetricslist_multicontainer.json").read_bytes()
    raw = json.loads(body)
    pods, bad = decode_pod_list(body)
    batch = normalize_pods(pods, now_ms=NOW_MS)
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
    batch = normalize_nodes(nodes, now_ms=NOW_MS)
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
    batch = normalize_pods(pods, now_ms=NOW_MS)
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
    batch = normalize_nodes(nodes, now_ms=NOW_MS)
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
    (sample,) = normalize_nodes(nodes, now_ms=NOW_MS).samples
    assert sample.timestamp_ms == utc_ms(2024, 5, 1, 10, 0, 0, ms=123)
    assert sample.window_ms == 0  # missing window: unknown, not invented


# --- one bad item costs only itself ------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-13-45T99:99:99Z",  # calendar-invalid
        "2024-02-30T10:00:00Z",
        "2024-05-01T23:59:60Z",  # Go has no leap seconds either
        "0000-01-01T00:00:00Z",  # year 0
        "0001-01-01T00:00:00+01:00",  # before datetime's first instant
        "2024-05-01T10:00:00+24:00",  # offsets of a day or more
        "2024-05-01T10:00:00-99:99",
        "\uff12\uff10\uff12\uff14-05-01T10:00:00Z",  # fullwidth digits: not RFC 3339
        "2013-12-31T23:59:59.999Z",  # before Kubernetes existed
        "1970-01-01T00:00:00Z",
    ],
)
def test_a_timestamp_that_is_not_a_time_rejects_its_item_alone(timestamp: str) -> None:
    body = list_body("NodeMetricsList", node("bad", timestamp=timestamp), node())
    assert_only_bad_rejected(nodes_of(body), "bad_timestamp")


def test_the_timestamp_floor_is_2014() -> None:
    body = list_body("NodeMetricsList", node(timestamp="2014-01-01T00:00:00Z"))
    assert [s.timestamp_ms for s in nodes_of(body).samples] == [MIN_TIMESTAMP_MS]
    assert utc_ms(2014, 1, 1, 0, 0, 0) == MIN_TIMESTAMP_MS


def test_a_future_timestamp_is_rejected_per_item_and_says_the_clock_is_wrong() -> None:
    now_ms = T0_MS
    ahead = "2024-05-01T10:05:00.001Z"  # 5 min + 1 ms ahead
    edge = "2024-05-01T10:05:00Z"  # exactly the allowed skew
    body = list_body("NodeMetricsList", node("bad", timestamp=ahead), node("edge", timestamp=edge))
    batch = nodes_of(body, now_ms=now_ms)
    assert [s.key.node for s in batch.samples] == ["edge"]
    ((rejection),) = batch.rejections
    assert (rejection.name, rejection.reason) == ("bad", "future_timestamp")
    assert "5.0 minutes ahead" in rejection.detail and "clock of node bad" in rejection.detail
    assert "probably wrong" in rejection.detail
    assert DEFAULT_MAX_FUTURE_SKEW_MS == 5 * 60 * 1000


def test_the_allowed_skew_is_a_parameter() -> None:
    body = list_body("NodeMetricsList", node(timestamp="2024-05-01T10:00:00.001Z"))
    strict = nodes_of(body, now_ms=T0_MS, max_future_skew_ms=0)
    assert [r.reason for r in strict.rejections] == ["future_timestamp"]
    assert len(nodes_of(body, now_ms=T0_MS, max_future_skew_ms=1).samples) == 1


def test_a_future_pod_names_the_node_running_it() -> None:
    body = list_body("PodMetricsList", pod(timestamp="2030-01-01T00:00:00Z"), pod("web-2"))
    batch = pods_of(body, now_ms=T0_MS)
    assert [s.key.pod for s in batch.samples] == ["web-2"]
    ((rejection),) = batch.rejections
    assert (rejection.namespace, rejection.name, rejection.reason) == (
        "shop",
        "web-1",
        "future_timestamp",
    )
    assert "days ahead" in rejection.detail
    assert "the node running pod shop/web-1" in rejection.detail


@pytest.mark.parametrize(
    ("usage", "what"),
    [
        ({"cpu": "10G", "memory": "1Gi"}, "cpu '10G' is 10000000000000000000 nanocores"),
        ({"cpu": "9223372036854775808n", "memory": "1"}, "out of range"),
        ({"cpu": "1e999", "memory": "1"}, "about 10^1008 nanocores"),
        ({"cpu": "1", "memory": "10E"}, "memory '10E' is 10000000000000000000 bytes"),
        ({"cpu": "1", "memory": "1e999"}, "out of range"),
        ({"cpu": "1" * 65, "memory": "1"}, "longer than 64 characters"),
        ({"cpu": "1", "memory": "1.5 GB"}, "invalid quantity"),
    ],
)
def test_a_quantity_outside_int64_rejects_its_item_alone(usage: dict[str, str], what: str) -> None:
    body = list_body("NodeMetricsList", node("bad", usage=usage), node())
    detail = assert_only_bad_rejected(nodes_of(body), "bad_quantity")
    assert what in detail


def test_the_largest_int64_quantities_are_kept_exactly() -> None:
    usage = {"cpu": "9223372036854775807n", "memory": "8Ei"}  # Go caps binary values at 2^63-1
    (sample,) = nodes_of(list_body("NodeMetricsList", node(usage=usage))).samples
    assert sample.cpu_nanocores == sample.memory_bytes == INT64_MAX


@pytest.mark.parametrize(
    ("window", "window_ms"),
    [("596h31m23.647s", MAX_WINDOW_MS), ("0s", 0), ("1us", 1), ("10.043s", 10_043)],
)
def test_windows_up_to_the_column_limit_are_kept(window: str, window_ms: int) -> None:
    (sample,) = nodes_of(list_body("NodeMetricsList", node(window=window))).samples
    assert sample.window_ms == window_ms


@pytest.mark.parametrize(
    ("window", "what"),
    [
        ("600h", "2160000000 ms) is longer than the 2147483647 ms"),
        ("596h31m23.648s", "longer than"),
        ("2562047h", "longer than"),
        ("-30s", "negative"),
        ("1" * 65 + "s", "not a Go duration"),
    ],
)
def test_a_window_the_column_cannot_hold_rejects_its_item_alone(window: str, what: str) -> None:
    body = list_body("NodeMetricsList", node("bad", window=window), node())
    detail = assert_only_bad_rejected(nodes_of(body), "bad_window")
    assert what in detail


@pytest.mark.parametrize(
    ("name", "shown_as"),
    [
        ("n" * 254, "n" * 80 + "… (254 characters)"),
        ("n" * 5000, "n" * 80 + "… (5000 characters)"),
        ("bad\x00node", "bad\\x00node"),
        ("bad\nnode", "bad\\nnode"),
        ("bad\x85node", "bad\\x85node"),  # C1 control
        ("bad\x7fnode", "bad\\x7fnode"),
    ],
)
def test_a_name_the_database_cannot_store_rejects_its_item_alone(name: str, shown_as: str) -> None:
    body = list_body("NodeMetricsList", node(name), node())
    batch = nodes_of(body)
    assert batch.samples == (GOOD_NODE,)
    ((rejection),) = batch.rejections
    assert (rejection.name, rejection.reason) == (shown_as, "bad_name")
    assert "\x00" not in rejection.detail and "\n" not in rejection.detail


def test_names_of_253_characters_and_beyond_ascii_are_kept() -> None:
    body = list_body("NodeMetricsList", node("n" * 253), node("nœud-ü"))
    assert [s.key.node for s in nodes_of(body).samples] == ["n" * 253, "nœud-ü"]


def test_a_bad_namespace_pod_or_container_name_costs_only_its_own_samples() -> None:
    containers = [
        {"name": "c" * 5000, "usage": {"cpu": "1", "memory": "1"}},
        {"name": "nul\x00", "usage": {"cpu": "1", "memory": "1"}},
        {"name": "", "usage": {"cpu": "1", "memory": "1"}},
        {"name": "app", "usage": {"cpu": "1", "memory": "1"}},
    ]
    body = list_body(
        "PodMetricsList",
        pod("web-1", containers=containers),
        pod("web-2", namespace="sh\x00op"),
        pod("p" * 300),
        pod("web-3"),
    )
    batch = pods_of(body)
    assert [(s.key.pod, s.key.container) for s in batch.samples] == [
        ("web-1", "app"),
        ("web-3", "app"),
    ]
    assert [(r.namespace, r.name, r.reason) for r in batch.rejections] == [
        ("shop", "web-1/" + "c" * 80 + "… (5000 characters)", "bad_name"),
        ("shop", "web-1/nul\\x00", "bad_name"),
        ("shop", "web-1/?", "missing_name"),
        ("sh\\x00op", "web-2", "bad_name"),
        ("shop", "p" * 80 + "… (300 characters)", "bad_name"),
    ]
    assert set(batch.pod_labels) == {("shop", "web-1"), ("shop", "web-3")}


def test_a_bad_label_is_dropped_alone_and_the_pod_is_kept() -> None:
    labels = {
        "app": "web",
        "k" * 318: "long key",
        "": "empty key",
        "nul\x00": "in key",
        "long-value": "v" * 1025,
        "nul-value": "a\x00b",
        "example.com/" + "k" * 63: "v" * 1024,  # long but allowed
        "tier": "",
    }
    batch = pods_of(list_body("PodMetricsList", pod(labels=labels)))
    assert [s.key.container for s in batch.samples] == ["app"]
    assert batch.pod_labels[("shop", "web-1")] == {
        "app": "web",
        "example.com/" + "k" * 63: "v" * 1024,
        "tier": "",
    }
    assert [r.reason for r in batch.rejections] == ["bad_label"] * 5
    assert all(r.name == "web-1" and r.namespace == "shop" for r in batch.rejections)
    assert "samples are kept" in batch.rejections[0].detail


def test_good_labels_are_passed_through_unchanged() -> None:
    labels = {"app": "web", "pod-template-hash": "7c9f"}
    batch = pods_of(list_body("PodMetricsList", pod(labels=labels), pod("web-2", labels=labels)))
    assert batch.rejections == ()
    assert batch.pod_labels == {("shop", "web-1"): labels, ("shop", "web-2"): labels}


def test_an_unexpected_error_inside_normalize_rejects_one_item() -> None:
    """Structs are not validated when built: a value of a type decode would never produce
    stands for any bug met while reading one item."""
    odd = [
        wire.NodeMetrics(metadata=wire.ObjectMeta(name=5)),  # type: ignore[arg-type]
        wire.NodeMetrics(wire.ObjectMeta(name="n"), T0, "30s", usage=["cpu"]),  # type: ignore[arg-type]
        wire.NodeMetrics(wire.ObjectMeta(name="good"), T0, "30s", wire.Usage("250m", "1Gi")),
    ]
    batch = normalize_nodes(odd, now_ms=NOW_MS)
    assert batch.samples == (GOOD_NODE,)
    assert [(r.name, r.reason) for r in batch.rejections] == [
        ("?", "malformed_item"),
        ("n", "malformed_item"),
    ]
    assert (
        "TypeError" in batch.rejections[0].detail or "AttributeError" in batch.rejections[0].detail
    )

    pods = [
        wire.PodMetrics(wire.ObjectMeta("a", "shop"), T0, "30s", [wire.ContainerMetrics("c", 7)]),  # type: ignore[arg-type]
        wire.PodMetrics(wire.ObjectMeta("b", "shop", labels=[1]), T0, "30s"),  # type: ignore[arg-type]
    ]
    pod_batch = normalize_pods(pods, now_ms=NOW_MS)
    assert [(r.name, r.reason) for r in pod_batch.rejections] == [
        ("a/c", "malformed_item"),
        ("b", "malformed_item"),
    ]


def test_every_sample_carries_the_cluster_it_was_polled_in() -> None:
    nodes, _ = decode_node_list((FIXTURES / "odd_nodes.json").read_bytes())
    pods, _ = decode_pod_list((FIXTURES / "odd_pods.json").read_bytes())
    unnamed_nodes = normalize_nodes(nodes, now_ms=NOW_MS)
    unnamed_pods = normalize_pods(pods, now_ms=NOW_MS)
    assert {s.key.cluster for s in (*unnamed_nodes.samples, *unnamed_pods.samples)} == {
        DEFAULT_CLUSTER
    }
    assert unnamed_nodes.cluster == unnamed_pods.cluster == DEFAULT_CLUSTER

    named_nodes = normalize_nodes(nodes, now_ms=NOW_MS, cluster="prod-eu-1")
    named_pods = normalize_pods(pods, now_ms=NOW_MS, cluster="prod-eu-1")
    assert named_nodes.samples[0].key == SeriesKey.for_node(
        "ip-10-0-1-23.ec2.internal", "prod-eu-1"
    )
    # The same samples, rejections and labels as without a cluster, but for the cluster.
    for named, unnamed in ((named_nodes, unnamed_nodes), (named_pods, unnamed_pods)):
        assert {s.key.cluster for s in named.samples} == {"prod-eu-1"}
        assert [
            dataclasses.replace(s, key=dataclasses.replace(s.key, cluster=DEFAULT_CLUSTER))
            for s in named.samples
        ] == list(unnamed.samples)
        assert named.rejections == unnamed.rejections
        assert named.pod_labels == unnamed.pod_labels
    assert named_pods.samples and named_pods.pod_labels
    assert named_nodes.cluster == named_pods.cluster == "prod-eu-1"  # that of the pod labels


def _pods(remembered: Remembered, *items: object, cluster: str = DEFAULT_CLUSTER) -> Batch:
    decoded, bad = decode_pod_list(list_body("PodMetricsList", *items))
    assert bad == []
    return normalize_pods(decoded, now_ms=NOW_MS, cluster=cluster, remembered=remembered)


def test_remembered_keys_are_reused_and_forgotten_with_their_pod() -> None:
    remembered = Remembered()
    first = _pods(remembered, pod("web-1"), pod("web-2"))
    again = _pods(remembered, pod("web-1"))
    assert again.samples[0].key is first.samples[0].key  # the same object: lookups stop there
    # web-2 is gone, so is its key
    assert {(*ref, k.container) for ref, memo in remembered.pods.items() for k in memo[3]} == {
        ("shop", "web-1", "app")
    }
    back = _pods(remembered, pod("web-2"))
    assert back.samples[0].key == first.samples[1].key
    assert back.samples[0].key is not first.samples[1].key


def test_a_pod_that_did_not_change_keeps_its_memo_and_a_new_container_gets_a_key() -> None:
    remembered = Remembered()
    _pods(remembered, pod("web-1"))
    memo = remembered.pods[("shop", "web-1")]
    again = _pods(remembered, pod("web-1"))
    assert remembered.pods[("shop", "web-1")] is memo  # nothing made for an unchanged pod
    # The names as first seen are used again (the key's, the labels'): one copy kept.
    (ref,) = again.pod_labels
    assert ref is memo[4] and ref[1] is again.samples[0].key.pod
    two = [
        {"name": "app", "usage": {"cpu": "1m", "memory": "1Ki"}},
        {"name": "sidecar", "usage": {"cpu": "2m", "memory": "2Ki"}},
    ]
    grown = _pods(remembered, pod("web-1", containers=two))
    assert [s.key.container for s in grown.samples] == ["app", "sidecar"]
    assert grown.samples[0].key is memo[3][0]
    assert [k.container for k in remembered.pods[("shop", "web-1")][3]] == ["app", "sidecar"]
    shrunk = _pods(remembered, pod("web-1", containers=two[1:]))
    assert shrunk.samples[0].key is grown.samples[1].key
    assert [k.container for k in remembered.pods[("shop", "web-1")][3]] == ["sidecar"]


def test_a_batch_s_labels_are_its_pods_and_outlive_the_next_poll() -> None:
    remembered = Remembered()
    bad_name = {"name": "x" * 300, "usage": {"cpu": "1m", "memory": "1Ki"}}
    first = _pods(
        remembered,
        pod("web-1", labels={"app": "web"}),
        pod("web-2", labels={"app": "api"}, containers=[bad_name]),  # pod kept, container not
        pod("y" * 300),  # rejected whole: no labels
        pod("web-3", timestamp=None),  # rejected whole
    )
    expected = {("shop", "web-1"): {"app": "web"}, ("shop", "web-2"): {"app": "api"}}
    assert dict(first.pod_labels.items()) == expected
    assert first.pod_labels == expected and len(first.pod_labels) == 2
    assert list(first.pod_labels) == list(expected)
    assert ("shop", "web-3") not in first.pod_labels and ("shop", "web-1") in first.pod_labels
    assert first.pod_labels.get(("shop", "nope")) is None
    # The next poll of the list (another pod set, changed labels) leaves this batch's alone:
    # a batch may still wait to be written when the next one is made.
    _pods(remembered, pod("web-1", labels={"app": "new"}), pod("web-9"))
    assert dict(first.pod_labels.items()) == expected


def test_remembered_keys_follow_the_cluster() -> None:
    remembered = Remembered()
    _pods(remembered, pod("web-1"))
    other = _pods(remembered, pod("web-1"), cluster="eu")
    assert other.samples[0].key == SeriesKey.for_container("shop", "web-1", "app", "eu")


def test_remembered_labels_are_checked_again_only_when_they_change() -> None:
    remembered = Remembered()
    bad = {"app": "web", "bad\x00key": "x"}
    first = _pods(remembered, pod("web-1", labels=bad))
    assert first.pod_labels[("shop", "web-1")] == {"app": "web"}
    assert [r.reason for r in first.rejections] == ["bad_label"]
    same = _pods(remembered, pod("web-1", labels=dict(bad)))
    # Unchanged labels: the kept labels are the same object, and the rejection is said again.
    assert same.pod_labels[("shop", "web-1")] is first.pod_labels[("shop", "web-1")]
    assert same.rejections == first.rejections
    changed = _pods(remembered, pod("web-1", labels={"app": "api"}))
    assert changed.pod_labels[("shop", "web-1")] == {"app": "api"}
    assert changed.rejections == ()


def test_pods_with_equal_labels_share_one_kept_object() -> None:
    # The pods of a ReplicaSet carry the same labels: one dict is kept for all of them.
    same = {"app": "web", "pod-template-hash": "5d8f"}
    batch = _pods(Remembered(), pod("web-1", labels=same), pod("web-2", labels=dict(same)))
    first, second = batch.pod_labels[("shop", "web-1")], batch.pod_labels[("shop", "web-2")]
    assert first == same and first is second
    other = _pods(Remembered(), pod("web-3", labels={"app": "api"}))
    assert other.pod_labels[("shop", "web-3")] == {"app": "api"}


def test_labels_are_kept_as_their_text_and_decoded_only_when_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[bytes] = []
    decode = normalize._received_labels

    def counted(text: msgspec.Raw) -> dict[str, str] | None:
        decoded.append(bytes(text))
        return decode(text)

    monkeypatch.setattr(normalize, "_received_labels", counted)
    remembered = Remembered()
    same = {"app": "web", "pod-template-hash": "5d8f"}
    first = _pods(remembered, pod("web-1", labels=same), pod("web-2", labels=same))
    assert first.pod_labels[("shop", "web-1")] == same
    assert len(decoded) == 2
    one, two = remembered.pods[("shop", "web-1")], remembered.pods[("shop", "web-2")]
    # One copy of a text for the pods that share it, not a view of the response.
    assert one[0] is two[0] and bytes(one[0]) == json.dumps(same).encode()
    again = _pods(remembered, pod("web-1", labels=same), pod("web-2", labels=same))
    assert len(decoded) == 2  # unchanged texts: not decoded again
    assert again.pod_labels == first.pod_labels
    changed = _pods(remembered, pod("web-1", labels={"app": "api"}), pod("web-2", labels=same))
    assert decoded[2:] == [b'{"app": "api"}']
    assert changed.pod_labels[("shop", "web-1")] == {"app": "api"}
    assert changed.pod_labels[("shop", "web-2")] == same


@pytest.mark.parametrize("labels", [["app"], {"app": 1}, {"app": {"nested": "x"}}, "app=web"])
def test_labels_that_are_not_a_map_of_strings_cost_only_their_pod(labels: object) -> None:
    """The labels' text is decoded by normalize, not with the list: the item is read, and only
    its pod is refused, saying which field."""
    remembered = Remembered()
    batch = _pods(remembered, pod("web-1", labels=labels), pod("web-2"))
    assert [s.key.pod for s in batch.samples] == ["web-2"]
    ((name, reason, detail),) = [(r.name, r.reason, r.detail) for r in batch.rejections]
    assert (name, reason) == ("web-1", "malformed_item")
    assert "metadata.labels cannot be decoded" in detail
    assert ("shop", "web-1") not in remembered.pods


def many_pods(count: int, odd: dict[int, dict[str, object]]) -> bytes:
    """``count`` pods of two containers each in the forms metrics-server writes, pod ``i``
    replaced by ``odd[i]``'s fields where given."""
    items = []
    for i in range(count):
        containers = [
            {"name": "app", "usage": {"cpu": f"{i * 7919}n", "memory": f"{i + 1}Ki"}},
            {"name": "sidecar", "usage": {"cpu": f"{i % 3}", "memory": f"{i % 5}Mi"}},
        ]
        items.append(pod(f"web-{i}", **{"containers": containers, **odd.get(i, {})}))
    return list_body("PodMetricsList", *items)


def test_quantities_parsed_as_columns_give_the_batch_one_by_one_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pods are parsed a slice (2,000) at a time, each slice's quantities as one column when
    all are in metrics-server's forms: the same samples, rejections (in order) and labels as
    parsing each quantity alone, with odd items in some slices and not in others."""
    bad_usage = {"cpu": "1.5e3m", "memory": "-4Ki"}
    odd: dict[int, dict[str, object]] = {
        10: {"containers": [{"name": "app", "usage": bad_usage}, {"name": "ok", "usage": {}}]},
        2_500: {"timestamp": None},  # rejected whole, its containers' values skipped
        2_501: {"containers": [{"name": "", "usage": {"cpu": "7n", "memory": "1Ki"}}]},
        4_100: {"containers": [{"name": "app", "usage": {"cpu": "2.5", "memory": "1.5Gi"}}]},
        5_999: {"metadata": {"name": "bad\nname", "namespace": "shop"}},
    }
    body = many_pods(6_000, odd)
    columns = normalize_pods(decode_pod_list(body)[0], now_ms=NOW_MS)
    monkeypatch.setattr(normalize.quantities, "cpu_nanocores_column", lambda texts: None)
    alone = normalize_pods(decode_pod_list(body)[0], now_ms=NOW_MS)
    assert columns.samples == alone.samples
    assert columns.rejections == alone.rejections
    assert columns.pod_labels == alone.pod_labels
    # web-10 and web-2501 lose their containers, web-2500 and web-5999 are rejected whole,
    # web-4100 has one container (whose quantities parse one by one)
    assert len(columns.samples) == 2 * 6_000 - 2 - 2 - 2 - 1 - 2
    assert [(r.name, r.reason) for r in columns.rejections] == [
        ("web-10/app", "bad_quantity"),
        ("web-10/ok", "missing_usage"),
        ("web-2500", "null_timestamp"),
        ("web-2501/?", "missing_name"),
        ("bad\\nname", "bad_name"),
    ]
    sample = {s.key.pod: s for s in columns.samples if s.key.container == "app"}["web-4100"]
    assert (sample.cpu_nanocores, sample.memory_bytes) == (2_500_000_000, 3 * GI // 2)


def test_quantities_in_metrics_servers_forms_are_not_parsed_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    one_by_one = normalize._usage

    def counted(usage: wire.Usage | None) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        return one_by_one(usage)

    monkeypatch.setattr(normalize, "_usage", counted)
    batch = normalize_pods(decode_pod_list(many_pods(3_000, {}))[0], now_ms=NOW_MS)
    assert len(batch.samples) == 6_000 and not batch.rejections
    assert calls == 0
    odd = {2_100: {"containers": [{"name": "app", "usage": {"cpu": "1.5", "memory": "1Ki"}}]}}
    normalize_pods(decode_pod_list(many_pods(3_000, odd))[0], now_ms=NOW_MS)
    assert calls == 1_000 * 2 - 1  # only the second slice, whose one quantity is odd
