"""``kind=workload`` over the simulator's pod churn and rollouts (both databases): the simulator
serves metrics and core objects while its clock runs 40 minutes with pods replaced every few
minutes (churn), or with every Deployment rolled out every 10 minutes (a new ReplicaSet each);
each poll's Metrics API bodies go through the recorder's decoder and normalizer into the store,
the cluster-objects reader records every pod's workload over HTTP. A Deployment whose pods were
all renamed has a value at every instant, equal to the alignment of the samples stored; across a
rollout, which keeps the old pod until its successor runs, no instant misses a replica."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recorder.domain import DEFAULT_CLUSTER, HistoryQuery, QueryKind, Resource, SeriesFilter
from recorder.kube.client import MetricsClient
from recorder.kube.decode import decode_pod_list
from recorder.kube.normalize import normalize_pods
from recorder.kube.objects import Changes, ObjectReader
from recorder.query import engine
from recorder.simulator import (
    ClusterModel,
    MetricsApi,
    SimulatorConfig,
    SimulatorServer,
    create_app,
)
from recorder.store import Store
from recorder.store.objects import ObjectStore
from tests.kube_support import Clock, load

START = 1_714_557_600.0
INTERVAL_S = 30
STEPS = 80  # 40 minutes


MODES = {
    "churn": {"churn_per_hour": 20.0},
    "rollouts": {"churn_per_hour": 0.0, "rollout_every_seconds": 600.0, "pending_fraction": 0.0},
}


@pytest.fixture(params=sorted(MODES))
def churned(
    store: Store, request: pytest.FixtureRequest
) -> Iterator[tuple[Store, dict[tuple[str, str], list[tuple[int, int]]]]]:
    """The store after 40 minutes of polls; each pod's (timestamp, CPU summed) samples."""
    clock = Clock(START)
    model = ClusterModel(
        SimulatorConfig(nodes=2, pods=24, seed=5, start_time=START, **MODES[request.param]),
        clock=clock,
    )
    api = MetricsApi(model, None)
    objects = ObjectStore(store.engine, DEFAULT_CLUSTER)
    written: dict[tuple[str, str], dict[int, int]] = {}
    with (
        SimulatorServer(create_app(model, core_api=True)) as server,
        MetricsClient(load(api_url=server.url), timeout_seconds=5) as client,
    ):
        for _ in range(STEPS):
            now_ms = int(clock.now * 1000)

            def sink(changes: Changes, now_ms: int = now_ms) -> None:
                objects.record_pods(changes.pods, now_ms=now_ms)

            reader = ObjectReader(client, sink)  # type: ignore[arg-type]
            for informer in reader.informers:
                informer.sync()
            reader.flush()
            reply = api.handle("GET", "/apis/metrics.k8s.io/v1beta1/pods")
            pods, bad = decode_pod_list(reply.body)
            assert not bad
            batch = normalize_pods(pods, now_ms=now_ms)
            store.write(batch, now_ms=now_ms)
            for s in batch.samples:
                per_pod = written.setdefault((s.key.namespace, s.key.pod), {})
                per_pod[s.timestamp_ms] = per_pod.get(s.timestamp_ms, 0) + s.cpu_nanocores
            clock.now += INTERVAL_S
    yield store, {pod: sorted(found.items()) for pod, found in written.items()}


def test_a_deployment_renamed_by_churn_or_rollouts_is_continuous_and_equals_its_samples(
    churned: tuple[Store, dict[tuple[str, str], list[tuple[int, int]]]],
) -> None:
    store, written = churned
    owners = ObjectStore(store.engine, DEFAULT_CLUSTER).pod_workloads()
    start_ms, end_ms = int(START * 1000), int((START + STEPS * INTERVAL_S) * 1000)
    # A Deployment none of whose first pods is left at the end: every pod renamed.
    first_pods = {pod for pod, found in written.items() if found[0][0] < start_ms + 60_000}
    last_pods = {pod for pod, found in written.items() if found[-1][0] >= end_ms - 60_000}
    renamed = sorted(
        {
            (ns, name)
            for (ns, pod), (kind, name) in owners.items()
            if kind == "Deployment"
            and (ns, pod) in first_pods
            and not any(owners.get(p) == (kind, name) for p in first_pods & last_pods)
            and any(owners.get(p) == (kind, name) for p in last_pods)
        }
    )
    assert renamed, "no Deployment had its every pod renamed: raise the churn or the rollouts"
    namespace, name = renamed[0]
    members = [
        pod
        for pod, owner in owners.items()
        if owner == ("Deployment", name) and pod[0] == namespace
    ]
    where = SeriesFilter(
        QueryKind.WORKLOAD, namespace=namespace, workload_kind="Deployment", workload=name
    )
    result = engine.history(
        store,
        HistoryQuery(Resource.CPU, where, start_ms, end_ms),
        max_points=10**6,
        interval_ms=INTERVAL_S * 1000,
    )
    (series,) = result.series
    assert series.labels == {
        "cluster": DEFAULT_CLUSTER,
        "namespace": namespace,
        "workload_kind": "Deployment",
        "workload": name,
    }
    expected = []
    lookback = 2 * INTERVAL_S * 1000
    for t in range(start_ms, end_ms + 1, INTERVAL_S * 1000):
        values = []
        for pod in members:
            inside = [v for ts, v in written.get(pod, []) if t - lookback < ts <= t]
            if inside:
                values.append(inside[-1])
        if values:
            expected.append((t, sum(values)))
    assert series.points == expected
    stamps = [t for t, _ in series.points]
    # Continuous: from its first value to the end, no instant without one.
    assert stamps == list(range(stamps[0], end_ms + 1, INTERVAL_S * 1000))
    assert len(members) > len({p for p in members if p in last_pods})


@pytest.mark.parametrize("churned", ["rollouts"], indirect=True)
def test_a_rollout_keeps_every_replica_counted_through_its_replicasets(
    churned: tuple[Store, dict[tuple[str, str], list[tuple[int, int]]]],
) -> None:
    """With rollouts only: each Deployment's pods came from several ReplicaSets (template
    hashes), all recorded as the Deployment's, and every poll has as many of them running as
    the first (a rolling update keeps the old pod until its successor runs)."""
    store, written = churned
    owners = ObjectStore(store.engine, DEFAULT_CLUSTER).pod_workloads()
    deployments: dict[tuple[str, str], list[str]] = {}
    for (ns, pod), (kind, name) in owners.items():
        if kind == "Deployment":
            deployments.setdefault((ns, name), []).append(pod)
    assert deployments
    start_ms, end_ms = int(START * 1000), int((START + STEPS * INTERVAL_S) * 1000)
    polls = range(start_ms, end_ms, INTERVAL_S * 1000)
    for (ns, name), pods in deployments.items():
        hashes = {pod[len(name) + 1 :].rsplit("-", 1)[0] for pod in pods}
        assert len(hashes) >= 4, (ns, name, hashes)  # 40 minutes, a rollout every 10
        stamps = [{ts for ts, _v in written.get((ns, pod), [])} for pod in pods]
        running = [sum(1 for own in stamps if t in own) for t in polls]
        # Every poll, mid-rollout included, has as many of its pods running as the first.
        assert running[0] and set(running) == {running[0]}, (ns, name, running)
