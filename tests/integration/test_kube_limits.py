"""The Metrics API client's bounds, against real hostile HTTP servers on loopback: a body past
the size limit (announced or not), a gzip bomb, a server dripping bytes, a redirect, and the
trust store the README promises. Each test says the figure it proves."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpcore
import pytest

from recorder.errors import (
    MalformedResponseError,
    MetricsApiRedirected,
    MetricsApiResponseTooLarge,
    MetricsApiTimeout,
    MetricsApiTLSError,
    MetricsApiTransportError,
    MetricsApiUnavailable,
)
from recorder.kube.client import (
    DEFAULT_MAX_RESPONSE_BYTES,
    MetricsClient,
    _DeadlineBackend,
    _until,
)
from recorder.kube.config import ClusterConfig, load_cluster_config
from recorder.kube.decode import decode_node_list
from recorder.kube.retry import RetryPolicy
from recorder.kube.tls import TlsSettings, build_ssl_context
from recorder.simulator.tls import CertificateAuthority
from tests.simcluster import secure_cluster

MIB = 1024 * 1024
ONCE = RetryPolicy(max_attempts=1)
GROUP_PATH = "/apis/metrics.k8s.io"
NODES_PATH = "/apis/metrics.k8s.io/v1beta1/nodes"
GROUP = json.dumps(
    {
        "kind": "APIGroup",
        "name": "metrics.k8s.io",
        "versions": [{"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}],
    }
).encode()
NODES = json.dumps(
    {
        "kind": "NodeMetricsList",
        "items": [
            {
                "metadata": {"name": "n1"},
                "timestamp": "2024-05-01T10:00:00Z",
                "window": "30s",
                "usage": {"cpu": "1", "memory": "1Gi"},
            }
        ],
    }
).encode()
SOCKET_SLACK = 8 * MIB
"""What loopback socket buffers can hold beyond what the client read (tcp_rmem + wmem)."""


# --- a server that writes exactly the bytes a test asks for ----------------------------------


class Gone(Exception):
    """The client closed the connection."""


class Connection:
    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self._sock = sock
        self.stop = stop
        self.sent = 0

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise Gone from exc
        self.sent += len(data)

    def head(self, status: str, *headers: str) -> None:
        lines = [f"HTTP/1.1 {status}", *headers, "Connection: close", "", ""]
        self.send("\r\n".join(lines).encode())


Handler = Callable[[str, Connection], None]


class RawServer:
    """HTTP/1.1 on 127.0.0.1, one thread per connection, every answer written by a handler;
    counts the bytes each connection accepted before the client went away."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sent: dict[str, int] = {}
        """Bytes the kernel accepted per path (body and head) before the client closed."""
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = sock.recv(4096)
                if not data:
                    return
                head += data
            request_line, *lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            path = request_line.split(" ")[1]
            headers = dict(line.split(": ", 1) for line in lines)
            self.requests.append((path, {k.lower(): v for k, v in headers.items()}))
            connection = Connection(sock, self.stop)
            try:
                self._handler(path, connection)
            except Gone:
                pass
            finally:
                self.sent[path] = connection.sent

    def close(self) -> None:
        self.stop.set()
        self._listener.close()


@contextmanager
def serving(handler: Handler) -> Iterator[RawServer]:
    server = RawServer(handler)
    try:
        yield server
    finally:
        server.close()


def answering(nodes: Callable[[Connection], None]) -> Handler:
    """A Metrics API whose discovery works and whose node list is ``nodes``."""

    def handle(path: str, conn: Connection) -> None:
        if path == GROUP_PATH:
            conn.head("200 OK", "Content-Type: application/json", f"Content-Length: {len(GROUP)}")
            conn.send(GROUP)
        else:
            nodes(conn)

    return handle


def client_for(server: RawServer, **kwargs: object) -> MetricsClient:
    kwargs.setdefault("retry", ONCE)
    return MetricsClient(ClusterConfig(server=server.url), **kwargs)  # type: ignore[arg-type]


