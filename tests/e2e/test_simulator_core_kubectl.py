"""kubectl reads the simulator's objects as from a cluster: pods as JSON, every workload kind
through discovery's short names, paginated raw lists, a watch that sees churn, and rollouts
(`kubectl rollout history` and `status`, old ReplicaSets at 0, the new pods by their hash)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from tests.integration.test_simulator_core import Clock

pytestmark = pytest.mark.slow

KUBECTL = shutil.which("kubectl")


class Cluster:
    def __init__(self, url: str, clock: Clock, home: Path) -> None:
        self.url = url
        self.clock = clock
        config = home / "config"
        config.write_text("")
        self.env = {"PATH": os.environ["PATH"], "HOME": str(home), "KUBECONFIG": str(config)}

    def command(self, *args: str) -> list[str]:
        assert KUBECTL is not None, "kubectl is required for these tests (install kubectl 1.32)"
        return [KUBECTL, "--server", self.url, "--request-timeout", "10s", *args]

    def kubectl(self, *args: str) -> str:
        result = subprocess.run(
            self.command(*args), env=self.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    clock = Clock()
    model = ClusterModel(SimulatorConfig(nodes=3, pods=40, seed=4, churn_per_hour=30.0), clock)
    with SimulatorServer(create_app(model, core_api=True)) as server:
        yield Cluster(server.url, clock, tmp_path_factory.mktemp("kubectl"))


def test_kubectl_gets_pods_as_json(cluster: Cluster) -> None:
    pods = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json"))
    listed = httpx.get(f"{cluster.url}/api/v1/pods").json()
    assert [p["metadata"]["uid"] for p in pods["items"]] == [
        p["metadata"]["uid"] for p in listed["items"]
    ]
    assert all(p["kind"] == "Pod" for p in pods["items"])


def test_kubectl_gets_every_workload_kind(cluster: Cluster) -> None:
    out = cluster.kubectl("get", "deploy,rs,sts,ds,job,cronjob,hpa", "-A", "-o", "name")
    kinds = {line.split("/")[0] for line in out.split()}
    assert kinds == {
        "deployment.apps",
        "replicaset.apps",
        "statefulset.apps",
        "daemonset.apps",
        "job.batch",
        "cronjob.batch",
        "horizontalpodautoscaler.autoscaling",
    }
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    for node in nodes:
        assert "kubernetes.io/hostname" in node["metadata"]["labels"]
        assert node["status"]["allocatable"]["cpu"] and node["status"]["capacity"]["memory"]


def test_kubectl_pages_a_raw_list_with_continue(cluster: Cluster) -> None:
    uids: list[str] = []
    path = "/api/v1/pods?limit=15"
    while True:
        page = json.loads(cluster.kubectl("get", "--raw", path))
        uids += [p["metadata"]["uid"] for p in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
        path = f"/api/v1/pods?limit=15&continue={token}"
    everything = json.loads(cluster.kubectl("get", "--raw", "/api/v1/pods"))["items"]
    assert uids == [p["metadata"]["uid"] for p in everything] and len(uids) > 15


def test_kubectl_watch_sees_churned_pods_deleted_and_added(cluster: Cluster) -> None:
    before = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json"))["items"]
    template = 'jsonpath={.type} {.object.metadata.namespace}/{.object.metadata.name}{"\\n"}'
    process = subprocess.Popen(
        cluster.command("get", "pods", "-A", "--watch", "--output-watch-events", "-o", template),
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while len(lines) < len(before):  # the initial list, printed as ADDED events
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        cluster.clock.step(10)
        while not any(line.startswith("DELETED") for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        process.terminate()
        process.wait(10)
        reader.join(10)
        process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()
    events = [line.split() for line in lines[len(before) :]]
    deleted = {name for kind, name in events if kind == "DELETED"}
    added = {name for kind, name in events if kind == "ADDED"}
    names = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in before}
    assert deleted and deleted <= names | added
    assert added - names, "replacement pods with new names"


@pytest.fixture(scope="module")
def rolling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A simulator whose Deployments roll out every minute (4 buckets)."""
    clock = Clock()
    config = SimulatorConfig(
        nodes=3, pods=40, seed=4, churn_per_hour=0.0, rollout_every_seconds=60.0
    )
    with SimulatorServer(create_app(ClusterModel(config, clock), core_api=True)) as server:
        yield Cluster(server.url, clock, tmp_path_factory.mktemp("rolling"))


def test_kubectl_follows_rollouts_history_status_and_replicasets(rolling: Cluster) -> None:
    deployments = json.loads(rolling.kubectl("get", "deploy", "-A", "-o", "json"))["items"]
    first = deployments[0]["metadata"]
    namespace, name = first["namespace"], first["name"]
    rolling.clock.step(4 * 3)  # three minutes: three or four rollouts of every Deployment
    history = rolling.kubectl("rollout", "history", f"deployment/{name}", "-n", namespace)
    revisions = [line.split()[0] for line in history.splitlines()[2:] if line.strip()]
    assert len(revisions) >= 3 and revisions == [str(r) for r in range(1, len(revisions) + 1)]
    status = rolling.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace)
    assert "successfully rolled out" in status
    sets = json.loads(rolling.kubectl("get", "rs", "-n", namespace, "-o", "json"))["items"]
    own = [s for s in sets if s["metadata"]["ownerReferences"][0]["name"] == name]
    numbers = sorted(s["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for s in own)
    assert numbers == revisions
    assert sorted(s["spec"]["replicas"] for s in own)[:-1] == [0] * (len(own) - 1)  # the old
    newest = max(
        own, key=lambda s: int(s["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
    )
    hash_ = newest["metadata"]["labels"]["pod-template-hash"]
    pods = json.loads(
        rolling.kubectl(
            "get", "pods", "-n", namespace, "-l", f"pod-template-hash={hash_}", "-o", "json"
        )
    )["items"]
    assert len(pods) == newest["spec"]["replicas"] > 0
    assert all(p["metadata"]["name"].startswith(f"{name}-{hash_}-") for p in pods)
