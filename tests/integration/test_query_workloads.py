"""Workloads resolved from the stored cluster objects (SQLite and PostgreSQL): members across
a rollout that renamed every pod, bare pods, filters, requests/limits histories and the
current values per workload and container name, node allocatable."""

from __future__ import annotations

import pytest

from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Sample, SeriesKey
from recorder.errors import QueryError
from recorder.query.workloads import (
    Requests,
    WorkloadFilter,
    WorkloadKey,
    container_requests,
    current_requests,
    in_effect,
    node_allocatable,
    workload_members,
)
from recorder.selectors import parse_label_selector
from recorder.store import Store
from recorder.store.objects import ObjectStore

T0 = 1_714_521_600_000
WEB = WorkloadKey(DEFAULT_CLUSTER, "shop", "Deployment", "web")
DB = WorkloadKey(DEFAULT_CLUSTER, "shop", "StatefulSet", "db")
DEBUG = WorkloadKey(DEFAULT_CLUSTER, "shop", "Pod", "debug")
JOB = WorkloadKey(DEFAULT_CLUSTER, "batch", "Job", "report")
MI = 2**20


def sample(ns: str, pod: str, container: str, ts: int, cpu: int = 1, mem: int = 1) -> Sample:
    return Sample(SeriesKey.for_container(ns, pod, container), ts, 30_000, cpu, mem)


@pytest.fixture
def cluster(store: Store) -> Store:
    """web (a Deployment) rolled out: pods web-a-1/web-a-2 replaced by web-b-1/web-b-2; db-0 of a
    StatefulSet; debug, a pod with no workload row (bare); report-x of a Job elsewhere."""
    old = [sample("shop", p, c, T0) for p in ("web-a-1", "web-a-2") for c in ("app", "sidecar")]
    new = [
        sample("shop", p, c, T0 + 60_000)
        for p in ("web-b-1", "web-b-2")
        for c in ("app", "sidecar")
    ]
    others = [
        sample("shop", "db-0", "postgres", T0),
        sample("shop", "debug", "shell", T0),
        sample("batch", "report-x", "run", T0),
    ]
    labels = {("shop", p): {"app": "web"} for p in ("web-a-1", "web-a-2", "web-b-1", "web-b-2")}
    labels[("shop", "db-0")] = {"app": "db"}
    store.write(Batch(Kind.CONTAINER, [*old, *others], pod_labels=labels), now_ms=T0)
    store.write(Batch(Kind.CONTAINER, new, pod_labels=labels), now_ms=T0 + 60_000)
    objects = ObjectStore(store.engine, DEFAULT_CLUSTER)
    objects.record_pods(
        [
            ("shop", "web-a-1", "Deployment", "web", "Burstable"),
            ("shop", "web-a-2", "Deployment", "web", "Burstable"),
            ("shop", "db-0", "StatefulSet", "db", None),
            ("batch", "report-x", "Job", "report", None),
        ],
        now_ms=T0,
    )
    objects.record_pods(
        [
            ("shop", "web-b-1", "Deployment", "web", "Burstable"),
            ("shop", "web-b-2", "Deployment", "web", "Burstable"),
        ],
        now_ms=T0 + 60_000,
    )
    old_app = (100_000_000, None, 128 * MI, 256 * MI, 0, None)
    new_app = (200_000_000, 400_000_000, 256 * MI, 256 * MI, 0, None)
    side = (10_000_000, None, 16 * MI, None, 0, None)
    objects.record_containers(
        [("shop", p, "app", *old_app) for p in ("web-a-1", "web-a-2")]
        + [("shop", p, "sidecar", *side) for p in ("web-a-1", "web-a-2")]
        + [("shop", "debug", "shell", None, None, None, None, 0, None)],
        now_ms=T0,
    )
    objects.record_containers(
        [("shop", p, "app", *new_app) for p in ("web-b-1", "web-b-2")]
        + [("shop", p, "sidecar", *side) for p in ("web-b-1", "web-b-2")],
        now_ms=T0 + 60_000,
    )
    # An old pod restarts during the rollout: a newer row, with the old template's values.
    objects.record_containers(
        [("shop", "web-a-1", "app", *old_app[:4], 1, "OOMKilled")], now_ms=T0 + 90_000
    )
    objects.record_nodes(
        [("node-a", 4_000_000_000, 16 * 2**30, 3_900_000_000, 15 * 2**30, 110, *[None] * 5)],
        now_ms=T0,
    )
    objects.record_nodes(
        [("node-a", 4_000_000_000, 16 * 2**30, 3_800_000_000, 15 * 2**30, 110, *[None] * 5)],
        now_ms=T0 + 60_000,
    )
    return store


def members(store: Store, where: WorkloadFilter, **kw: object) -> dict[WorkloadKey, list[str]]:
    with store.reading() as conn:
        found = workload_members(conn, where, **kw)  # type: ignore[arg-type]
    return {key: [f"{s.pod}/{s.container}" for s in series] for key, series in found.items()}


