"""The simulator's core, apps, batch and autoscaling objects over real HTTP: discovery, owner
chains, pods equal to the metrics at the same instant, QoS by Kubernetes' rules, selectors,
and paginated lists that are consistent while pods churn (410 once a token is too old)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.simulator.wire import rfc3339
from tests.kube_support import Clock

T0 = 1_700_000_003.0
RESOLUTION = 15.0


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def model(clock: Clock) -> ClusterModel:
    # seed 4 at 40 pods holds a CronJob, a Job, an HPA and every QoS class; 30 churns an hour
    # replace a pod every few buckets.
    config = SimulatorConfig(nodes=3, pods=40, seed=4, churn_per_hour=30.0)
    return ClusterModel(config, clock=clock)


@pytest.fixture
def client(model: ClusterModel) -> Iterator[httpx.Client]:
    with (
        SimulatorServer(create_app(model, core_api=True)) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        yield http


def get(client: httpx.Client, path: str, **params: Any) -> Any:
    response = client.get(path, params=params) if params else client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def items(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    return list(get(client, path)["items"])


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    refs = [r for r in obj["metadata"].get("ownerReferences", []) if r.get("controller")]
    assert len(refs) <= 1
    return refs[0] if refs else None


def test_discovery_names_every_group_and_resource(client: httpx.Client) -> None:
    groups = {g["name"] for g in get(client, "/apis")["groups"]}
    assert groups == {"apps", "batch", "autoscaling", "metrics.k8s.io"}
    plurals = {
        path: {r["name"] for r in get(client, path)["resources"]}
        for path in ("/api/v1", "/apis/apps/v1", "/apis/batch/v1", "/apis/autoscaling/v2")
    }
    assert plurals == {
        "/api/v1": {"namespaces", "pods", "nodes"},
        "/apis/apps/v1": {"deployments", "replicasets", "statefulsets", "daemonsets"},
        "/apis/batch/v1": {"jobs", "cronjobs"},
        "/apis/autoscaling/v2": {"horizontalpodautoscalers"},
    }


def test_namespaces_are_served_with_a_kube_system_uid_per_seed(
    client: httpx.Client, model: ClusterModel
) -> None:
    listed = items(client, "/api/v1/namespaces")
    names = [n["metadata"]["name"] for n in listed]
    pods = {p["metadata"]["namespace"] for p in items(client, "/api/v1/pods")}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(names)
    assert pods <= set(names) and names == sorted(names)
    one = get(client, "/api/v1/namespaces/kube-system")
    assert one["kind"] == "Namespace" and one["apiVersion"] == "v1"
    assert one["metadata"]["labels"] == {"kubernetes.io/metadata.name": "kube-system"}
    uid = one["metadata"]["uid"]
    assert uid == next(
        n["metadata"]["uid"] for n in listed if n["metadata"]["name"] == "kube-system"
    )
    assert len({n["metadata"]["uid"] for n in listed}) == len(listed)
    missing = client.get("/api/v1/namespaces/nope")
    assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"
    assert missing.json()["details"] == {"name": "nope", "kind": "namespaces"}
    # The same seed is the same cluster; another seed another one.
    again = create_app(ClusterModel(model.config), core_api=True)
    other = create_app(ClusterModel(SimulatorConfig(nodes=3, pods=40, seed=5)), core_api=True)
    with SimulatorServer(again) as same, SimulatorServer(other) as different:
        for url, expected in ((same.url, True), (different.url, False)):
            body = httpx.get(f"{url}/api/v1/namespaces/kube-system", timeout=10).json()
            assert (body["metadata"]["uid"] == uid) is expected


def test_owner_chains_resolve_to_the_top_level_workload(client: httpx.Client) -> None:
    objects: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in (
        "/apis/apps/v1/replicasets",
        "/apis/apps/v1/deployments",
        "/apis/apps/v1/statefulsets",
        "/apis/apps/v1/daemonsets",
        "/apis/batch/v1/jobs",
        "/apis/batch/v1/cronjobs",
    ):
        body = get(client, path)
        kind = body["kind"].removesuffix("List")
        for obj in body["items"]:
            objects[(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
    nodes = {n["metadata"]["name"]: n for n in items(client, "/api/v1/nodes")}
    chains = Counter()
    for pod in items(client, "/api/v1/pods"):
        namespace = pod["metadata"]["namespace"]
        chain = []
        obj = pod
        while (ref := controller_of(obj)) is not None:
            chain.append(ref["kind"])
            if ref["kind"] == "Node":
                obj = nodes[ref["name"]]
            else:
                obj = objects[(ref["kind"], namespace, ref["name"])]
            assert obj["metadata"]["uid"] == ref["uid"]
        chains[tuple(chain)] += 1
    assert set(chains) == {
        ("ReplicaSet", "Deployment"),
        ("StatefulSet",),
        ("DaemonSet",),
        ("Job", "CronJob"),
        ("Job",),
        ("Node",),  # static control-plane pods are mirror pods, owned by their node
    }


def test_running_pods_are_the_metrics_pods_at_the_same_instant(
    client: httpx.Client, model: ClusterModel, clock: Clock
) -> None:
    churned = 0
    before: set[tuple[str, str]] = set()
    for _ in range(8):
        pods = items(client, "/api/v1/pods")
        metrics = items(client, "/apis/metrics.k8s.io/v1beta1/pods")
        running = {
            (p["metadata"]["namespace"], p["metadata"]["name"]): p
            for p in pods
            if p["status"]["phase"] == "Running"
        }
        assert set(running) == {
            (m["metadata"]["namespace"], m["metadata"]["name"]) for m in metrics
        }
        for m in metrics:
            pod = running[(m["metadata"]["namespace"], m["metadata"]["name"])]
            assert pod["metadata"]["labels"] == m["metadata"]["labels"]
            assert [c["name"] for c in pod["spec"]["containers"]] == [
                c["name"] for c in m["containers"]
            ]
        nodes = {(p.namespace, p.name): p.node for p in model.pod_metrics()}
        assert {key: p["spec"]["nodeName"] for key, p in running.items()} == nodes
        churned += len(before - set(running))
        before = set(running)
        clock.step()
    assert churned > 0, "the clock steps should have replaced some pods"


def _qos(pod: dict[str, Any]) -> str:
    """Kubernetes' rules (pkg/apis/core/helper/qos), written out independently."""
    containers = pod["spec"]["containers"]
    requests = [c["resources"].get("requests", {}) for c in containers]
    limits = [c["resources"].get("limits", {}) for c in containers]
    if not any(r.get(k) for r in requests + limits for k in ("cpu", "memory")):
        return "BestEffort"
    guaranteed = all(
        all(k in lim and r.get(k, lim[k]) == lim[k] for k in ("cpu", "memory"))
        for r, lim in zip(requests, limits, strict=True)
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _millicores(text: str) -> float:
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def test_qos_requests_limits_and_restarts_vary_as_in_a_real_cluster(
    client: httpx.Client,
) -> None:
    pods = items(client, "/api/v1/pods")
    for pod in pods:
        assert pod["status"]["qosClass"] == _qos(pod), pod["metadata"]["name"]
        for c in pod["spec"]["containers"]:
            requests, limits = c["resources"].get("requests", {}), c["resources"].get("limits", {})
            for key, limit in limits.items():  # a limit without a request defaults it
                assert key in requests
                if key == "cpu":
                    assert _millicores(requests[key]) <= _millicores(limit)
    assert {p["status"]["qosClass"] for p in pods} == {"Guaranteed", "Burstable", "BestEffort"}
    statuses = [s for p in pods for s in p["status"].get("containerStatuses", [])]
    oom = [s for s in statuses if s["lastState"].get("terminated", {}).get("reason") == "OOMKilled"]
    assert oom and all(s["restartCount"] > 0 for s in oom)
    # Requests against usage: some containers ask for far more CPU than they use, some less.
    usage = {
        (m["metadata"]["namespace"], m["metadata"]["name"], c["name"]): c["usage"]["cpu"]
        for m in items(client, "/apis/metrics.k8s.io/v1beta1/pods")
        for c in m["containers"]
    }
    ratios = []
    for pod in pods:
        for c in pod["spec"]["containers"]:
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"], c["name"])
            request = c["resources"].get("requests", {}).get("cpu")
            if key in usage and request:
                used = int(usage[key].removesuffix("n") or 0) / 1e6
                ratios.append(_millicores(request) / max(used, 0.001))
    assert sum(r > 2 for r in ratios) > len(ratios) / 3
    assert any(r < 1 for r in ratios)


def test_hpas_scale_deployments_on_resources(client: httpx.Client) -> None:
    hpas = items(client, "/apis/autoscaling/v2/horizontalpodautoscalers")
    deployments = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in items(client, "/apis/apps/v1/deployments")
    }
    assert hpas
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment"
        assert (hpa["metadata"]["namespace"], ref["name"]) in deployments
        names = {m["resource"]["name"] for m in hpa["spec"]["metrics"]}
        assert names <= {"cpu", "memory"} and names


