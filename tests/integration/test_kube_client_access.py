"""Every way of reaching the Metrics API, against the simulator over real TLS on loopback:
credential modes, rotation, discovery, and each error's class, reason and message."""

from __future__ import annotations

import base64
import json
import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from recorder.buffer import WriteQueue
from recorder.errors import (
    CredentialsError,
    MalformedResponseError,
    MetricsApiForbidden,
    MetricsApiNotFound,
    MetricsApiTimeout,
    MetricsApiTLSError,
    MetricsApiTransportError,
    MetricsApiUnauthorized,
    MetricsApiUnavailable,
)
from recorder.exporter import SnapshotHolder, build_registry
from recorder.flusher import Flusher
from recorder.kube.client import MetricsClient
from recorder.kube.config import ClusterConfig, Sources, load_cluster_config
from recorder.kube.decode import decode_node_list, decode_pod_list
from recorder.kube.retry import RetryPolicy
from recorder.poller import Poller
from recorder.simulator.access import Identity
from recorder.simulator.tls import CertificateAuthority
from recorder.store import Store, open_store
from tests.simcluster import (
    CLUSTER_READER,
    TEAM_NAMESPACES,
    SecureCluster,
    exec_plugin_script,
    exec_user,
    secure_cluster,
)

FAST = RetryPolicy(max_attempts=3, base_delay_seconds=0.02, max_delay_seconds=0.05)
V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture(scope="module")
def cluster(ca: CertificateAuthority) -> Iterator[SecureCluster]:
    with secure_cluster(ca=ca) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "cluster" in request.fixturenames:
        request.getfixturevalue("cluster").faults.clear()


def config_for(kubeconfig: Path, **kwargs: Any) -> ClusterConfig:
    return load_cluster_config(
        api_url=None, kubeconfig=str(kubeconfig), context=None, environ={}, **kwargs
    )


def client_for(kubeconfig: Path, *, timeout: float = 5.0, **kwargs: Any) -> MetricsClient:
    return MetricsClient(config_for(kubeconfig, **kwargs), timeout_seconds=timeout, retry=FAST)


def read_all(client: MetricsClient) -> tuple[int, int]:
    nodes, bad_nodes = decode_node_list(client.list_nodes())
    pods, bad_pods = decode_pod_list(client.list_pods())
    assert not bad_nodes and not bad_pods
    return len(nodes), len(pods)


def expected(cluster: SecureCluster) -> tuple[int, int]:
    frame = cluster.model.frame()
    return len(frame.nodes), len(frame.pods)


# --- credential modes -------------------------------------------------------------------------


def test_token_with_ca_data(cluster: SecureCluster, tmp_path: Path) -> None:
    with client_for(cluster.kubeconfig(tmp_path / "config")) as client:
        assert read_all(client) == expected(cluster)
        assert client.version == "v1beta1"


