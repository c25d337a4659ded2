"""The cluster-object reader against the simulator over real HTTP, with a fake clock: owners
resolve to the simulator's workloads, paginated lists, watches that follow churn, a 410 that
relists, namespaced reading, and a server without the core API (404) or the RBAC (403)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from recorder.errors import (
    MetricsApiForbidden,
    MetricsApiNotFound,
    MetricsApiTimeout,
    MetricsApiUnavailable,
)
from recorder.kube import objects
from recorder.kube.client import MetricsClient
from recorder.kube.objects import (
    HPAS,
    JOBS,
    NODES,
    PODS,
    REPLICASETS,
    Changes,
    Informer,
    ObjectCache,
    ObjectReader,
)
from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.simulator.access import Identity
from recorder.units import cpu_nanocores, memory_bytes
from tests.kube_support import Clock, load
from tests.simcluster import secure_cluster

METRICS_ONLY = frozenset({"metrics.k8s.io/pods", "metrics.k8s.io/nodes"})

T0 = 1_700_000_003.0


@dataclass
class Sim:
    model: ClusterModel
    clock: Clock
    url: str
    client: MetricsClient
    http: httpx.Client

    def items(self, path: str) -> list[dict[str, Any]]:
        response = self.http.get(path)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


@pytest.fixture
def sim() -> Iterator[Sim]:
    clock = Clock(T0)
    # seed 4 at 40 pods holds a CronJob, a Job, an HPA and every QoS class; 30 churns an hour
    # replace a pod every few buckets.
    model = ClusterModel(
        SimulatorConfig(nodes=3, pods=40, seed=4, churn_per_hour=30.0), clock=clock
    )
    with (
        SimulatorServer(create_app(model, core_api=True)) as server,
        MetricsClient(load(api_url=server.url), timeout_seconds=5) as client,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        yield Sim(model, clock, server.url, client, http)


def informers(sim: Sim, cache: ObjectCache, page_size: int = 7) -> dict[str, Informer]:
    return {
        r.plural: Informer(sim.client, r, None, cache, page_size=page_size, idle_seconds=1)
        for r in (REPLICASETS, JOBS, NODES, HPAS, PODS)
    }


def expected_workloads(sim: Sim) -> dict[tuple[str, str], tuple[str, str]]:
    """Each pod's top-level owner, followed through the simulator's own objects."""
    owners = {}
    for path in ("/apis/apps/v1/replicasets", "/apis/batch/v1/jobs"):
        for obj in sim.items(path):
            refs = [r for r in obj["metadata"].get("ownerReferences", []) if r["controller"]]
            meta = obj["metadata"]
            owners[(meta["namespace"], meta["name"])] = refs[0] if refs else None
    out = {}
    for pod in sim.items("/api/v1/pods"):
        meta = pod["metadata"]
        ref = next(r for r in meta["ownerReferences"] if r["controller"])
        if ref["kind"] in ("ReplicaSet", "Job"):
            ref = owners[(meta["namespace"], ref["name"])] or ref
        kind, name = (ref["kind"], ref["name"]) if ref["kind"] != "Node" else ("Pod", meta["name"])
        out[(meta["namespace"], meta["name"])] = (kind, name)
    return out


def test_owners_resolve_to_the_simulators_workloads(sim: Sim) -> None:
    cache = ObjectCache()
    readers = informers(sim, cache)
    for informer in readers.values():
        informer.sync()
    assert readers["pods"].list_requests == -(-40 // 7)  # pages of 7, following continue
    changes = cache.drain(now=0.0)
    found = {(p.namespace, p.pod): (p.workload_kind, p.workload_name) for p in changes.pods}
    expected = expected_workloads(sim)
    assert found == expected
    assert {kind for kind, _ in found.values()} == {
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "CronJob",
        "Job",
        "Pod",
    }
    # Requests and limits exactly as the pods say, None where unset.
    specs = {(c.namespace, c.pod, c.container): c for c in changes.containers}
    for pod in sim.items("/api/v1/pods"):
        meta = pod["metadata"]
        for container in pod["spec"]["containers"]:
            spec = specs[(meta["namespace"], meta["name"], container["name"])]
            res = container["resources"]
            cpu = res.get("requests", {}).get("cpu")
            mem = res.get("limits", {}).get("memory")
            assert spec.cpu_request_nanocores == (cpu_nanocores(cpu) if cpu else None)
            assert spec.memory_limit_bytes == (memory_bytes(mem) if mem else None)
    assert any(c.last_termination_reason == "OOMKilled" for c in changes.containers)
    # Nodes: capacity and allocatable parsed exactly, well-known labels kept.
    nodes = {n.node: n for n in changes.nodes}
    for node in sim.items("/api/v1/nodes"):
        record = nodes[node["metadata"]["name"]]
        assert record.cpu_allocatable_nanocores == cpu_nanocores(
            node["status"]["allocatable"]["cpu"]
        )
        assert record.memory_capacity_bytes == memory_bytes(node["status"]["capacity"]["memory"])
        assert record.pods_allocatable == 110
        assert record.arch == node["metadata"]["labels"]["kubernetes.io/arch"]
    # HPAs: target and the resources scaled on.
    assert changes.hpas is not None and changes.hpas
    for hpa in sim.items("/apis/autoscaling/v2/horizontalpodautoscalers"):
        names = ",".join(sorted(m["resource"]["name"] for m in hpa["spec"]["metrics"]))
        ref = hpa["spec"]["scaleTargetRef"]
        assert (
            hpa["metadata"]["namespace"],
            hpa["metadata"]["name"],
            ref["kind"],
            ref["name"],
            names,
        ) in changes.hpas
    # Nothing changed since: nothing to drain.
    for informer in readers.values():
        informer.sync()
    assert not cache.drain(now=0.0)


def test_a_pod_waits_for_its_replicaset_then_gives_up_after_the_grace(sim: Sim) -> None:
    cache = ObjectCache(owner_grace_seconds=60)
    Informer(sim.client, PODS, None, cache, clock=lambda: 0.0).sync()
    first = cache.drain(now=0.0)
    assert all(p.workload_kind not in ("ReplicaSet", "Job", "Deployment") for p in first.pods)
    later = cache.drain(now=61.0)  # the ReplicaSets were never read
    assert {"ReplicaSet", "Job"} <= {p.workload_kind for p in later.pods}


def test_the_watch_follows_churn_and_a_deleted_pods_rows_are_still_drained(sim: Sim) -> None:
    cache = ObjectCache()
    readers = informers(sim, cache)
    for informer in readers.values():
        informer.sync()
    before = set(expected_workloads(sim))
    cache.drain(now=0.0)
    sim.clock.step(18)  # 4.5 minutes of churn, within the 5 minutes of watch history
    after = expected_workloads(sim)
    assert set(after) != before
    pods = readers["pods"]
    # The simulator streams every bucket up to the clock, then waits for the next bucket: the
    # idle timeout (1 s here) ends the watch, after its events were applied.
    with pytest.raises(MetricsApiTimeout, match="silent"):
        pods.watch_once()
    assert pods.events > 0
    assert cache.count(PODS) == len(after)
    drained = {
        (p.namespace, p.pod): (p.workload_kind, p.workload_name) for p in cache.drain(now=0.0).pods
    }
    new = set(after) - before
    assert new and new <= set(drained)
    for key in new:
        assert drained[key] == after[key]


def test_a_watch_from_a_version_too_old_relists(sim: Sim) -> None:
    cache = ObjectCache()
    pods = Informer(sim.client, PODS, None, cache, idle_seconds=3)
    pods.sync()
    sim.clock.step(40)  # past the simulator's 5 minutes of history: 410 Expired
    stop = threading.Event()
    thread = threading.Thread(target=pods.run, args=(stop, lambda informer: None), daemon=True)
    thread.start()
    try:
        deadline = 10.0
        while pods.lists < 2 and deadline > 0:
            stop.wait(0.05)
            deadline -= 0.05
    finally:
        stop.set()
        thread.join(5)
    assert pods.lists == 2
    assert cache.count(PODS) == len(sim.items("/api/v1/pods"))


class _CutByTheStop:
    """The client of an informer whose watch breaks because the service is stopping: the
    stream ends with a broken connection once ``stop`` is set (what closing the connections
    under a watch in flight does at shutdown)."""

    def __init__(self, client: MetricsClient, stop: threading.Event) -> None:
        self._client, self._stop = client, stop
        self.config = client.config

    def list_objects(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.list_objects(*args, **kwargs)

    @contextmanager
    def watch_objects(self, *args: Any, **kwargs: Any) -> Iterator[Iterator[bytes]]:
        self._stop.set()
        raise MetricsApiUnavailable("the connection broke while reading pods (incomplete read)")
        yield iter(())


def test_a_watch_cut_by_the_stop_is_no_failure(sim: Sim) -> None:
    """At shutdown the service logged 'reading jobs failed (trying again)' whenever the stop
    broke a watch in flight: that is the stop, not a failure to report."""
    stop = threading.Event()
    pods = Informer(_CutByTheStop(sim.client, stop), PODS, None, ObjectCache())  # type: ignore[arg-type]
    pods.sync()
    states: list[str] = []
    pods.run(stop, lambda informer: states.append(informer.state))
    assert pods.watch_requests == 1
    assert states == [] and pods.state != "failing" and pods.error is None, (states, pods.error)


def test_namespaced_reading_asks_only_for_its_namespaces(sim: Sim) -> None:
    reader = ObjectReader(sim.client, lambda changes: None, namespaces=["shop"])
    assert {i.resource.plural for i in reader.informers} == {
        "pods",
        "replicasets",
        "jobs",
        "horizontalpodautoscalers",
    }
    assert {i.namespace for i in reader.informers} == {"shop"}
    for informer in reader.informers:
        informer.sync()
    pods = {p.namespace for p in reader.cache.drain(now=1e9).pods}
    assert pods == {"shop"}


def test_without_the_core_api_it_says_so_once_and_keeps_out_of_the_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = ClusterModel(SimulatorConfig(nodes=2, pods=6, seed=1))
    with (
        SimulatorServer(create_app(model)) as server,
        MetricsClient(load(api_url=server.url), timeout_seconds=5) as client,
    ):
        reader = ObjectReader(client, lambda changes: None)
        reader.start()
        assert reader.synced.wait(10)
        reader.stop()
    assert all(isinstance(i.error, MetricsApiNotFound) for i in reader.informers)
    lines = [r for r in caplog.records if r.name == "recorder.kube.objects"]
    assert len(lines) == 1 and "does not serve" in lines[0].getMessage()
    assert reader.health().startswith("not read: ")
    assert "not served" in reader.health()


def test_a_forbidden_list_is_a_forbidden_error_naming_the_component(tmp_path: Path) -> None:
    with secure_cluster() as cluster:
        token = cluster.access.add_token(Identity("metrics-only", resources=METRICS_ONLY))
        config = load(
            kubeconfig=str(cluster.kubeconfig(tmp_path / "kubeconfig", user={"token": token}))
        )
        with MetricsClient(config, timeout_seconds=5) as client:
            with pytest.raises(MetricsApiForbidden, match="deploy/components/cluster-objects"):
                Informer(client, PODS, None, ObjectCache()).sync()
            assert client.list_pods()  # the metrics are still readable


def test_a_pod_deleted_before_the_drain_still_gets_its_rows(sim: Sim) -> None:
    cache = ObjectCache()
    for informer in informers(sim, cache).values():
        informer.sync()
    cache.drain(now=0.0)
    (key, record), *_ = [(k, r) for k, r in cache.pods() if r.owner_kind == "StatefulSet"]
    replaced = record._replace(node="elsewhere")
    cache.put(PODS, key, replaced, now=0.0)  # MODIFIED, then DELETED before the next drain
    cache.remove(PODS, key)
    assert cache.count(PODS) == 39
    changes = cache.drain(now=0.0)
    assert [(p.namespace, p.pod) for p in changes.pods] == [key]
    assert {(c.namespace, c.pod) for c in changes.containers} == {key}


def test_readiness_says_storing_until_the_first_lists_are_in_the_database(sim: Sim) -> None:
    release = threading.Event()
    handed: list[Changes] = []

    def slow_sink(changes: Changes) -> None:
        handed.append(changes)
        assert release.wait(10)

    reader = ObjectReader(sim.client, slow_sink, flush_seconds=0.05)
    reader.start()
    try:
        assert reader.synced.wait(10)
        for _ in range(200):
            if handed:
                break
            threading.Event().wait(0.01)
        assert handed, "the first lists were never handed to the sink"
        assert reader.health() == "storing what the first lists read"
        assert not reader.stored.is_set()
        release.set()
        assert reader.stored.wait(10)
        assert reader.health().startswith("ok (")
    finally:
        release.set()
        reader.stop()


def test_what_a_first_list_changed_is_handed_over_in_parts_and_a_failed_part_waits(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first list changes every pod: handed to the sink all at once, their rows held about
    45 MB at 150,000 pods for the whole first write. In parts of ``DRAIN_PODS`` pods (here 6
    of the simulator's 40), each with its pods' containers; a part the sink refuses waits for
    the next flush with the parts after it, and every pod reaches the sink once."""
    monkeypatch.setattr(objects, "DRAIN_PODS", 6)
    parts: list[Changes] = []
    refuse = [2]  # the third part fails once

    def sink(changes: Changes) -> None:
        if len(parts) in refuse:
            refuse.clear()
            raise MetricsApiUnavailable("the database is down")
        parts.append(changes)

    reader = ObjectReader(sim.client, sink)
    for informer in reader.informers:
        informer.sync()
    with pytest.raises(MetricsApiUnavailable):
        reader.flush()
    assert [len(p.pods) for p in parts] == [6, 6]
    assert "not stored" in reader.health()
    assert reader.flush() == 40 - 12
    assert "not stored" not in reader.health()
    assert max(len(p.pods) for p in parts) == 6
    pods = [(p.namespace, p.pod) for part in parts for p in part.pods]
    assert sorted(pods) == sorted(expected_workloads(sim)) and len(set(pods)) == 40
    for part in parts:
        assert {(c.namespace, c.pod) for c in part.containers} == {
            (p.namespace, p.pod) for p in part.pods
        }
    assert parts[0].nodes and not any(p.nodes for p in parts[1:])  # nodes go with the first
    assert not reader.flush()  # nothing left


def test_a_first_list_cut_by_the_stop_ends_the_reader_without_a_traceback(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shutdown stops the reader, waits two seconds at most, then closes the client: at
    150,000 pods on a slow machine a first list was still in flight, and the client's
    "closed" error went up the reader's thread as a traceback on stderr."""
    escaped: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    readers: list[ObjectReader] = []

    class ClosedByTheStop:
        def __getattr__(self, name: str) -> Any:
            return getattr(sim.client, name)

        def list_objects(self, *args: Any, **kwargs: Any) -> Any:
            readers[0]._stop.set()  # the worker's stop, then its close (``_stop_objects``)
            sim.client.close()
            return sim.client.list_objects(*args, **kwargs)

    reader = ObjectReader(ClosedByTheStop(), lambda changes: None)  # type: ignore[arg-type]
    readers.append(reader)
    reader.start()
    reader.stop(timeout_seconds=10)
    assert not any(thread.is_alive() for thread in reader._threads)
    assert escaped == [], [repr(e.exc_value) for e in escaped]
