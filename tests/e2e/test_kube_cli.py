"""The real `recorder` processes against the simulator over TLS: `recorder poll` prints each
error's message and exits non-zero; `recorder run` survives token rotation without losing a
poll, and counts API errors by reason without crashing."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from recorder.cli import main
from recorder.simulator.tls import CertificateAuthority
from tests.processes import free_port, run_recorder, start_recorder, stop, wait_for
from tests.simcluster import (
    CLUSTER_READER,
    TEAM_NAMESPACES,
    TEAM_READER,
    SecureCluster,
    secure_cluster,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'poll.db'}"


@pytest.fixture
def poll(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """`recorder poll` in this process (its start-up is what the subprocess tests pay for)."""
    for name in list(os.environ):
        if name.startswith(("RECORDER_", "KUBE")):
            monkeypatch.delenv(name)

    def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        # A short interval keeps the retry budget (half of it) short.
        code = main(["poll", "--database-url", database, "--interval", "1s", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def cluster() -> Iterator[SecureCluster]:
    with secure_cluster(ca=CertificateAuthority.generate(), serve_v1=True) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults(cluster: SecureCluster) -> Iterator[None]:
    yield
    cluster.faults.clear()


def test_poll_process_reads_v1_with_a_private_ca_and_a_token(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    cluster.paths.clear()
    result = run_recorder(
        [
            "poll",
            "--kubeconfig",
            str(cluster.kubeconfig(tmp_path / "config")),
            "--database-url",
            f"sqlite:///{tmp_path / 'poll.db'}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    frame = cluster.model.frame()
    assert f"nodes: {len(frame.nodes)} samples, {len(frame.nodes)} stored" in result.stdout
    # Both versions are served; v1 is read.
    assert "/apis/metrics.k8s.io/v1/nodes" in cluster.paths
    assert not any("v1beta1" in path for path in cluster.paths)


def test_poll_with_a_client_certificate(
    cluster: SecureCluster, tmp_path: Path, poll: Callable[..., tuple[int, str, str]]
) -> None:
    path = cluster.kubeconfig(tmp_path / "config", user=cluster.client_certificate_user())
    code, out, err = poll("--kubeconfig", str(path))
    assert code == 0, out + err


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("forbidden", "403 Forbidden"),
        ("missing", "metrics-server is not installed"),
        ("unavailable", "installed but unavailable (503 Service Unavailable)"),
        ("slow", "no complete answer from"),
        ("wrong-ca", "TLS verification of"),
    ],
)
def test_poll_failures_print_the_message_and_exit_1(
    cluster: SecureCluster,
    tmp_path: Path,
    poll: Callable[..., tuple[int, str, str]],
    fault: str,
    expected: str,
) -> None:
    user = {"token": cluster.team_token} if fault == "forbidden" else None
    path = cluster.kubeconfig(tmp_path / "config", user=user)
    env = {}
    if fault == "missing":
        cluster.faults.missing = True
    elif fault == "unavailable":
        cluster.faults.unavailable(1000)
    elif fault == "slow":
        cluster.faults.slow(3)
        env["RECORDER_REQUEST_TIMEOUT_SECONDS"] = "0.3"
    elif fault == "wrong-ca":
        (tmp_path / "other-ca.crt").write_bytes(CertificateAuthority.generate().cert_pem)
        path = cluster.kubeconfig(
            tmp_path / "config", cluster={"certificate-authority": "other-ca.crt"}, with_ca=False
        )
    started = time.monotonic()
    code, out, err = poll("--kubeconfig", str(path), env=env)
    assert code == 1, out + err
    assert "FAILED" in out and expected in out, out
    assert time.monotonic() - started < 10
    if fault == "wrong-ca":
        assert str(tmp_path / "other-ca.crt") in out  # names the CA in use
    if fault == "forbidden":
        assert "apiGroups [metrics.k8s.io], resources [nodes, pods]" in out
        assert "system:serviceaccount:shop:kube-metrics-recorder" in out


def test_configuration_errors_exit_2(
    cluster: SecureCluster, tmp_path: Path, poll: Callable[..., tuple[int, str, str]]
) -> None:
    code, _, err = poll("--kubeconfig", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err
    path = cluster.kubeconfig(tmp_path / "config")
    code, _, err = poll("--kubeconfig", str(path), "--context", "prod")
    assert code == 2
    assert "context 'prod' is not defined" in err and "recorder-simulator" in err


def test_namespaced_mode_with_a_namespaced_identity(
    cluster: SecureCluster, tmp_path: Path, poll: Callable[..., tuple[int, str, str]]
) -> None:
    path = cluster.kubeconfig(tmp_path / "config", user={"token": cluster.team_token})
    namespaces = [arg for ns in TEAM_NAMESPACES for arg in ("--namespace", ns)]
    code, out, err = poll("--kubeconfig", str(path), *namespaces)
    assert code == 0, out + err
    assert out.startswith("pods:") and "nodes:" not in out


# --- recorder run -------------------------------------------------------------------------------


def scrape(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        match = re.match(
            r"(recorder_(?:polls|poll_errors)_total|recorder_metrics_api_up)(\{.*\})? (\S+)$", line
        )
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def start_run(
    kubeconfig: Path, tmp_path: Path, interval: str = "0.3s"
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = start_recorder(
        [
            "run",
            "--kubeconfig",
            str(kubeconfig),
            "--database-url",
            f"sqlite:///{tmp_path / 'run.db'}",
            "--interval",
            interval,
            "--listen",
            f"127.0.0.1:{port}",
        ],
        tmp_path,
    )
    return process, f"http://127.0.0.1:{port}"


def polls(values: dict[str, float]) -> float:
    return values.get('recorder_polls_total{resource="nodes"}', 0.0)


def test_run_survives_token_rotation_without_losing_a_poll(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    rotating = cluster.access.add_rotating_token(CLUSTER_READER, tmp_path / "token")
    path = cluster.kubeconfig(tmp_path / "config", user={"tokenFile": str(tmp_path / "token")})
    rejected_before = cluster.access.rejections
    # A request and its re-send after a 401 share the retry budget, half an interval: at 1 s
    # that is 0.5 s, room for a TLS handshake on a busy CI machine (at 0.3 s, 0.15 s was not
    # always: one poll of a serial CI run timed out).
    process, base = start_run(path, tmp_path, interval="1s")
    try:
        wait_for(lambda: polls(scrape(base)) >= 2, 30, "the first polls")
        for _ in range(3):  # rotate while it polls
            before = polls(scrape(base))
            rotating.rotate()
            wait_for(lambda b=before: polls(scrape(base)) >= b + 2, 20, "polls after rotation")
        values = scrape(base)
    finally:
        output = stop(process)
    errors = {k: v for k, v in values.items() if k.startswith("recorder_poll_errors_total")}
    assert errors == {} or set(errors.values()) == {0.0}, (errors, output[-3000:])
    assert values["recorder_metrics_api_up"] == 1
    assert rotating.rotations == 3
    # Every rotation was met by a 401, answered with the re-read token.
    assert cluster.access.rejections - rejected_before >= 3
    assert "failed" not in output.lower(), output[-3000:]
    assert rotating.current not in output  # no token in the logs


def test_run_counts_api_errors_by_reason_and_recovers(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    token = cluster.access.add_token(CLUSTER_READER)
    process, base = start_run(
        cluster.kubeconfig(tmp_path / "config", user={"token": token}), tmp_path
    )
    try:
        wait_for(lambda: polls(scrape(base)) >= 1, 30, "the first poll")

        def counted(reason: str) -> bool:
            return (
                scrape(base).get(
                    f'recorder_poll_errors_total{{reason="{reason}",resource="nodes"}}', 0
                )
                >= 1
            )

        cluster.access.add_token(TEAM_READER, token)  # RBAC now denies cluster-wide lists
        wait_for(lambda: counted("forbidden"), 20, "a counted 403")
        cluster.access.add_token(CLUSTER_READER, token)
        cluster.faults.unavailable(10_000)
        wait_for(lambda: counted("unavailable"), 20, "a counted 503")
        cluster.faults.clear()
        cluster.faults.missing = True
        wait_for(lambda: counted("not_found"), 20, "a counted 404 on the group")
        cluster.faults.clear()
        cluster.faults.malformed(10_000)
        wait_for(lambda: counted("malformed"), 20, "a counted malformed body")
        cluster.faults.clear()
        wait_for(lambda: scrape(base).get("recorder_metrics_api_up") == 1, 20, "recovery")
        assert process.poll() is None
    finally:
        output = stop(process)
    assert "Traceback" not in output, output[-3000:]
