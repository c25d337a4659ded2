"""End to end: `recorder run` reads the cluster objects beside the metrics. With the RBAC it
stores every pod's workload and says so in /readyz; without it (403) or without the core API
(404) it keeps recording metrics, says so once in the log and shows it in /readyz."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.simulator.access import Identity
from tests.processes import free_port, start_recorder, stop, wait_for
from tests.simcluster import SecureCluster, secure_cluster

pytestmark = pytest.mark.slow

METRICS_ONLY = frozenset({"metrics.k8s.io/pods", "metrics.k8s.io/nodes"})


@pytest.fixture
def cluster() -> Iterator[SecureCluster]:
    with secure_cluster() as running:
        yield running


def run(
    tmp_path: Path, *source: str, env: dict[str, str] | None = None
) -> tuple[Any, str, Path, Path]:
    port = free_port()
    db = tmp_path / "rec.db"
    log = tmp_path / "run.log"
    process = start_recorder(
        [
            "run",
            *source,
            "--database-url",
            f"sqlite:///{db}",
            "--interval",
            "0.5s",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        tmp_path,
        log=log,
        env=env,
    )
    return process, f"http://127.0.0.1:{port}", db, log


def readyz(base: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/readyz")
    body: dict[str, Any] = response.json()
    return body


def wait_objects_read(base: str) -> None:
    """Until /readyz says the cluster objects' first lists are read and stored ("ok (...)")."""
    wait_for(
        lambda: readyz(base)["checks"].get("cluster_objects", "").startswith("ok ("),
        30,
        "the cluster objects to be read",
    )


def samples(db: Path) -> int:
    """Samples stored so far (0 until the recorder made its database)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM samples_head").fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0


def test_with_the_rbac_every_pod_gets_its_workload(cluster: SecureCluster, tmp_path: Path) -> None:
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig")
    process, base, db, log = run(tmp_path, "--kubeconfig", str(kubeconfig))
    try:
        wait_objects_read(base)
        pods = len(cluster.model.slots)
        checks = readyz(base)["checks"]
        assert f"{pods} pods" in checks["cluster_objects"]
        # The cluster it records, by its kubeconfig context (the identity is read in a pod).
        assert checks["cluster"] == "recorder-simulator" and "clusterUid" not in checks

        # "ok" only once what the first lists read is stored
        with sqlite3.connect(db) as conn:
            stored = int(conn.execute("SELECT COUNT(*) FROM pod_workloads").fetchone()[0])
        assert stored == pods
    finally:
        output = stop(process)
    text = log.read_text() + output
    assert "Traceback" not in text
    assert "cluster objects: read " in text


OBJECT_LISTS = ("/replicasets", "/jobs", "/nodes", "/horizontalpodautoscalers", "/pods")


def test_the_cluster_objects_are_read_once_the_first_poll_is_stored(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    """At 150,000 pods their first lists, beside the writer's load and the first poll, kept
    the worker about 50 MB higher for good: the reader starts once a poll is stored."""
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig")
    process, base, _db, log = run(tmp_path, "--kubeconfig", str(kubeconfig))
    try:
        wait_objects_read(base)
    finally:
        output = stop(process)
    text = log.read_text() + output
    assert "Traceback" not in text
    paths = list(cluster.paths)
    polled = [
        i for i, p in enumerate(paths) if p.startswith("/apis/metrics.k8s.io/") and "/pods" in p
    ]
    listed = [
        i
        for i, p in enumerate(paths)
        if not p.startswith("/apis/metrics.k8s.io/") and p.endswith(OBJECT_LISTS)
    ]
    assert polled and listed, paths
    assert polled[0] < listed[0], paths[: listed[0] + 1]
    lines = text.splitlines()
    stored = next(i for i, line in enumerate(lines) if "poll in " in line)
    read = next(i for i, line in enumerate(lines) if "cluster objects: read " in line)
    assert stored < read, lines[: read + 1]


def test_without_the_rbac_metrics_are_recorded_and_readyz_says_what_is_missing(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    token = cluster.access.add_token(Identity("metrics-only", resources=METRICS_ONLY))
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig", user={"token": token})
    process, base, db, log = run(tmp_path, "--kubeconfig", str(kubeconfig))
    try:
        wait_for(lambda: samples(db) > 0, 30, "metrics to be recorded")
        wait_for(
            lambda: (
                "cluster_objects" in readyz(base)["checks"]
                and readyz(base)["checks"]["cluster_objects"] != "starting"
            ),
            30,
            "the cluster objects' state",
        )
        ready = readyz(base)
        assert ready["status"] == "ok"
        state = ready["checks"]["cluster_objects"]
        assert state.startswith("not read: ")
        assert "forbidden (apply deploy/components/cluster-objects)" in state
        assert "metrics are recorded" in state
        first = samples(db)
        wait_for(lambda: samples(db) > first, 30, "metrics to keep being recorded")
    finally:
        output = stop(process)
    text = log.read_text() + output
    assert "Traceback" not in text
    said = [line for line in text.splitlines() if "cluster objects:" in line]
    assert len(said) == 1, said
    assert "403" in said[0] and "deploy/components/cluster-objects" in said[0]
    assert "RECORDER_CLUSTER_OBJECTS=false" in said[0]


def test_without_the_core_api_it_says_so_once_and_records_metrics(tmp_path: Path) -> None:
    model = ClusterModel(SimulatorConfig(nodes=2, pods=6, seed=1))
    with SimulatorServer(create_app(model)) as server:
        process, base, db, log = run(tmp_path, "--api-url", server.url)
        try:
            wait_for(lambda: samples(db) > 0, 30, "metrics to be recorded")
            wait_for(
                lambda: "not served" in readyz(base)["checks"].get("cluster_objects", ""),
                30,
                "the cluster objects' state",
            )
        finally:
            output = stop(process)
    text = log.read_text() + output
    assert "Traceback" not in text
    said = [line for line in text.splitlines() if "cluster objects:" in line]
    assert len(said) == 1 and "(404)" in said[0], said


def test_switched_off_it_reads_nothing(cluster: SecureCluster, tmp_path: Path) -> None:
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig")
    process, base, db, _log = run(
        tmp_path, "--kubeconfig", str(kubeconfig), env={"RECORDER_CLUSTER_OBJECTS": "false"}
    )
    try:
        wait_for(lambda: samples(db) > 0, 30, "metrics to be recorded")
        assert "cluster_objects" not in readyz(base)["checks"]
    finally:
        stop(process)
    assert cluster.paths, "the recorder asked nothing"
    assert not [p for p in cluster.paths if p.startswith(("/api/v1", "/apis/apps"))]