def traced_peak(call: Callable[[], object]) -> tuple[int, BaseException | None]:
    """Peak bytes Python allocated while ``call`` ran, and what it raised."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    raised: BaseException | None = None
    try:
        call()
    except Exception as exc:
        raised = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


# --- size ---------------------------------------------------------------------------------------


# The node list is read whole, the pod list in the pieces it arrived in (``list_pods``): the
# same bound on both.
LISTS = [("list_nodes", NODES_PATH), ("list_pods", NODES_PATH.replace("/nodes", "/pods"))]


@pytest.mark.parametrize(("listing", "path"), LISTS)
def test_a_200_mb_body_stops_at_the_50_mib_limit(listing: str, path: str) -> None:
    """Figure: of a 200 MB body without Content-Length, the server could hand over at most the
    limit plus socket buffers before the client hung up; Python held at most 1.25x the limit."""
    chunk = b" " * (64 * 1024)

    def huge(conn: Connection) -> None:
        conn.head("200 OK", "Content-Type: application/json")  # length: until close
        for _ in range(200 * MIB // len(chunk)):
            conn.send(chunk)

    with serving(answering(huge)) as server, client_for(server, max_response_bytes=50 * MIB) as c:
        c.discover()
        started = time.monotonic()
        peak, raised = traced_peak(getattr(c, listing))
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 2
        while path not in server.sent and time.monotonic() < deadline:
            time.sleep(0.01)
    assert isinstance(raised, MetricsApiResponseTooLarge), raised
    assert raised.reason == "too_large"
    assert f"is more than {50 * MIB} bytes: the limit" in str(raised)
    assert "RECORDER_MAX_RESPONSE_BYTES" in str(raised) and "--namespace" in str(raised)
    assert server.sent[path] <= 50 * MIB + SOCKET_SLACK
    assert peak <= 1.25 * 50 * MIB + 4 * MIB
    assert elapsed < 3


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """16 gzip members of 64 MiB of zeros each: 1 GiB inflated from about 1 MB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = packer.compress(bytes(64 * MIB)) + packer.flush()
    return member * 16


@pytest.mark.parametrize("listing", [listing for listing, _path in LISTS])
def test_a_gzip_bomb_costs_the_limit_not_a_gigabyte(gzip_bomb: bytes, listing: str) -> None:
    """Figure: a 1 MB gzip bomb (1 GiB inflated) stops as it passes 50 MiB inflated; Python's
    peak stays under 1.25x the limit (the old client inflated all of it: 2-3 GB RSS)."""

    def bomb(conn: Connection) -> None:
        conn.head(
            "200 OK",
            "Content-Type: application/json",
            "Content-Encoding: gzip",
            f"Content-Length: {len(gzip_bomb)}",
        )
        conn.send(gzip_bomb)

    assert len(gzip_bomb) < 1.1 * MIB
    with serving(answering(bomb)) as server, client_for(server, max_response_bytes=50 * MIB) as c:
        c.discover()
        started = time.monotonic()
        peak, raised = traced_peak(getattr(c, listing))
        elapsed = time.monotonic() - started
    assert isinstance(raised, MetricsApiResponseTooLarge), raised
    assert f"inflates to more than {50 * MIB} bytes" in str(raised)
    assert peak <= 1.25 * 50 * MIB + 4 * MIB
    assert elapsed < 3


def test_gzip_bodies_of_several_members_are_read_whole() -> None:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    half = len(NODES) // 2
    first = packer.compress(NODES[:half]) + packer.flush()
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    body = first + packer.compress(NODES[half:]) + packer.flush()

    def gzipped(conn: Connection) -> None:
        conn.head("200 OK", "Content-Encoding: gzip", f"Content-Length: {len(body)}")
        conn.send(body)

    with serving(answering(gzipped)) as server, client_for(server) as client:
        assert client.list_nodes() == NODES
    assert server.requests[-1][1]["accept-encoding"] == "gzip"


def test_a_gzip_body_cut_short_is_malformed() -> None:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    body = (packer.compress(NODES) + packer.flush())[:-12]

    def cut(conn: Connection) -> None:
        conn.head("200 OK", "Content-Encoding: gzip", f"Content-Length: {len(body)}")
        conn.send(body)

    with serving(answering(cut)) as server, client_for(server) as client:
        with pytest.raises(MalformedResponseError, match="could not be decompressed"):
            client.list_nodes()


