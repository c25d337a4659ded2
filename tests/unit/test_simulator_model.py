"""The simulated cluster: determinism, time buckets, churn, realism; and its pure helpers."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from recorder.domain import Kind
from recorder.errors import ConfigError
from recorder.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from recorder.simulator import ClusterModel, PodMetrics, SimulatorConfig
from recorder.simulator.wire import cpu_quantity, go_duration, memory_quantity

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z, a multiple of 15 s + 5 s
HOUR = 3600.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def model(clock: FakeClock | None = None, **config: object) -> ClusterModel:
    return ClusterModel(SimulatorConfig(**config), clock or FakeClock())  # type: ignore[arg-type]


def pod_keys(pods: tuple[PodMetrics, ...]) -> set[tuple[str, str]]:
    return {(p.namespace, p.name) for p in pods}


# --- determinism and time ---------------------------------------------------------------------


def test_same_seed_same_cluster_and_values() -> None:
    a, b = model(seed=7), model(seed=7)
    assert a.node_metrics() == b.node_metrics()
    assert a.pod_metrics() == b.pod_metrics()
    assert a.samples() == b.samples()


def test_other_seed_other_cluster() -> None:
    a, b = model(seed=1), model(seed=2)
    assert [n.name for n in a.nodes] != [n.name for n in b.nodes]
    assert pod_keys(a.pod_metrics()) != pod_keys(b.pod_metrics())


def test_values_do_not_depend_on_query_order_or_history() -> None:
    clock = FakeClock()
    warm = model(clock)
    for step in range(1, 50):  # walk through many buckets first
        warm.frame(T0 + step * 600)
    fresh = model(clock)
    assert warm.pod_metrics(T0 + 7 * HOUR) == fresh.pod_metrics(T0 + 7 * HOUR)
    assert warm.pod_metrics() == fresh.pod_metrics()


def test_timestamp_is_clock_floored_to_resolution() -> None:
    clock = FakeClock(T0)
    m = model(clock, resolution_seconds=15)
    assert {n.timestamp for n in m.node_metrics()} == {int(T0 // 15 * 15)}
    assert {p.timestamp for p in m.pod_metrics()} == {int(T0 // 15 * 15)}
    clock.now = T0 + 60.5
    assert {n.timestamp for n in m.node_metrics()} == {int((T0 + 60.5) // 15 * 15)}


def test_same_values_within_a_bucket_new_values_in_the_next() -> None:
    bucket_start = 1_700_000_010  # a multiple of 15
    clock = FakeClock(bucket_start + 10.0)
    m = model(clock, resolution_seconds=15)
    first_nodes, first_pods = m.node_metrics(), m.pod_metrics()
    assert first_nodes[0].timestamp == bucket_start
    clock.now += 4.9  # still before the next multiple of 15
    assert m.node_metrics() == first_nodes
    assert m.pod_metrics() == first_pods
    clock.now += 0.2  # now in the next bucket
    later_nodes, later_pods = m.node_metrics(), m.pod_metrics()
    assert later_nodes[0].timestamp == first_nodes[0].timestamp + 15
    assert [n.cpu_nanocores for n in later_nodes] != [n.cpu_nanocores for n in first_nodes]
    assert pod_keys(later_pods) == pod_keys(first_pods)


def test_start_time_shifts_the_simulated_clock() -> None:
    clock = FakeClock(T0)
    m = model(clock, start_time=1_600_000_000.0)
    assert m.now() == 1_600_000_000.0
    clock.now += 90
    assert m.now() == 1_600_000_090.0
    assert m.node_metrics()[0].timestamp == 1_600_000_080


# --- usage ------------------------------------------------------------------------------------


def test_node_usage_covers_its_pods_plus_overhead() -> None:
    m = model(nodes=6, pods=120)
    for at in (T0, T0 + 5 * HOUR, T0 + 13 * HOUR):
        cpu: dict[str, int] = defaultdict(int)
        memory: dict[str, int] = defaultdict(int)
        for pod in m.pod_metrics(at):
            cpu[pod.node] += sum(c.cpu_nanocores for c in pod.containers)
            memory[pod.node] += sum(c.memory_bytes for c in pod.containers)
        for node in m.node_metrics(at):
            assert node.cpu_nanocores > cpu[node.name]
            assert node.memory_bytes > memory[node.name]


def test_usage_is_integral_page_aligned_and_occasionally_extreme() -> None:
    m = model(nodes=10, pods=300, seed=3)
    cpus: list[int] = []
    for step in range(8):
        for pod in m.pod_metrics(T0 + step * 15):
            for c in pod.containers:
                assert isinstance(c.cpu_nanocores, int) and c.cpu_nanocores >= 0
                assert c.memory_bytes > 0 and c.memory_bytes % 4096 == 0
                cpus.append(c.cpu_nanocores)
    assert 0 in cpus  # idle sidecars report exactly zero
    assert max(cpus) > 1_000_000_000  # and some containers use more than a core
    assert len(set(cpus)) > len(cpus) // 2


def test_daily_rhythm_changes_usage_over_the_day() -> None:
    m = model(nodes=4, pods=80, churn_per_hour=0)
    totals = [sum(n.cpu_nanocores for n in m.node_metrics(T0 + h * HOUR)) for h in range(24)]
    assert max(totals) > 1.2 * min(totals)


def test_samples_match_the_metrics() -> None:
    m = model()
    samples = m.samples()
    nodes = [s for s in samples if s.key.kind is Kind.NODE]
    containers = [s for s in samples if s.key.kind is Kind.CONTAINER]
    assert [s.key.node for s in nodes] == [n.name for n in m.nodes]
    assert len(containers) == sum(len(p.containers) for p in m.pod_metrics())
    assert {s.timestamp_ms for s in samples} == {int(T0 // 15 * 15) * 1000}
    assert all(s.window_ms in (15_000, 30_000) or 10_000 <= s.window_ms < 21_000 for s in samples)


# --- churn ------------------------------------------------------------------------------------


def test_churn_replaces_pods_over_hours_but_not_within_a_bucket() -> None:
    m = model(nodes=5, pods=200, churn_per_hour=0.1)
    now = pod_keys(m.pod_metrics(T0))
    assert pod_keys(m.pod_metrics(T0 + 14.9 - T0 % 15)) == now
    hour = pod_keys(m.pod_metrics(T0 + HOUR))
    day = pod_keys(m.pod_metrics(T0 + 24 * HOUR))
    assert 0 < len(now - hour) < len(now) * 0.3
    assert len(now - day) > len(now - hour)
    assert len(now - day) > len(now) * 0.5
    assert abs(len(day) - len(now)) < len(now) * 0.1


def test_no_churn_keeps_the_pod_set() -> None:
    m = model(nodes=5, pods=200, churn_per_hour=0)
    assert pod_keys(m.pod_metrics(T0)) == pod_keys(m.pod_metrics(T0 + 72 * HOUR))


def test_pending_pods_are_not_listed() -> None:
    m = model(pods=300, pending_fraction=0.3, churn_per_hour=0)
    assert len(m.slots) == 300
    assert len(m.pod_metrics()) < 270
    assert len(model(pods=300, pending_fraction=0, churn_per_hour=0).pod_metrics()) == 300


def test_pod_names_are_unique_at_every_moment() -> None:
    m = model(nodes=50, pods=3000, churn_per_hour=2)
    for step in range(6):
        pods = m.pod_metrics(T0 + step * 1234.0)
        assert len(pod_keys(pods)) == len(pods)


# --- realism ----------------------------------------------------------------------------------

LABEL_KEY = re.compile(r"([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def test_node_names_and_labels_look_real() -> None:
    m = model(nodes=12)
    names = [n.name for n in m.nodes]
    assert any(
        re.fullmatch(r"ip-10-\d+-\d+-\d+\.(ec2|[a-z0-9-]+\.compute)\.internal", n) for n in names
    )
    assert any(re.fullmatch(r"gke-[a-z0-9-]+-pool-[0-9a-f]{8}-[a-z0-9]{4}", n) for n in names)
    assert any(re.fullmatch(r"node-\d+", n) for n in names)
    assert len(set(names)) == len(names)
    for node in m.nodes:
        assert DNS_NAME.fullmatch(node.name)
        assert node.labels["kubernetes.io/hostname"] == node.name
        assert node.labels["kubernetes.io/os"] == "linux"
    control = [n for n in m.nodes if "node-role.kubernetes.io/control-plane" in n.labels]
    assert len(control) == 1 and control[0].labels["node-role.kubernetes.io/control-plane"] == ""


def test_pods_have_realistic_names_labels_and_namespaces() -> None:
    m = model(nodes=6, pods=300, namespaces=8)
    pods = m.pod_metrics()
    assert {p.namespace for p in pods} >= {"default", "kube-system", "monitoring", "shop"}
    assert {len(p.containers) for p in pods} >= {1, 2, 3}
    empty_values = 0
    for pod in pods:
        assert DNS_NAME.fullmatch(pod.name) and len(pod.name) <= 63
        assert pod.labels, pod.name
        for key, value in pod.labels.items():
            assert LABEL_KEY.fullmatch(key) and LABEL_VALUE.fullmatch(value), (key, value)
            empty_values += value == ""
        if "pod-template-hash" in pod.labels:  # a Deployment's pod: <name>-<hash>-<5 chars>
            assert re.fullmatch(
                rf".+-{pod.labels['pod-template-hash']}-[bcdfghjklmnpqrstvwxz2456789]{{5}}",
                pod.name,
            )
    assert empty_values > 0
    assert any("app.kubernetes.io/name" in p.labels for p in pods)
    assert any("app" in p.labels for p in pods)
    assert any(p.name.startswith("kube-proxy-") for p in pods)
    assert any(p.name == "etcd-node-1" for p in pods)


def test_namespaces_can_be_named() -> None:
    m = model(pods=40, namespaces=("team-a", "team-b"))
    assert {p.namespace for p in m.pod_metrics()} <= {"team-a", "team-b"}


@pytest.mark.parametrize(
    "config",
    [
        {"nodes": 0},
        {"pods": -1},
        {"resolution_seconds": 0.5},
        {"churn_per_hour": -1},
        {"namespaces": 0},
        {"namespaces": ("Bad_Name",)},
        {"namespaces": ("a", "a")},
        {"pending_fraction": 1.0},
        {"scrape_spread_seconds": -1},
        {"scrape_spread_seconds": 15},
        {"scrape_spread_seconds": 30, "resolution_seconds": 30.0},
    ],
)
def test_invalid_config_is_rejected(config: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SimulatorConfig(**config)  # type: ignore[arg-type]


def test_a_scrape_spread_stamps_each_node_and_its_pods_with_their_own_time() -> None:
    plain = model(nodes=40, pods=300, seed=3)
    spread = model(nodes=40, pods=300, seed=3, scrape_spread_seconds=14)
    bucket_time = plain.frame().timestamp

    node_times = {n.name: n.timestamp for n in spread.node_metrics()}
    assert all(bucket_time - 14 < t <= bucket_time for t in node_times.values())
    assert len(set(node_times.values())) >= 8  # 40 nodes over 14 offsets
    pods = spread.pod_metrics()
    assert pods and all(p.timestamp == node_times[p.node] for p in pods)
    assert {n.timestamp for n in plain.node_metrics()} == {bucket_time}
    # Only the timestamps differ: the same cluster, the same values.
    assert [(n.name, n.cpu_nanocores) for n in spread.node_metrics()] == [
        (n.name, n.cpu_nanocores) for n in plain.node_metrics()
    ]
    assert [p.containers for p in pods] == [p.containers for p in plain.pod_metrics()]
    # A node's offset is fixed: each series moves on by the resolution.
    later = model(FakeClock(T0 + 15), nodes=40, pods=300, seed=3, scrape_spread_seconds=14)
    assert {n.name: n.timestamp - 15 for n in later.node_metrics()} == node_times


def test_tiny_clusters_work() -> None:
    assert model(nodes=1, pods=0).pod_metrics() == ()
    assert len(model(nodes=1, pods=1, pending_fraction=0).pod_metrics()) == 1


# --- selectors --------------------------------------------------------------------------------

LABELS = {"app": "web", "tier": "frontend", "env": "", "replicas": "3"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app = web", True),
        ("app!=web", False),
        ("app!=db", True),
        ("missing!=x", True),
        ("app=web,tier=backend", False),
        ("app in (web, db)", True),
        ("app notin (web,db)", False),
        ("missing notin (a)", True),
        ("missing in (a)", False),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("env=", True),
        ("env in (,x)", True),
        ("replicas>2", True),
        ("replicas<2", False),
        ("app.kubernetes.io/name", False),
    ],
)
def test_label_selector_matching(selector: str, expected: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is expected


@pytest.mark.parametrize(
    "selector",
    [
        "a in (",
        "a in ()",
        "a=b=c",
        "=a",
        "a,",
        "!",
        "a b",
        "a in b",
        "a>x",
        "-a=b",
        "a/b/c=d",
        "a=-b",
    ],
)
def test_invalid_label_selectors(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_field_selectors() -> None:
    fields = ("metadata.name", "metadata.namespace")
    values = {"metadata.name": "web-1", "metadata.namespace": "shop"}
    assert parse_field_selector("metadata.name=web-1", fields).matches(values)
    assert parse_field_selector("metadata.name==web-1,metadata.namespace=shop", fields).matches(
        values
    )
    assert not parse_field_selector("metadata.namespace!=shop", fields).matches(values)
    assert parse_field_selector("metadata.name=a\\,b", fields).terms[0][2] == "a,b"
    for bad in ("metadata.name", "spec.nodeName=x", "metadata.name=a=b"):
        with pytest.raises(SelectorError):
            parse_field_selector(bad, fields)


# --- wire formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nanocores", "text"),
    [
        (0, "0"),
        (110691045, "110691045n"),
        (12345000, "12345u"),
        (5_000_000, "5m"),
        (2 * 10**9, "2"),
    ],
)
def test_cpu_quantities_are_canonical(nanocores: int, text: str) -> None:
    assert cpu_quantity(nanocores) == text


@pytest.mark.parametrize(
    ("kib", "text"), [(0, "0"), (801112, "801112Ki"), (1024, "1Mi"), (3 * 1024**2, "3Gi")]
)
def test_memory_quantities_are_canonical(kib: int, text: str) -> None:
    assert memory_quantity(kib) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [(30_000, "30s"), (10_043, "10.043s"), (10_100, "10.1s"), (500, "500ms"), (65_000, "1m5s")],
)
def test_windows_are_go_durations(ms: int, text: str) -> None:
    assert go_duration(ms) == text