def test_ca_file_and_token_file_relative_to_the_kubeconfig(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(cluster.ca.cert_pem)
    (tmp_path / "token").write_text(cluster.cluster_token + "\n")
    path = cluster.kubeconfig(
        tmp_path / "config",
        user={"tokenFile": "token"},
        cluster={"certificate-authority": "pki/ca.crt"},
        with_ca=False,
    )
    with client_for(path) as client:
        assert read_all(client) == expected(cluster)


def test_client_certificate_as_data(cluster: SecureCluster, tmp_path: Path) -> None:
    path = cluster.kubeconfig(tmp_path / "config", user=cluster.client_certificate_user())
    with client_for(path) as client:
        assert read_all(client) == expected(cluster)
        assert client.config.identity == 'user "recorder-cert" (groups recorders)'


def test_client_certificate_files_are_reloaded_after_rotation(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    first = cluster.ca.issue_client("recorder-cert", ("recorders",))
    (tmp_path / "tls.crt").write_bytes(first.cert_pem)
    (tmp_path / "tls.key").write_bytes(first.key_pem)
    path = cluster.kubeconfig(
        tmp_path / "config", user={"client-certificate": "tls.crt", "client-key": "tls.key"}
    )
    # The rotated certificate belongs to a namespaced identity: a 403 proves it is in use.
    cluster.access.add_certificate_user(Identity("shop-cert", namespaces=frozenset({"shop"})))
    second = cluster.ca.issue_client("shop-cert")
    with client_for(path) as client:
        assert read_all(client) == expected(cluster)
        (tmp_path / "tls.crt").write_bytes(second.cert_pem)
        (tmp_path / "tls.key").write_bytes(second.key_pem)
        assert client.config.credentials is not None
        assert client.config.credentials.refresh()
        with pytest.raises(MetricsApiForbidden, match='User "shop-cert"'):
            client.list_nodes()
        decode_pod_list(client.list_pods("shop"))


def test_no_credentials_is_a_401_that_says_so(cluster: SecureCluster, tmp_path: Path) -> None:
    path = cluster.kubeconfig(tmp_path / "config", user={})
    with client_for(path) as client, pytest.raises(MetricsApiUnauthorized) as caught:
        client.list_nodes()
    assert caught.value.reason == "unauthorized" and caught.value.status == 401
    assert "rejected the credentials" in str(caught.value)
    assert "log in again or refresh the kubeconfig" in str(caught.value)


def test_rotated_token_file_costs_no_request(cluster: SecureCluster, tmp_path: Path) -> None:
    rotating = cluster.access.add_rotating_token(CLUSTER_READER, tmp_path / "token")
    path = cluster.kubeconfig(tmp_path / "config", user={"tokenFile": str(tmp_path / "token")})
    rejected_before = cluster.access.rejections
    with client_for(path) as client:
        for _ in range(3):
            assert read_all(client) == expected(cluster)
            rotating.rotate()  # the file first, then only the new token is valid
    assert rotating.rotations == 3
    # Each rotation cost one 401, answered by re-reading the file and re-sending at once.
    assert cluster.access.rejections - rejected_before == 2


def test_in_cluster_service_account(cluster: SecureCluster, tmp_path: Path) -> None:
    rotating = cluster.access.add_rotating_token(CLUSTER_READER, tmp_path / "token")
    (tmp_path / "ca.crt").write_bytes(cluster.ca.cert_pem)
    (tmp_path / "namespace").write_text("monitoring")
    host, port = cluster.url.removeprefix("https://").rsplit(":", 1)
    config = load_cluster_config(
        api_url=None,
        kubeconfig=None,
        context=None,
        environ={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port},
        service_account_dir=tmp_path,
    )
    with MetricsClient(config, retry=FAST) as client:
        assert read_all(client) == expected(cluster)
        rotating.rotate()
        assert read_all(client) == expected(cluster)


def test_token_file_is_reread_on_a_timer_before_any_401(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    rotating = cluster.access.add_rotating_token(CLUSTER_READER, tmp_path / "token")
    path = cluster.kubeconfig(tmp_path / "config", user={"tokenFile": str(tmp_path / "token")})
    now = [0.0]
    with client_for(path, sources=Sources(reread_seconds=60, monotonic=lambda: now[0])) as client:
        client.list_nodes()
        rotating.rotate()
        now[0] += 61
        rejected = cluster.access.rejections
        client.list_nodes()
        assert cluster.access.rejections == rejected


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
def test_exec_plugin_token_cached_and_rerun_on_401(
    cluster: SecureCluster, tmp_path: Path, api_version: str
) -> None:
    script = exec_plugin_script(tmp_path, api_version=api_version)
    token = cluster.access.add_token(CLUSTER_READER)
    (tmp_path / "token").write_text(token)
    expires = datetime.now(UTC) + timedelta(hours=1)
    (tmp_path / "expires").write_text(expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
    path = cluster.kubeconfig(
        tmp_path / "config",
        user=exec_user(script, api_version=api_version, provideClusterInfo=True),
    )
    with client_for(path) as client:
        assert read_all(client) == expected(cluster)
        assert read_all(client) == expected(cluster)
        assert (tmp_path / "runs").read_text() == "1"  # cached until it expires
        cluster.access.revoke_token(token)
        (tmp_path / "token").write_text(cluster.access.add_token(CLUSTER_READER))
        assert read_all(client) == expected(cluster)
        assert (tmp_path / "runs").read_text() == "2"  # run again after the 401
    info = json.loads((tmp_path / "cluster.json").read_text())
    assert info["server"] == cluster.url
    assert base64.b64decode(info["certificate-authority-data"]) == cluster.ca.cert_pem


def test_exec_plugin_client_certificate(cluster: SecureCluster, tmp_path: Path) -> None:
    script = exec_plugin_script(tmp_path, api_version=V1)
    pair = cluster.ca.issue_client("recorder-cert", ("recorders",))
    (tmp_path / "cert.pem").write_bytes(pair.cert_pem)
    (tmp_path / "key.pem").write_bytes(pair.key_pem)
    path = cluster.kubeconfig(tmp_path / "config", user=exec_user(script, api_version=V1))
    with client_for(path) as client:
        assert read_all(client) == expected(cluster)


def test_missing_exec_plugin_fails_the_poll_with_its_install_hint(
    cluster: SecureCluster, tmp_path: Path, sqlite_url: str
) -> None:
    user = {
        "exec": {
            "apiVersion": V1,
            "command": "kubelogin-not-installed",
            "interactiveMode": "Never",
            "installHint": "Install kubelogin: https://example.invalid/kubelogin",
        }
    }
    path = cluster.kubeconfig(tmp_path / "config", user=user)
    with client_for(path) as client:
        with pytest.raises(CredentialsError, match=r"was not found.*Install kubelogin"):
            client.list_nodes()
        report, registry = poll_with(client, sqlite_url)
    assert not report.ok
    assert errors(registry, "nodes", "credentials") == 1
    assert registry.get_sample_value("recorder_metrics_api_up") == 0


def test_insecure_skip_tls_verify(cluster: SecureCluster, tmp_path: Path) -> None:
    path = cluster.kubeconfig(
        tmp_path / "config", cluster={"insecure-skip-tls-verify": True}, with_ca=False
    )
    with client_for(path) as client:
        assert read_all(client) == expected(cluster)


def test_wrong_ca_is_a_tls_error_naming_the_ca(cluster: SecureCluster, tmp_path: Path) -> None:
    other = CertificateAuthority.generate().cert_pem
    path = cluster.kubeconfig(
        tmp_path / "config",
        cluster={"certificate-authority-data": base64.b64encode(other).decode()},
        with_ca=False,
    )
    with client_for(path) as client, pytest.raises(MetricsApiTLSError) as caught:
        client.list_nodes()
    message = str(caught.value)
    assert caught.value.reason == "tls"
    assert "certificate-authority-data of cluster 'recorder-simulator'" in message
    assert "not signed by that CA" in message


def test_system_trust_store_is_named_when_no_ca_is_given(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    path = cluster.kubeconfig(tmp_path / "config", with_ca=False)
    with client_for(path) as client, pytest.raises(MetricsApiTLSError, match="system trust store"):
        client.list_nodes()


def test_tls_server_name(ca: CertificateAuthority, tmp_path: Path) -> None:
    with secure_cluster(ca=ca, names=["kubernetes.internal.test"]) as cluster:
        named = cluster.kubeconfig(
            tmp_path / "named", cluster={"tls-server-name": "kubernetes.internal.test"}
        )
        with client_for(named) as client:
            assert read_all(client) == expected(cluster)
        unnamed = cluster.kubeconfig(tmp_path / "unnamed")
        with client_for(unnamed) as client, pytest.raises(MetricsApiTLSError) as caught:
            client.list_nodes()
        assert "set tls-server-name" in str(caught.value)


# --- proxies ----------------------------------------------------------------------------------


class _Relay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.connects: list[str] = []


def _pipe(a: socket.socket, b: socket.socket) -> None:
    sockets = [a, b]
    while True:
        readable, _, _ = select.select(sockets, [], [], 5)
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


class _ConnectHandler(socketserver.BaseRequestHandler):
    """A minimal HTTP CONNECT proxy (loopback targets only)."""

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.request.recv(4096)
        target = head.split(b" ")[1].decode()
        host, port = target.rsplit(":", 1)
        assert host == "127.0.0.1"
        self.server.connects.append(target)  # type: ignore[attr-defined]
        with socket.create_connection((host, int(port))) as upstream:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _pipe(self.request, upstream)


class _Socks5Handler(socketserver.BaseRequestHandler):
    """A minimal SOCKS5 proxy: no authentication, CONNECT to IPv4 or a name."""

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            data += self.request.recv(count - len(data))
        return data

    def handle(self) -> None:
        _, methods = self._read(2)
        self._read(methods)
        self.request.sendall(b"\x05\x00")
        _, command, _, kind = self._read(4)
        assert command == 1
        if kind == 1:
            host = socket.inet_ntoa(self._read(4))
        else:
            host = self._read(self._read(1)[0]).decode()
        port = int.from_bytes(self._read(2), "big")
        self.server.connects.append(f"{host}:{port}")  # type: ignore[attr-defined]
        with socket.create_connection(("127.0.0.1", port)) as upstream:
            self.request.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + b"\0\0")
            _pipe(self.request, upstream)


@pytest.mark.parametrize(
    ("scheme", "handler"), [("http", _ConnectHandler), ("socks5", _Socks5Handler)]
)
def test_proxy_url(
    cluster: SecureCluster,
    tmp_path: Path,
    scheme: str,
    handler: type[socketserver.BaseRequestHandler],
) -> None:
    proxy = _Relay(handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        port = proxy.server_address[1]
        path = cluster.kubeconfig(
            tmp_path / "config", cluster={"proxy-url": f"{scheme}://127.0.0.1:{port}"}
        )
        with client_for(path) as client:
            assert read_all(client) == expected(cluster)
        assert proxy.connects and proxy.connects[0].endswith(cluster.url.rsplit(":", 1)[1])
    finally:
        proxy.shutdown()
        proxy.server_close()


# --- discovery --------------------------------------------------------------------------------


class HideV1:
    """Takes ``metrics.k8s.io/v1`` away (as a downgrade would) while ``hidden`` is set."""

    hidden = False

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if HideV1.hidden and path.startswith("/apis/metrics.k8s.io/v1/"):
            body = b'{"kind":"Status","code":404,"message":"the server could not find it"}'
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        if HideV1.hidden and path == "/apis/metrics.k8s.io":
            gv = {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}
            group = {"kind": "APIGroup", "name": "metrics.k8s.io", "versions": [gv]}
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": json.dumps(group).encode()})
            return
        await self._app(scope, receive, send)


def test_v1_is_preferred_and_a_404_rediscovers(ca: CertificateAuthority, tmp_path: Path) -> None:
    with secure_cluster(ca=ca, serve_v1=True, extra_middleware=[Middleware(HideV1)]) as cluster:
        with client_for(cluster.kubeconfig(tmp_path / "config")) as client:
            assert read_all(client) == expected(cluster)
            assert client.version == "v1"
            HideV1.hidden = True
            try:
                assert read_all(client) == expected(cluster)
                assert client.version == "v1beta1"
            finally:
                HideV1.hidden = False


# --- errors: class, reason, message ------------------------------------------------------------


def poll_with(
    client: MetricsClient, sqlite_url: str, **kwargs: Any
) -> tuple[Any, CollectorRegistry]:
    store: Store = open_store(sqlite_url)
    store.migrate()
    try:
        holder = SnapshotHolder()
        registry, metrics = build_registry(holder)
        report = Poller(
            client, Flusher(WriteQueue(), store, metrics), holder, metrics, **kwargs
        ).poll_once()
    finally:
        store.close()
    return report, registry


def errors(registry: CollectorRegistry, resource: str, reason: str) -> float:
    value = registry.get_sample_value(
        "recorder_poll_errors_total", {"resource": resource, "reason": reason}
    )
    return value or 0.0


def test_forbidden_names_the_rule_and_the_identity(cluster: SecureCluster, tmp_path: Path) -> None:
    path = cluster.kubeconfig(tmp_path / "config", user={"token": cluster.team_token})
    with client_for(path) as client:
        with pytest.raises(MetricsApiForbidden) as caught:
            client.list_nodes()
        message = str(caught.value)
        assert caught.value.reason == "forbidden" and caught.value.status == 403
        assert "kubeconfig user 'recorder-simulator'" in message
        assert 'User "system:serviceaccount:shop:kube-metrics-recorder" cannot list' in message
        assert "ClusterRole with apiGroups [metrics.k8s.io], resources [nodes, pods]" in message
        assert "verbs [get, list]" in message and "--namespace" in message
        with pytest.raises(MetricsApiForbidden, match="in namespace kube-system"):
            client.list_pods("kube-system")
        for namespace in TEAM_NAMESPACES:  # what the RoleBindings allow
            decode_pod_list(client.list_pods(namespace))


def test_namespaced_mode_works_where_cluster_wide_is_forbidden(
    cluster: SecureCluster, tmp_path: Path, sqlite_url: str
) -> None:
    path = cluster.kubeconfig(tmp_path / "config", user={"token": cluster.team_token})
    with client_for(path) as client:
        report, registry = poll_with(client, sqlite_url, namespaces=TEAM_NAMESPACES)
        assert report.ok, [str(o.error) for o in report.outcomes]
        frame = cluster.model.frame()
        in_team = sum(len(p.container_names) for p in frame.pods if p.namespace in TEAM_NAMESPACES)
        assert report.written == in_team > 0
        cluster_wide, registry = poll_with(client, sqlite_url)
    assert not cluster_wide.ok
    assert errors(registry, "nodes", "forbidden") == errors(registry, "pods", "forbidden") == 1


def test_group_missing_means_metrics_server_is_not_installed(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    cluster.faults.missing = True
    with client_for(cluster.kubeconfig(tmp_path / "config")) as client:
        with pytest.raises(MetricsApiNotFound) as caught:
            client.list_nodes()
    assert caught.value.reason == "not_found" and caught.value.status == 404
    assert "metrics-server is not installed" in str(caught.value)
    assert "APIService v1beta1.metrics.k8s.io" in str(caught.value)


def test_a_short_503_burst_is_ridden_out_by_retries(cluster: SecureCluster, tmp_path: Path) -> None:
    with client_for(cluster.kubeconfig(tmp_path / "config")) as client:
        client.discover()
        cluster.faults.unavailable(2)
        assert read_all(client) == expected(cluster)
    assert cluster.faults.injected["unavailable"] >= 2


def test_persistent_503_is_unavailable(cluster: SecureCluster, tmp_path: Path) -> None:
    cluster.faults.unavailable(100)
    with client_for(cluster.kubeconfig(tmp_path / "config")) as client:
        with pytest.raises(MetricsApiUnavailable) as caught:
            client.list_nodes()
    assert caught.value.reason == "unavailable" and caught.value.status == 503
    message = str(caught.value)
    assert "installed but unavailable (503 Service Unavailable)" in message
    assert "unable to handle the request" in message and "metrics-server" in message


def test_timeout(cluster: SecureCluster, tmp_path: Path) -> None:
    cluster.faults.slow(1.0)
    policy = RetryPolicy(max_attempts=2, base_delay_seconds=0.01, budget_seconds=0.2)
    config = config_for(cluster.kubeconfig(tmp_path / "config"))
    with MetricsClient(config, timeout_seconds=0.2, retry=policy) as client:
        client.discover()
        with pytest.raises(MetricsApiTimeout) as caught:
            client.list_nodes()
    assert caught.value.reason == "timeout"
    assert "within 0.2 s" in str(caught.value)


@pytest.mark.parametrize("fault", ["truncate", "malformed"])
def test_malformed_bodies_are_counted_not_crashed_on(
    cluster: SecureCluster, tmp_path: Path, sqlite_url: str, fault: str
) -> None:
    with client_for(cluster.kubeconfig(tmp_path / "config")) as client:
        client.discover()
        getattr(cluster.faults, fault)(1)
        with pytest.raises(MalformedResponseError, match="not valid JSON"):
            decode_node_list(client.list_nodes())
        getattr(cluster.faults, fault)(1)
        report, registry = poll_with(client, sqlite_url)
    assert errors(registry, "nodes", "malformed") == 1
    assert report.outcomes[1].error is None


def test_a_fault_belongs_to_the_request_that_arrives_after_it_is_armed(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    """A slow request from before (a client that gave up on it) wakes in the server later;
    it must not take the fault armed for the next request (CI saw this test's neighbour
    fail that way)."""
    cluster.faults.slow(0.6)
    policy = RetryPolicy(max_attempts=1, budget_seconds=1.0)
    config = config_for(cluster.kubeconfig(tmp_path / "config"))
    with MetricsClient(config, timeout_seconds=0.2, retry=policy) as client:
        client.discover()
        with pytest.raises(MetricsApiTimeout):
            client.list_nodes()
        cluster.faults.slow(0.0)
        cluster.faults.malformed(1)
        time.sleep(0.8)  # the abandoned request wakes in the server meanwhile
        with pytest.raises(MalformedResponseError, match="not valid JSON"):
            decode_node_list(client.list_nodes())


def test_certificate_rejected_by_the_server(cluster: SecureCluster, tmp_path: Path) -> None:
    """A client certificate from another CA: the TLS layer drops it, the API says 401."""
    pair = CertificateAuthority.generate().issue_client("intruder")
    user = {
        "client-certificate-data": base64.b64encode(pair.cert_pem).decode(),
        "client-key-data": base64.b64encode(pair.key_pem).decode(),
    }
    path = cluster.kubeconfig(tmp_path / "config", user=user)
    with client_for(path) as client:
        with pytest.raises(MetricsApiTransportError) as caught:
            client.list_nodes()
    assert caught.value.reason in ("connection", "tls")
    assert "does not trust the client certificate" in str(caught.value)