def test_an_encoding_that_was_not_asked_for_is_malformed() -> None:
    def brotli(conn: Connection) -> None:
        conn.head("200 OK", "Content-Encoding: br", f"Content-Length: {len(NODES)}")
        conn.send(NODES)

    with serving(answering(brotli)) as server, client_for(server) as client:
        with pytest.raises(MalformedResponseError, match="encoded as 'br'"):
            client.list_nodes()


def test_a_content_length_over_the_limit_is_refused_before_reading() -> None:
    """Figure: 10 GiB announced, 0 body bytes read, refused at once."""
    body_sent = threading.Event()

    def announced(conn: Connection) -> None:
        conn.head("200 OK", f"Content-Length: {10 * 1024 * MIB}")
        if not conn.stop.wait(5):
            conn.send(b"{")
            body_sent.set()

    with serving(answering(announced)) as server, client_for(server) as client:
        client.discover()
        started = time.monotonic()
        with pytest.raises(MetricsApiResponseTooLarge) as caught:
            client.list_nodes()
        elapsed = time.monotonic() - started
    assert "announces 10737418240 bytes (Content-Length)" in str(caught.value)
    assert f"the limit is {DEFAULT_MAX_RESPONSE_BYTES} bytes (192 MiB)" in str(caught.value)
    assert elapsed < 1 and not body_sent.is_set()


def test_an_error_answer_is_read_only_for_its_message() -> None:
    """A 503 with a 100 MB body is a 503 (reason unavailable), not a too-large response."""
    status = json.dumps({"kind": "Status", "message": "metrics-server is starting"}).encode()

    def unavailable(conn: Connection) -> None:
        conn.head("503 Service Unavailable", f"Content-Length: {len(status) + 100 * MIB}")
        conn.send(status)
        for _ in range(100):
            conn.send(b" " * MIB)  # JSON allows trailing white space: the cut body still parses

    with serving(answering(unavailable)) as server, client_for(server) as client:
        client.discover()
        with pytest.raises(MetricsApiUnavailable, match="metrics-server is starting"):
            client.list_nodes()
    assert server.sent.get(NODES_PATH, 0) <= SOCKET_SLACK


# --- time ---------------------------------------------------------------------------------------


def drip(head: bytes, interval: float) -> Callable[[Connection], None]:
    """Sends ``head`` one byte per ``interval`` s (then more bytes forever): each read gets a
    byte long before any per-read timeout."""

    def send(conn: Connection) -> None:
        for byte in head:
            conn.send(bytes([byte]))
            if conn.stop.wait(interval):
                return
        while not conn.stop.wait(interval):
            conn.send(b" ")

    return send


BODY_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    "phase",
    [
        pytest.param(lambda conn: drip(b"HTTP/1.1 200 OK\r\n", 1.0)(conn), id="headers"),
        pytest.param(lambda conn: (conn.send(BODY_HEAD), drip(b'{"kind"', 1.0)(conn)), id="body"),
    ],
)
def test_a_dripping_server_fails_the_request_at_its_deadline(
    phase: Callable[[Connection], None],
) -> None:
    """Figure: one byte a second, a 3 s per-read timeout, a 0.4 s deadline: the request fails
    after 0.4 s (the old client waited as long as the drip lasted: 90 s in the field)."""
    with serving(answering(phase)) as server:
        with client_for(server, timeout_seconds=3.0, deadline_seconds=0.4) as client:
            client.discover()
            started = time.monotonic()
            with pytest.raises(MetricsApiTimeout) as caught:
                client.list_nodes()
            elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 0.8
    assert caught.value.reason == "timeout"
    assert "no complete answer" in str(caught.value) and "within 0.4 s" in str(caught.value)


def test_the_deadline_never_runs_past_the_retry_budget() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay_seconds=0.05, budget_seconds=0.5)
    with serving(answering(drip(BODY_HEAD, 0.1))) as server:
        with client_for(server, deadline_seconds=5.0, retry=policy) as client:
            client.discover()
            started = time.monotonic()
            with pytest.raises(MetricsApiTimeout):
                client.list_nodes()
            elapsed = time.monotonic() - started
    assert elapsed < 0.8


