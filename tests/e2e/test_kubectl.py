"""The simulator is faithful to a real client: kubectl, given the kubeconfig that
`recorder simulate --write-kubeconfig` writes, reads it over TLS as it would a cluster with
metrics-server (`get --raw`, `top nodes`, `top pods -A`), and sees RBAC denials and a missing
metrics-server the way it would see them there."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.simulator.objects import uid
from recorder.simulator.tls import CertificateAuthority
from tests.processes import free_port, recorder_env, run_recorder, start_recorder, stop
from tests.simcluster import secure_cluster

pytestmark = pytest.mark.slow

KUBECTL = shutil.which("kubectl")


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None, "kubectl is required for these tests (install kubectl 1.32)"
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "--request-timeout", "10s", *args],
        env=recorder_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Simulator:
    def __init__(self, tmp_path: Path, *flags: str) -> None:
        self.port = free_port()
        self.kubeconfig = tmp_path / "kubeconfig"
        self.process = start_recorder(
            [
                "simulate",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--nodes",
                "4",
                "--pods",
                "20",
                "--tls",
                "--write-kubeconfig",
                str(self.kubeconfig),
                *flags,
            ],
            tmp_path,
        )
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the simulator did not start: {self.stop()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        if not self.kubeconfig.exists():
            return False
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> str:
        return stop(self.process)


@pytest.fixture(scope="module")
def token_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    tmp_path = tmp_path_factory.mktemp("token")
    simulator = Simulator(
        tmp_path,
        "--auth",
        "token",
        "--token-file",
        str(tmp_path / "token"),
        "--rotate-token-every",
        "1s",
    )
    yield simulator
    simulator.stop()


def test_kubectl_get_raw(token_simulator: Simulator) -> None:
    listed = kubectl(
        token_simulator.kubeconfig, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"
    )
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["kind"] == "NodeMetricsList" and len(body["items"]) == 4
    missing = kubectl(
        token_simulator.kubeconfig, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/nope"
    )
    assert missing.returncode != 0
    assert 'nodemetrics.metrics.k8s.io "nope" not found' in missing.stderr


def test_kubectl_reads_the_kube_system_namespace_uid(token_simulator: Simulator) -> None:
    """What a recorder in a pod reads to name its cluster: stable for the seed (0 here)."""
    got = kubectl(
        token_simulator.kubeconfig,
        "get",
        "namespace",
        "kube-system",
        "-o",
        "jsonpath={.metadata.uid}",
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout == uid(0, "Namespace", "kube-system")
    listed = kubectl(token_simulator.kubeconfig, "get", "namespaces", "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert "namespace/kube-system" in listed.stdout.split()
    missing = kubectl(token_simulator.kubeconfig, "get", "namespace", "nope")
    assert missing.returncode != 0
    assert 'namespaces "nope" not found' in missing.stderr


def test_kubectl_top_nodes(token_simulator: Simulator) -> None:
    result = kubectl(token_simulator.kubeconfig, "top", "nodes")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    assert len(lines) == 5
    for line in lines[1:]:
        _, cpu, cpu_percent, memory, memory_percent = line.split()
        assert cpu.endswith("m") and memory.endswith("Mi")
        assert cpu_percent.endswith("%") and memory_percent.endswith("%")


def test_kubectl_top_pods_all_namespaces(token_simulator: Simulator) -> None:
    result = kubectl(token_simulator.kubeconfig, "top", "pods", "-A")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert len(lines) > 10
    empty = kubectl(token_simulator.kubeconfig, "top", "pods", "-n", "no-such-namespace")
    assert "No resources found in no-such-namespace namespace." in empty.stdout + empty.stderr


def test_token_rotation_and_the_recorder_reads_the_same_kubeconfig(
    token_simulator: Simulator, tmp_path: Path
) -> None:
    token_file = token_simulator.kubeconfig.parent / "token"
    first = token_file.read_text()
    deadline = time.monotonic() + 10
    while token_file.read_text() == first:
        assert time.monotonic() < deadline, "the token was not rotated"
        time.sleep(0.1)
    assert kubectl(token_simulator.kubeconfig, "top", "nodes").returncode == 0
    polled = run_recorder(
        [
            "poll",
            "--kubeconfig",
            str(token_simulator.kubeconfig),
            "--database-url",
            f"sqlite:///{tmp_path / 'poll.db'}",
        ]
    )
    assert polled.returncode == 0, polled.stdout + polled.stderr
    assert "nodes: 4 samples, 4 stored" in polled.stdout


def test_kubectl_with_a_namespaced_client_certificate(tmp_path: Path) -> None:
    simulator = Simulator(
        tmp_path, "--auth", "client-cert", "--identity-namespace", "default", "--serve-v1"
    )
    try:
        allowed = kubectl(simulator.kubeconfig, "top", "pods", "-n", "default")
        assert allowed.returncode == 0, allowed.stderr
        assert allowed.stdout.startswith("NAME")
        denied = kubectl(simulator.kubeconfig, "top", "pods", "-A")
        assert denied.returncode != 0
        assert (
            'pods.metrics.k8s.io is forbidden: User "kube-metrics-recorder" cannot list '
            'resource "pods" in API group "metrics.k8s.io" at the cluster scope'
        ) in denied.stderr
        nodes = kubectl(simulator.kubeconfig, "top", "nodes")
        assert nodes.returncode != 0 and "forbidden" in nodes.stderr
        identity = kubectl(simulator.kubeconfig, "get", "namespace", "kube-system")
        assert identity.returncode != 0
        assert (
            'namespaces "kube-system" is forbidden: User "kube-metrics-recorder" cannot get '
            'resource "namespaces" in API group "" at the cluster scope'
        ) in identity.stderr
    finally:
        output = simulator.stop()
    assert "Traceback" not in output


def test_kubectl_sees_a_missing_or_unavailable_metrics_server(tmp_path: Path) -> None:
    with secure_cluster(ca=CertificateAuthority.generate()) as cluster:
        config = cluster.kubeconfig(tmp_path / "config")
        cluster.faults.missing = True
        missing = kubectl(config, "top", "nodes")
        assert missing.returncode != 0
        assert "Metrics API not available" in missing.stderr
        cluster.faults.clear()
        cluster.faults.unavailable(1000)
        down = kubectl(config, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes")
        assert down.returncode != 0
        assert "the server is currently unable to handle the request" in down.stderr
        cluster.faults.clear()
        unauthenticated = cluster.kubeconfig(tmp_path / "revoked", user={"token": "revoked"})
        rejected = kubectl(unauthenticated, "top", "nodes")
        assert rejected.returncode != 0
        assert "must be logged in to the server" in rejected.stderr