def test_a_workloads_members_are_every_pod_it_had_across_a_rollout(cluster: Store) -> None:
    assert members(cluster, WorkloadFilter()) == {
        JOB: ["report-x/run"],
        DEBUG: ["debug/shell"],
        WEB: [
            "web-a-1/app",
            "web-a-1/sidecar",
            "web-a-2/app",
            "web-a-2/sidecar",
            "web-b-1/app",
            "web-b-1/sidecar",
            "web-b-2/app",
            "web-b-2/sidecar",
        ],
        DB: ["db-0/postgres"],
    }
    assert list(members(cluster, WorkloadFilter())) == sorted([JOB, DEBUG, WEB, DB])
    assert str(WEB) == "shop/Deployment/web"


def test_filters_pick_workloads_and_containers(cluster: Store) -> None:
    assert list(members(cluster, WorkloadFilter(kind="deployment"))) == [WEB]
    assert list(members(cluster, WorkloadFilter(kind="Pod"))) == [DEBUG]
    assert list(members(cluster, WorkloadFilter(name="debug"))) == [DEBUG]
    assert list(members(cluster, WorkloadFilter(namespaces=("batch",)))) == [JOB]
    assert list(members(cluster, WorkloadFilter(namespaces=("batch", "shop")))) == sorted(
        [JOB, DEBUG, WEB, DB]
    )
    assert members(cluster, WorkloadFilter(name="web", container="app")) == {
        WEB: ["web-a-1/app", "web-a-2/app", "web-b-1/app", "web-b-2/app"]
    }
    web = parse_label_selector("app=web")
    assert list(members(cluster, WorkloadFilter(selector=web))) == [WEB]
    assert members(cluster, WorkloadFilter(cluster="elsewhere")) == {}
    assert members(cluster, WorkloadFilter(name="nothing")) == {}
    with pytest.raises(QueryError):
        members(cluster, WorkloadFilter(), kinds=(Kind.NODE,))


def test_pod_statistics_series_are_members_when_asked(cluster: Store) -> None:
    cluster.maintain(now_ms=T0 + 3 * 3_600_000)
    found = members(cluster, WorkloadFilter(name="web"), kinds=(Kind.POD,))
    assert {key: sorted(names) for key, names in found.items()} == {
        WEB: ["web-a-1/", "web-a-2/", "web-b-1/", "web-b-2/"]
    }


def test_requests_history_and_current_values_per_workload_and_container(cluster: Store) -> None:
    with cluster.reading() as conn:
        history = container_requests(conn, WorkloadFilter(namespaces=("shop",)))
    assert list(history) == [(WEB, "app"), (WEB, "sidecar"), (DEBUG, "shell")]
    app = history[(WEB, "app")]
    assert [(r.pod, r.since_ms, r.cpu_request_nanocores) for r in app] == [
        ("web-a-1", T0, 100_000_000),
        ("web-a-2", T0, 100_000_000),
        ("web-b-1", T0 + 60_000, 200_000_000),
        ("web-b-2", T0 + 60_000, 200_000_000),
        ("web-a-1", T0 + 90_000, 100_000_000),
    ]
    current = current_requests(history)
    # The old pod's restart is newer, but the newest pod's template is the current one.
    assert current[(WEB, "app")] == Requests(200_000_000, 400_000_000, 256 * MI, 256 * MI)
    assert current[(WEB, "sidecar")] == Requests(10_000_000, None, 16 * MI, None)
    assert current[(DEBUG, "shell")] == Requests(None, None, None, None)
    a1 = [r for r in app if r.pod == "web-a-1"]
    assert in_effect(a1, T0 - 1) is None
    assert in_effect(a1, T0) is a1[0]
    assert in_effect(a1, T0 + 89_999) is a1[0]
    assert in_effect(a1, T0 + 90_000) is a1[1]
    with cluster.reading() as conn:
        assert container_requests(conn, WorkloadFilter(), until_ms=T0) == {
            (WEB, "app"): app[:2],
            (WEB, "sidecar"): history[(WEB, "sidecar")][:2],
            (DEBUG, "shell"): history[(DEBUG, "shell")],
        }
        only_app = container_requests(conn, WorkloadFilter(kind="Deployment", container="app"))
        assert list(only_app) == [(WEB, "app")]
        labelled = container_requests(conn, WorkloadFilter(selector=parse_label_selector("app")))
        assert sorted(labelled) == [(WEB, "app"), (WEB, "sidecar")]
        none = container_requests(conn, WorkloadFilter(selector=parse_label_selector("x=y")))
        assert none == {}


def test_node_allocatable_history(cluster: Store) -> None:
    with cluster.reading() as conn:
        nodes = node_allocatable(conn)
        assert node_allocatable(conn, nodes=["node-b"]) == {}
    rows = nodes[(DEFAULT_CLUSTER, "node-a")]
    assert [(r.since_ms, r.cpu_allocatable_nanocores) for r in rows] == [
        (T0, 3_900_000_000),
        (T0 + 60_000, 3_800_000_000),
    ]
    row = in_effect(rows, T0 + 59_999)
    assert row is not None and row.memory_allocatable_bytes == 15 * 2**30