def test_a_deadline_passed_before_tls_closes_the_connected_socket() -> None:
    """The connection is made, then the deadline passes before the TLS handshake starts (the
    last retry of a spent budget): the socket is closed there, not left to the garbage
    collector (CI saw its `ResourceWarning` fail an unrelated test)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        backend = _DeadlineBackend(httpcore.SyncBackend())
        with _until(time.monotonic() + 5):
            stream = backend.connect_tcp("127.0.0.1", port, timeout=1.0)
        raw = stream.get_extra_info("socket")
        assert raw.fileno() >= 0
        with _until(time.monotonic() - 1), pytest.raises(httpcore.ConnectTimeout):
            stream.start_tls(ssl.create_default_context(), "localhost", timeout=1.0)
        assert raw.fileno() == -1  # closed


def test_a_retry_left_without_time_reports_the_failure_before_it() -> None:
    """Figure: nothing listens; the one retry's wait (a loaded machine oversleeps) ends past
    the budget. The error is the refused connection, not "the retry budget is spent" (CI saw
    a poll line say `timeout` for a port where nothing listened)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    now = [0.0]

    def oversleep(seconds: float) -> None:
        now[0] += seconds + 1.0

    policy = RetryPolicy(max_attempts=2, base_delay_seconds=0.01, budget_seconds=0.5)
    config = ClusterConfig(server=f"http://127.0.0.1:{port}")
    with MetricsClient(config, retry=policy, clock=lambda: now[0], sleep=oversleep) as client:
        with pytest.raises(MetricsApiTransportError) as caught:
            client.list_nodes()
    assert caught.value.reason == "connection", caught.value
    assert isinstance(caught.value.__cause__, MetricsApiTimeout)


def test_a_normal_answer_is_not_affected_by_the_bounds() -> None:
    def nodes(conn: Connection) -> None:
        conn.head("200 OK", f"Content-Length: {len(NODES)}")
        conn.send(NODES)

    with serving(answering(nodes)) as server, client_for(server, deadline_seconds=1) as client:
        items, bad = decode_node_list(client.list_nodes())
    assert [item.metadata.name for item in items if item.metadata] == ["n1"] and bad == []


# --- where requests go ----------------------------------------------------------------------


def test_a_redirect_is_reported_and_never_followed() -> None:
    with serving(answering(lambda conn: None)) as elsewhere:
        target = f"{elsewhere.url}/login?then=/apis"

        def redirect(path: str, conn: Connection) -> None:
            conn.head("302 Found", f"Location: {target}", "Content-Length: 0")

        with serving(redirect) as server, client_for(server) as client:
            with pytest.raises(MetricsApiRedirected) as caught:
                client.list_nodes()
    message = str(caught.value)
    assert caught.value.reason == "redirect" and caught.value.status == 302
    assert f"answered 302 Found redirecting to {target}" in message
    assert "--api-url" in message and "not valid JSON" not in message
    assert [path for path, _ in server.requests] == [GROUP_PATH]
    assert elsewhere.requests == []


# --- trust --------------------------------------------------------------------------------------


def test_without_a_ca_the_system_trust_store_is_used_not_certifis() -> None:
    """The README says "the system trust store"; httpx's default would be certifi's bundle."""
    context = build_ssl_context(TlsSettings(), None)
    assert context.cert_store_stats() == ssl.create_default_context().cert_store_stats()
    certifi = pytest.importorskip("certifi")
    bundled = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()
    if bundled == context.cert_store_stats():
        pytest.skip("this system's trust store happens to hold exactly certifi's certificates")


def test_ssl_cert_file_is_honoured_and_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with secure_cluster() as cluster:
        kubeconfig = cluster.kubeconfig(tmp_path / "config", with_ca=False)
        config = load_cluster_config(
            api_url=None, kubeconfig=str(kubeconfig), context=None, environ={}
        )
        trusted = tmp_path / "cluster-ca.pem"
        trusted.write_bytes(cluster.ca.cert_pem)
        monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
        with MetricsClient(config, retry=ONCE) as client:
            assert decode_node_list(client.list_nodes())[0]

        other = tmp_path / "other-ca.pem"
        other.write_bytes(CertificateAuthority.generate().cert_pem)
        monkeypatch.setenv("SSL_CERT_FILE", str(other))
        with MetricsClient(config, retry=ONCE) as client:
            with pytest.raises(MetricsApiTLSError) as caught:
                client.list_nodes()
    assert f"using the system trust store ({other}" in str(caught.value)