def test_selectors_and_single_objects(client: httpx.Client) -> None:
    pods = items(client, "/api/v1/pods")
    node = pods[0]["spec"]["nodeName"]
    on_node = items(client, f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
    assert on_node and {p["metadata"]["name"] for p in on_node} == {
        p["metadata"]["name"] for p in pods if p["spec"].get("nodeName") == node
    }
    pending = items(client, "/api/v1/pods?fieldSelector=status.phase%3DPending")
    assert {p["metadata"]["name"] for p in pending} == {
        p["metadata"]["name"] for p in pods if p["status"]["phase"] == "Pending"
    }
    first = pods[0]["metadata"]
    labelled = items(client, "/api/v1/pods?labelSelector=pod-template-hash")
    assert labelled and all("pod-template-hash" in p["metadata"]["labels"] for p in labelled)
    namespaced = items(client, f"/api/v1/namespaces/{first['namespace']}/pods")
    assert {p["metadata"]["namespace"] for p in namespaced} == {first["namespace"]}
    one = get(client, f"/api/v1/namespaces/{first['namespace']}/pods/{first['name']}")
    assert one["kind"] == "Pod" and one["metadata"]["uid"] == first["uid"]
    missing = client.get(f"/api/v1/namespaces/{first['namespace']}/pods/nope")
    assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"
    bad = client.get("/api/v1/pods?fieldSelector=spec.restartPolicy%3DAlways")
    assert bad.status_code == 400 and bad.json()["reason"] == "BadRequest"


def test_pagination_returns_every_pod_once_from_one_snapshot_while_pods_churn(
    client: httpx.Client, clock: Clock
) -> None:
    full = get(client, "/api/v1/pods")
    seen: list[str] = []
    token = ""
    versions = set()
    pages = 0
    while True:
        params = {"limit": 7, **({"continue": token} if token else {})}
        page = get(client, "/api/v1/pods", **params)
        versions.add(page["metadata"]["resourceVersion"])
        seen += [p["metadata"]["uid"] for p in page["items"]]
        pages += 1
        token = page["metadata"].get("continue", "")
        if not token:
            break
        assert page["metadata"]["remainingItemCount"] == len(full["items"]) - len(seen)
        clock.step()  # pods churn between pages: the pages still come from the first snapshot
    assert pages == -(-len(full["items"]) // 7)
    assert seen == [p["metadata"]["uid"] for p in full["items"]]
    assert versions == {full["metadata"]["resourceVersion"]}
    assert get(client, "/api/v1/pods")["metadata"]["resourceVersion"] != versions.pop()


def test_a_continue_token_older_than_the_history_gets_410_expired(
    client: httpx.Client, clock: Clock
) -> None:
    token = get(client, "/api/v1/pods", limit=5)["metadata"]["continue"]
    clock.step(int(300 / RESOLUTION) + 1)
    gone = client.get("/api/v1/pods", params={"limit": 5, "continue": token})
    assert gone.status_code == 410
    body = gone.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Expired", 410)
    assert body["metadata"]["continue"]  # a fresh token, as the API server offers
    garbage = client.get("/api/v1/pods", params={"limit": 5, "continue": "not-a-token"})
    assert garbage.status_code == 400


def test_resource_versions_grow_with_the_clock(client: httpx.Client, clock: Clock) -> None:
    seen = []
    for _ in range(3):
        body = get(client, "/api/v1/pods")
        seen.append(int(body["metadata"]["resourceVersion"]))
        assert all(int(p["metadata"]["resourceVersion"]) <= seen[-1] for p in body["items"])
        clock.step()
    assert seen == sorted(seen) and len(set(seen)) == 3


def test_a_scrape_spread_is_served_as_each_items_own_timestamp(clock: Clock) -> None:
    spread = ClusterModel(
        SimulatorConfig(nodes=12, pods=60, seed=5, scrape_spread_seconds=9), clock
    )
    with (
        SimulatorServer(create_app(spread)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        nodes = items(client, "/apis/metrics.k8s.io/v1beta1/nodes")
        pods = items(client, "/apis/metrics.k8s.io/v1beta1/pods")
    served = {n["metadata"]["name"]: n["timestamp"] for n in nodes}
    expected = {n.name: rfc3339(n.timestamp) for n in spread.node_metrics()}
    assert served == expected and len(set(served.values())) > 1
    by_pod = {(p.namespace, p.name): rfc3339(p.timestamp) for p in spread.pod_metrics()}
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]): p["timestamp"] for p in pods} == (
        by_pod
    )
