"""The simulated Metrics API over real HTTP: discovery, shapes, selectors, errors, static mode."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recorder.errors import ConfigError
from recorder.simulator import (
    ClusterModel,
    SimulatorConfig,
    SimulatorServer,
    StaticResponses,
    create_app,
)

T0 = 1_700_000_003.0
V1BETA1 = "/apis/metrics.k8s.io/v1beta1"
V1 = "/apis/metrics.k8s.io/v1"


def _fixture_dir() -> Path | None:
    # tests/integration/<this file>: parents[1] is tests/, parents[3] the directory holding the
    # checkout, where the shared fixtures live (/work/shared/fixtures next to /work/main).
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "fixtures", here.parents[3] / "shared" / "fixtures"):
        if (candidate / "03_libcloud_gke_nodemetricslist.json").is_file():
            return candidate
    return None


FIXTURES = _fixture_dir()
# The shared fixtures sit beside the checkout (CI lays them there too): missing is a failure.
needs_fixtures = pytest.mark.usefixtures("shared_fixtures")


def fixture(name: str) -> Any:
    assert FIXTURES is not None
    return json.loads((FIXTURES / name).read_text())


def not_found(resource: str, name: str) -> dict[str, Any]:
    singular = {"nodes": "nodemetrics", "pods": "podmetrics"}[resource]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'{singular}.metrics.k8s.io "{name}" not found',
        "reason": "NotFound",
        "details": {"name": name, "group": "metrics.k8s.io", "kind": resource},
        "code": 404,
    }


PATH_NOT_FOUND = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "the server could not find the requested resource",
    "reason": "NotFound",
    "details": {},
    "code": 404,
}


@pytest.fixture(scope="module")
def model() -> ClusterModel:
    return ClusterModel(SimulatorConfig(nodes=4, pods=60, seed=11), clock=lambda: T0)


@pytest.fixture(scope="module")
def server(model: ClusterModel) -> Iterator[SimulatorServer]:
    with SimulatorServer(create_app(model)) as running:
        yield running


@pytest.fixture
def client(server: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, lists reduced to their first element.

    ``labels`` maps arbitrary keys to strings, so only its type is kept.
    """
    if isinstance(value, dict):
        return {k: "labels" if k == "labels" else shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def modern(fixture_shape: Any) -> Any:
    """A fixture's shape as metrics-server >= 0.5 on Kubernetes >= 1.20 writes it."""
    if isinstance(fixture_shape, dict):
        out = {k: modern(v) for k, v in fixture_shape.items() if k != "selfLink"}
        if "creationTimestamp" in out:  # object metadata: labels are copied
            out["labels"] = "labels"
        return out
    if isinstance(fixture_shape, list):
        return [modern(v) for v in fixture_shape]
    return fixture_shape


# --- discovery --------------------------------------------------------------------------------


def test_discovery_documents(client: httpx.Client) -> None:
    gv = {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}
    group = {"name": "metrics.k8s.io", "versions": [gv], "preferredVersion": gv}
    assert client.get("/apis").json() == {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [group],
    }
    assert client.get("/apis/metrics.k8s.io").json() == {
        "kind": "APIGroup",
        "apiVersion": "v1",
        **group,
    }
    resources = client.get(V1BETA1)
    assert resources.headers["content-type"] == "application/json"
    assert resources.json() == {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "metrics.k8s.io/v1beta1",
        "resources": [
            {
                "name": "nodes",
                "singularName": "",
                "namespaced": False,
                "kind": "NodeMetrics",
                "verbs": ["get", "list"],
            },
            {
                "name": "pods",
                "singularName": "",
                "namespaced": True,
                "kind": "PodMetrics",
                "verbs": ["get", "list"],
            },
        ],
    }


def test_v1_is_not_served_by_default(client: httpx.Client) -> None:
    for path in (V1, f"{V1}/nodes", f"{V1}/pods"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json() == PATH_NOT_FOUND


def test_v1_when_enabled(model: ClusterModel) -> None:
    with SimulatorServer(create_app(model, serve_v1=True)) as server:
        with httpx.Client(base_url=server.url) as client:
            group = client.get("/apis/metrics.k8s.io").json()
            assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"]
            assert group["preferredVersion"]["version"] == "v1"
            assert client.get(V1).json()["groupVersion"] == "metrics.k8s.io/v1"
            nodes = client.get(f"{V1}/nodes").json()
            assert nodes["apiVersion"] == "metrics.k8s.io/v1"
            pods = client.get(f"{V1}/pods").json()
            assert pods["kind"] == "PodMetricsList" and pods["items"]
            beta = client.get(f"{V1BETA1}/nodes").json()
            assert beta["apiVersion"] == "metrics.k8s.io/v1beta1"
            assert beta["items"] == nodes["items"]


# --- shapes -----------------------------------------------------------------------------------


@needs_fixtures
def test_lists_have_the_shape_of_real_responses(client: httpx.Client) -> None:
    nodes = client.get(f"{V1BETA1}/nodes").json()
    pods = client.get(f"{V1BETA1}/pods").json()
    assert shape(nodes) == modern(shape(fixture("03_libcloud_gke_nodemetricslist.json")))
    assert shape(pods) == modern(
        shape(fixture("04_libcloud_gke_podmetricslist_multicontainer.json"))
    )
    assert nodes["metadata"] == {} and pods["metadata"] == {}


@needs_fixtures
def test_single_objects_have_the_shape_of_real_responses(
    client: httpx.Client, model: ClusterModel
) -> None:
    node = model.nodes[0].name
    pod = model.pod_metrics()[0]
    got_node = client.get(f"{V1BETA1}/nodes/{node}").json()
    got_pod = client.get(f"{V1BETA1}/namespaces/{pod.namespace}/pods/{pod.name}").json()
    assert shape(got_node) == modern(shape(fixture("01_website_nodemetrics_minikube.json")))
    assert shape(got_pod) == modern(
        shape(fixture("02_website_podmetrics_kube-scheduler-minikube.json"))
    )


@needs_fixtures
def test_legacy_flavour_matches_the_fixtures_exactly(model: ClusterModel) -> None:
    with SimulatorServer(create_app(model, legacy=True)) as server:
        with httpx.Client(base_url=server.url) as client:
            nodes = client.get(f"{V1BETA1}/nodes").json()
            pods = client.get(f"{V1BETA1}/pods").json()
            node = client.get(f"{V1BETA1}/nodes/{model.nodes[0].name}").json()
    assert shape(nodes) == shape(fixture("03_libcloud_gke_nodemetricslist.json"))
    assert shape(pods) == shape(fixture("04_libcloud_gke_podmetricslist_multicontainer.json"))
    assert shape(node) == shape(fixture("01_website_nodemetrics_minikube.json"))
    assert nodes["metadata"] == {"selfLink": f"{V1BETA1}/nodes"}
    first = pods["items"][0]["metadata"]
    assert first["selfLink"] == f"{V1BETA1}/namespaces/{first['namespace']}/pods/{first['name']}"


def test_values_and_formats(client: httpx.Client, model: ClusterModel) -> None:
    body = client.get(f"{V1BETA1}/pods").json()
    expected = {(p.namespace, p.name): p for p in model.pod_metrics()}
    assert len(body["items"]) == len(expected)
    stamp = "2023-11-14T22:13:15Z"  # T0 floored to 15 s
    for item in body["items"]:
        meta = item["metadata"]
        pod = expected[(meta["namespace"], meta["name"])]
        assert item["timestamp"] == stamp
        assert meta["creationTimestamp"] == "2023-11-14T22:13:23Z"
        assert meta["labels"] == dict(pod.labels)
        assert item["window"].endswith("s")
        assert [c["name"] for c in item["containers"]] == [c.name for c in pod.containers]
        for got, want in zip(item["containers"], pod.containers, strict=True):
            cpu, memory = got["usage"]["cpu"], got["usage"]["memory"]
            if cpu.endswith("n"):
                assert int(cpu[:-1]) == want.cpu_nanocores
            if memory.endswith("Ki"):
                assert int(memory[:-2]) * 1024 == want.memory_bytes
            assert cpu == "0" or cpu[-1] in "num" or cpu.isdigit()
            assert memory[-2:] in ("Ki", "Mi", "Gi")


def test_same_bucket_same_body(client: httpx.Client) -> None:
    first = client.get(f"{V1BETA1}/pods").content
    assert client.get(f"{V1BETA1}/pods").content == first


def test_large_lists_are_gzipped_when_accepted() -> None:
    big = ClusterModel(SimulatorConfig(nodes=20, pods=1500), clock=lambda: T0)
    with SimulatorServer(create_app(big)) as server:
        with httpx.Client(base_url=server.url) as client:
            response = client.get(f"{V1BETA1}/pods")
            assert response.headers["content-encoding"] == "gzip"
            assert len(response.json()["items"]) == len(big.pod_metrics())
            plain = client.get(f"{V1BETA1}/pods", headers={"Accept-Encoding": "identity"})
            assert "content-encoding" not in plain.headers
            assert plain.content == response.content


# --- selectors and single objects -------------------------------------------------------------


def names(body: dict[str, Any]) -> set[str]:
    return {item["metadata"]["name"] for item in body["items"]}


def test_namespaced_list(client: httpx.Client, model: ClusterModel) -> None:
    body = client.get(f"{V1BETA1}/namespaces/kube-system/pods").json()
    want = {p.name for p in model.pod_metrics() if p.namespace == "kube-system"}
    assert want and names(body) == want
    assert client.get(f"{V1BETA1}/namespaces/nowhere/pods").json()["items"] == []


@pytest.mark.parametrize(
    "selector",
    [
        "tier=control-plane",
        "k8s-app==kube-proxy",
        "component!=etcd",
        "app.kubernetes.io/name in (node-exporter, coredns)",
        "app.kubernetes.io/name notin (node-exporter)",
        "pod-template-hash",
        "!pod-template-hash",
        "env=",
        "app.kubernetes.io/name,tier",
    ],
)
def test_label_selectors(client: httpx.Client, model: ClusterModel, selector: str) -> None:
    from recorder.selectors import parse_label_selector

    parsed = parse_label_selector(selector)
    want = {p.name for p in model.pod_metrics() if parsed.matches(p.labels)}
    body = client.get(f"{V1BETA1}/pods", params={"labelSelector": selector}).json()
    assert names(body) == want


def test_node_label_selector(client: httpx.Client, model: ClusterModel) -> None:
    node = model.nodes[1]
    selector = f"kubernetes.io/hostname={node.name}"
    body = client.get(f"{V1BETA1}/nodes", params={"labelSelector": selector}).json()
    assert names(body) == {node.name}
    body = client.get(f"{V1BETA1}/nodes", params={"fieldSelector": f"metadata.name!={node.name}"})
    assert names(body.json()) == {n.name for n in model.nodes} - {node.name}


def test_field_selectors(client: httpx.Client, model: ClusterModel) -> None:
    pod = model.pod_metrics()[-1]
    by_name = client.get(f"{V1BETA1}/pods", params={"fieldSelector": f"metadata.name={pod.name}"})
    assert names(by_name.json()) == {pod.name}
    scoped = client.get(
        f"{V1BETA1}/namespaces/{pod.namespace}/pods",
        params={"fieldSelector": f"metadata.name=={pod.name}"},
    )
    assert names(scoped.json()) == {pod.name}
    others = client.get(
        f"{V1BETA1}/pods", params={"fieldSelector": "metadata.namespace!=kube-system"}
    ).json()
    assert {i["metadata"]["namespace"] for i in others["items"]} == {
        p.namespace for p in model.pod_metrics()
    } - {"kube-system"}


def test_single_gets(client: httpx.Client, model: ClusterModel) -> None:
    node = model.node_metrics()[2]
    got = client.get(f"{V1BETA1}/nodes/{node.name}").json()
    assert got["kind"] == "NodeMetrics" and got["apiVersion"] == "metrics.k8s.io/v1beta1"
    assert got["metadata"]["name"] == node.name
    assert got["usage"]["cpu"].rstrip("num").isdigit()
    pod = model.pod_metrics()[5]
    got = client.get(f"{V1BETA1}/namespaces/{pod.namespace}/pods/{pod.name}").json()
    assert got["kind"] == "PodMetrics"
    assert (got["metadata"]["namespace"], got["metadata"]["name"]) == (pod.namespace, pod.name)
    listed = client.get(f"{V1BETA1}/pods").json()["items"]
    item = next(i for i in listed if i["metadata"]["name"] == pod.name)
    assert {k: v for k, v in got.items() if k not in ("kind", "apiVersion")} == item


# --- errors -----------------------------------------------------------------------------------


def test_unknown_objects_are_404_status(client: httpx.Client, model: ClusterModel) -> None:
    response = client.get(f"{V1BETA1}/nodes/no-such-node")
    assert response.status_code == 404
    assert response.json() == not_found("nodes", "no-such-node")
    assert response.content == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"nodemetrics.metrics.k8s.io \\"no-such-node\\" not found",'
        b'"reason":"NotFound","details":{"name":"no-such-node","group":"metrics.k8s.io",'
        b'"kind":"nodes"},"code":404}'
    )
    pod = model.pod_metrics()[0]
    response = client.get(f"{V1BETA1}/namespaces/other/pods/{pod.name}")
    assert response.status_code == 404
    assert response.json() == not_found("pods", pod.name)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api/v1/nodes",
        "/apis/metrics.k8s.io/v2",
        f"{V1BETA1}/foo",
        f"{V1BETA1}/pods/some-pod",
        f"{V1BETA1}/namespaces/default",
        f"{V1BETA1}/namespaces/default/pods/a/b",
    ],
)
def test_unknown_paths_are_404_status(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == PATH_NOT_FOUND


@pytest.mark.parametrize(
    "params",
    [
        {"labelSelector": "app in ("},
        {"labelSelector": "a=b=c"},
        {"labelSelector": "bad key=x"},
        {"fieldSelector": "spec.nodeName=x"},
        {"fieldSelector": "metadata.name"},
    ],
)
def test_bad_selectors_are_400_status(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get(f"{V1BETA1}/pods", params=params)
    assert response.status_code == 400
    body = response.json()
    assert {k: v for k, v in body.items() if k != "message"} == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "reason": "BadRequest",
        "code": 400,
    }
    assert body["message"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writes_are_405_status(client: httpx.Client, method: str) -> None:
    response = client.request(method, f"{V1BETA1}/nodes")
    assert response.status_code == 405
    assert response.json()["reason"] == "MethodNotAllowed"
    assert response.json()["code"] == 405


# --- static mode ------------------------------------------------------------------------------


def test_static_responses_with_odd_shapes() -> None:
    null_timestamp = (
        b'{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},'
        b'"items":[{"metadata":{"name":"p","namespace":"n"},"timestamp":null,"window":"30s",'
        b'"containers":[{"name":"c","usage":{"cpu":"1.5","memory":"oops"}}]}]}'
    )
    unavailable = b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":503}'
    static: StaticResponses = {
        f"{V1BETA1}/pods": null_timestamp,
        f"{V1BETA1}/nodes": (503, unavailable),
        f"{V1BETA1}/pods?labelSelector=app%3Dx": b'{"items":[]}',
    }
    with SimulatorServer(create_app(static=static)) as server:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/apis").json()["groups"][0]["name"] == "metrics.k8s.io"
            assert client.get(V1BETA1).json()["kind"] == "APIResourceList"
            assert client.get(f"{V1BETA1}/pods").content == null_timestamp
            nodes = client.get(f"{V1BETA1}/nodes")
            assert (nodes.status_code, nodes.content) == (503, unavailable)
            selected = client.get(f"{V1BETA1}/pods", params={"labelSelector": "app=x"})
            assert selected.content == b'{"items":[]}'
            missing = client.get(f"{V1BETA1}/namespaces/x/pods")
            assert (missing.status_code, missing.json()) == (404, PATH_NOT_FOUND)


@needs_fixtures
def test_static_fixtures_are_served_byte_for_byte() -> None:
    assert FIXTURES is not None
    raw = (FIXTURES / "04_libcloud_gke_podmetricslist_multicontainer.json").read_bytes()
    with SimulatorServer(create_app(static={f"{V1BETA1}/pods": raw})) as server:
        assert httpx.get(f"{server.url}{V1BETA1}/pods").content == raw


def test_a_busy_port_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen"):
            SimulatorServer(create_app(), port=port).start()


# --- kubectl ----------------------------------------------------------------------------------


def test_kubectl_reads_the_simulator(server: SimulatorServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "--server", server.url, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    listed = kubectl("get", "--raw", f"{V1BETA1}/nodes")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["kind"] == "NodeMetricsList"
    missing = kubectl("get", "--raw", f"{V1BETA1}/nodes/nope")
    assert missing.returncode != 0
    assert 'nodemetrics.metrics.k8s.io "nope" not found' in missing.stderr
