"""Cluster objects in the database (SQLite and PostgreSQL): a pod's workload recorded once and
kept, requests/limits and node capacity as histories with a row per change only (a restarted
reader adds nothing), HPAs as the current set; and the reader's rows from the simulator, across
churn, through the same store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recorder.kube.client import MetricsClient
from recorder.kube.objects import Changes, ObjectReader
from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.store import Store
from recorder.store.objects import ObjectStore
from tests.kube_support import Clock, load

T0 = 1_700_000_003.0
NODE = (
    "node-a",
    4_000_000_000,
    16 * 2**30,
    3_900_000_000,
    15 * 2**30,
    110,
    "m5.xlarge",
    "a",
    "r",
    "amd64",
    "linux",
)


@pytest.fixture
def objects(store: Store) -> ObjectStore:
    return ObjectStore(store.engine, "prod")


def test_a_pods_workload_is_recorded_when_first_seen_and_kept(objects: ObjectStore) -> None:
    rows = [
        ("shop", "web-1", "Deployment", "web", "Burstable"),
        ("shop", "db-0", "StatefulSet", "db", None),
    ]
    assert objects.record_pods(rows, now_ms=1000) == 2
    assert objects.record_pods([("shop", "web-1", "Pod", "web-1", None)], now_ms=2000) == 0
    assert objects.pod_workloads() == {
        ("shop", "web-1"): ("Deployment", "web"),
        ("shop", "db-0"): ("StatefulSet", "db"),
    }
    assert ObjectStore(objects.engine, "other").pod_workloads() == {}


def test_requests_and_limits_get_a_row_per_change_only(objects: ObjectStore) -> None:
    first = ("shop", "web-1", "app", 250_000_000, None, 512 * 2**20, 2**30, 0, None)
    assert objects.record_containers([first], now_ms=1000) == 1
    assert objects.record_containers([first], now_ms=2000) == 0  # a restarted reader
    changed = (*first[:3], 500_000_000, *first[4:])
    assert objects.record_containers([changed], now_ms=3000) == 1
    oom = (*changed[:7], 1, "OOMKilled")
    assert (
        objects.record_containers([oom, (*changed[:2], "sidecar", *changed[3:])], now_ms=4000) == 2
    )
    assert objects.record_containers([oom], now_ms=5000) == 0
    back = first
    assert objects.record_containers([back], now_ms=6000) == 1  # back to the first values: a change
    assert objects.container_history() == [
        ("shop", "web-1", "app", 1000, 250_000_000, None, 512 * 2**20, 2**30, 0, None),
        ("shop", "web-1", "app", 3000, 500_000_000, None, 512 * 2**20, 2**30, 0, None),
        ("shop", "web-1", "app", 4000, 500_000_000, None, 512 * 2**20, 2**30, 1, "OOMKilled"),
        ("shop", "web-1", "app", 6000, 250_000_000, None, 512 * 2**20, 2**30, 0, None),
        ("shop", "web-1", "sidecar", 4000, 500_000_000, None, 512 * 2**20, 2**30, 0, None),
    ]


def test_many_rows_are_written_in_batches(store: Store) -> None:
    objects = ObjectStore(store.engine, "prod", batch_rows=7)
    rows = [("ns", f"pod-{i}", "c", i, None, None, None, 0, None) for i in range(50)]
    assert objects.record_containers(rows, now_ms=1) == 50
    assert objects.record_containers(rows, now_ms=2) == 0
    assert len(objects.container_history()) == 50


def test_node_capacity_is_history_too(objects: ObjectStore) -> None:
    assert objects.record_nodes([NODE], now_ms=1000) == 1
    assert objects.record_nodes([NODE], now_ms=2000) == 0
    bigger = (NODE[0], NODE[1], NODE[2], NODE[3], 14 * 2**30, *NODE[5:])
    assert objects.record_nodes([bigger], now_ms=3000) == 1
    assert [row[:2] for row in objects.node_history()] == [("node-a", 1000), ("node-a", 3000)]
    assert objects.node_history()[1][5] == 14 * 2**30


def test_hpas_are_the_current_set(objects: ObjectStore) -> None:
    a = ("shop", "web", "Deployment", "web", "cpu")
    b = ("team", "api", "Deployment", "api", "cpu,memory")
    assert objects.replace_hpas([a, b], now_ms=1000) == 2
    assert objects.replace_hpas([a, b], now_ms=2000) == 0
    changed = (*a[:4], "memory")
    assert objects.replace_hpas([changed], now_ms=3000) == 2  # a changed, b gone
    assert objects.current_hpas() == {("shop", "web"): ("Deployment", "web", "memory", 3000)}
    # Namespaced: only the namespaces read are replaced.
    assert objects.replace_hpas([b], now_ms=4000, namespaces=["team"]) == 1
    assert set(objects.current_hpas()) == {("shop", "web"), ("team", "api")}


# --- the reader's rows, from the simulator ------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[tuple[Clock, MetricsClient]]:
    clock = Clock(T0)
    model = ClusterModel(
        SimulatorConfig(nodes=3, pods=40, seed=4, churn_per_hour=30.0), clock=clock
    )
    with (
        SimulatorServer(create_app(model, core_api=True)) as server,
        MetricsClient(load(api_url=server.url), timeout_seconds=5) as client,
    ):
        yield clock, client


def sink(objects: ObjectStore, now_ms: int) -> object:
    def write(changes: Changes) -> None:
        objects.record_pods(changes.pods, now_ms=now_ms)
        objects.record_containers(changes.containers, now_ms=now_ms)
        objects.record_nodes(changes.nodes, now_ms=now_ms)
        if changes.hpas is not None:
            objects.replace_hpas(changes.hpas, now_ms=now_ms)

    return write


def read_all(reader: ObjectReader) -> None:
    for informer in reader.informers:
        informer.sync()
    reader.flush()


def test_a_deleted_pods_workload_stays_and_a_restarted_reader_adds_nothing(
    objects: ObjectStore, simulator: tuple[Clock, MetricsClient]
) -> None:
    clock, client = simulator
    reader = ObjectReader(client, sink(objects, 1000))  # type: ignore[arg-type]
    read_all(reader)
    first = objects.pod_workloads()
    containers = objects.container_history()
    nodes = objects.node_history()
    assert len(first) == 40 and len(nodes) == 3 and objects.current_hpas()
    assert {kind for kind, _ in first.values()} >= {"Deployment", "StatefulSet", "CronJob", "Pod"}

    restarted = ObjectReader(client, sink(objects, 2000))  # type: ignore[arg-type]
    read_all(restarted)
    assert objects.pod_workloads() == first
    assert objects.container_history() == containers
    assert objects.node_history() == nodes

    clock.now += 600  # 10 minutes of churn: pods replaced
    later = ObjectReader(client, sink(objects, 3000))  # type: ignore[arg-type]
    read_all(later)
    now = objects.pod_workloads()
    current = {key for key in now if key not in first}
    assert current, "the churn replaced no pod"
    assert set(first) < set(now)  # the deleted pods' workloads are kept
    for key in current:  # each new pod belongs to the workload of a pod it replaced
        assert now[key] in set(first.values())
    new_rows = [row for row in objects.container_history() if row[3] == 3000]
    assert {(row[0], row[1]) for row in new_rows} == current
