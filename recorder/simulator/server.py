"""The simulated Metrics API over HTTP: the paths of the API server's aggregation layer.

Every request goes through `MetricsApi.handle` (routing, selectors, caching, errors), wrapped by
one Starlette endpoint; cross-cutting behaviour plugs in as ASGI middleware passed to
`create_app` (``access.AccessMiddleware`` for authentication and RBAC, ``faults.FaultMiddleware``
for fault injection). `SimulatorServer` and `serve` speak HTTPS when given a `ServerTls`; the
verified client certificate reaches the middleware as the ASGI ``tls`` extension.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from recorder.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from recorder.settings import listen_socket
from recorder.simulator import discovery, wire
from recorder.simulator.core import CoreApi
from recorder.simulator.model import ClusterModel, Frame, SimulatorConfig
from recorder.simulator.replies import GZIP_MIN_BYTES, BodyCache, Reply

__all__ = [
    "MetricsApi",
    "Reply",
    "ServerTls",
    "SimulatorServer",
    "StaticResponses",
    "create_app",
    "serve",
]

logger = logging.getLogger(__name__)

StaticResponses = Mapping[str, bytes | tuple[int, bytes]]
"""Fixed responses by path (``/apis/...``) or path and query (``/apis/...?labelSelector=a``):
a body served with 200, or (status, body)."""

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_NODE_FIELDS = ("metadata.name",)
_POD_FIELDS = ("metadata.name", "metadata.namespace")


class MetricsApi:
    """Routing and rendering of every request; HTTP-agnostic so it is easy to test and wrap."""

    def __init__(
        self,
        model: ClusterModel | None = None,
        static: StaticResponses | None = None,
        *,
        serve_v1: bool = False,
        legacy: bool = False,
        core_api: bool = False,
    ) -> None:
        self._model = model
        self._static = {
            key: Reply(200, value) if isinstance(value, bytes) else Reply(*value)
            for key, value in (static or {}).items()
        }
        self._versions = wire.VERSIONS if serve_v1 else ("v1beta1",)
        self._renderers = {v: wire.Renderer(v, legacy=legacy) for v in self._versions}
        self._discovery = {
            "/apis": wire.api_group_list(self._versions),
            f"/apis/{wire.GROUP}": wire.api_group(self._versions),
        }
        for version in self._versions:
            self._discovery[f"/apis/{wire.GROUP}/{version}"] = wire.api_resource_list(version)
        self._core: CoreApi | None = None
        self._core_wanted = core_api and model is not None
        self._core_lock = threading.Lock()
        if self._core_wanted:
            self._discovery["/apis"] = discovery.group_list(self._versions)
        self._cache = BodyCache()
        self._lock = threading.Lock()

    def handle(self, method: str, path: str, query: str = "") -> Reply:
        if len(path) > 1:
            path = path.rstrip("/")
        static = self._static.get(f"{path}?{query}" if query else path, self._static.get(path))
        if static is not None:
            if method not in ("GET", "HEAD"):
                return Reply(405, wire.method_not_allowed())
            return static
        discovery = self._discovery.get(path)
        parts = path.split("/")[1:]
        is_metrics = (
            len(parts) >= 4 and parts[:2] == ["apis", wire.GROUP] and parts[2] in self._versions
        )
        if discovery is None and not (is_metrics and _resource_shape(parts[3:])):
            return self._core_reply(method, path, query) or Reply(404, wire.path_not_found())
        if method not in ("GET", "HEAD"):
            return Reply(405, wire.method_not_allowed())
        if discovery is not None:
            return Reply(200, discovery)
        if self._model is None:
            return Reply(404, wire.path_not_found())
        with self._lock:
            frame = self._model.frame()
            key = (frame.bucket, path, query)
            reply = self._cache.get(key)
            if reply is None:
                reply = self._render(frame, self._renderers[parts[2]], parts[3:], query)
                if reply.status == 200:
                    self._cache.put(key, reply)
            return reply

    def _core_reply(self, method: str, path: str, query: str) -> Reply | None:
        core = self.core
        return None if core is None else core.handle(method, path, query)

    @property
    def core(self) -> CoreApi | None:
        """The core, apps, batch and autoscaling objects (with ``core_api``), drawn on first
        use: 2 s at 150,000 pods that a metrics-only client never waits for."""
        if not self._core_wanted or self._model is None:
            return None
        with self._core_lock:
            if self._core is None:
                self._core = CoreApi(self._model, metrics_versions=self._versions)
            return self._core

    def open_watch(self, method: str, path: str, query: str) -> Reply | AsyncIterator[bytes]:
        """A ``?watch=1`` request: its event stream, or an error reply."""
        if len(path) > 1:
            path = path.rstrip("/")
        core = self.core
        opened = core.open_watch(path, query) if core is not None else None
        if opened is None:
            return Reply(404, wire.path_not_found())
        if method not in ("GET", "HEAD") and not isinstance(opened, Reply):
            return Reply(405, wire.method_not_allowed())
        return opened

    def _render(self, frame: Frame, renderer: wire.Renderer, rest: list[str], query: str) -> Reply:
        model = self._model
        assert model is not None
        created = wire.rfc3339(max(model.now(), frame.timestamp))
        match rest:
            case ["nodes", node_name]:
                node = model.node(node_name)
                if node is None:
                    return Reply(404, wire.not_found("nodes", node_name))
                (item,) = renderer.node_items(frame, (node.index,), created)
                return Reply(200, renderer.object_body("NodeMetrics", item))
            case ["namespaces", pod_namespace, "pods", pod_name]:
                position = frame.find_pod(pod_namespace, pod_name)
                if position is None:
                    return Reply(404, wire.not_found("pods", pod_name))
                (item,) = renderer.pod_items(frame, (position,), created)
                return Reply(200, renderer.object_body("PodMetrics", item))
            case ["nodes"]:
                try:
                    labels, fields = _selectors(query, _NODE_FIELDS)
                except SelectorError as exc:
                    return Reply(400, wire.bad_request(str(exc)))
                node_positions = [
                    n.index
                    for n in frame.nodes
                    if labels.matches(n.labels) and fields.matches({"metadata.name": n.name})
                ]
                items = renderer.node_items(frame, node_positions, created)
                link = renderer.list_self_link(None, "nodes")
                return Reply(200, renderer.list_body("NodeMetricsList", link, items))
            case _:
                namespace = rest[1] if rest[0] == "namespaces" else None
                try:
                    labels, fields = _selectors(query, _POD_FIELDS)
                except SelectorError as exc:
                    return Reply(400, wire.bad_request(str(exc)))
                pod_positions = _pod_positions(frame, namespace, labels, fields)
                items = renderer.pod_items(frame, pod_positions, created)
                link = renderer.list_self_link(namespace, "pods")
                return Reply(200, renderer.list_body("PodMetricsList", link, items))


def _resource_shape(rest: list[str]) -> bool:
    """Whether the path after ``/apis/metrics.k8s.io/<version>/`` names metrics."""
    match rest:
        case ["nodes"] | ["pods"]:
            return True
        case ["nodes", name]:
            return bool(name)
        case ["namespaces", namespace, "pods"]:
            return bool(namespace)
        case ["namespaces", namespace, "pods", name]:
            return bool(namespace and name)
        case _:
            return False


def _selectors(query: str, fields: Sequence[str]) -> tuple[LabelSelector, FieldSelector]:
    params = parse_qs(query, keep_blank_values=True)
    label_text = params.get("labelSelector", [""])[0]
    field_text = params.get("fieldSelector", [""])[0]
    return parse_label_selector(label_text), parse_field_selector(field_text, fields)


def _pod_positions(
    frame: Frame, namespace: str | None, labels: LabelSelector, fields: FieldSelector
) -> Sequence[int]:
    pods = frame.pods
    if namespace is None and labels.empty and fields.empty:
        return range(len(pods))
    candidates: Sequence[int] = range(len(pods))
    names = fields.values("metadata.name")
    if namespace is not None and len(names) == 1:
        # A fieldSelector naming one pod: look it up instead of scanning.
        position = frame.find_pod(namespace, next(iter(names)))
        candidates = () if position is None else (position,)
    positions = []
    for i in candidates:
        pod = pods[i]
        if namespace is not None and pod.namespace != namespace:
            continue
        if not labels.matches(pod.labels):
            continue
        if not fields.empty and not fields.matches(
            {"metadata.name": pod.name, "metadata.namespace": pod.namespace}
        ):
            continue
        positions.append(i)
    return positions


def create_app(
    model: ClusterModel | None = None,
    static: StaticResponses | None = None,
    serve_v1: bool = False,
    *,
    legacy: bool = False,
    core_api: bool = False,
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    """The simulated Metrics API as an ASGI app.

    ``model`` serves simulated metrics; ``static`` serves fixed bodies for given paths (and wins
    over the model), e.g. real-world responses with odd shapes. Discovery is always served.
    ``serve_v1`` also serves ``metrics.k8s.io/v1`` (preferred); ``legacy`` writes the shapes of
    metrics-server 0.3 (``selfLink``, no labels); ``core_api`` serves the cluster objects
    (pods, nodes, apps, batch, autoscaling; list and watch: see `core`); ``middleware`` wraps
    it all, the first entry outermost.
    """
    api = MetricsApi(model, static, serve_v1=serve_v1, legacy=legacy, core_api=core_api)

    async def endpoint(request: Request) -> Response:
        accepts_gzip = "gzip" in request.headers.get("accept-encoding", "")
        query = request.url.query
        if "watch=" in query and _watching(query):
            opened = await anyio.to_thread.run_sync(
                api.open_watch, request.method, request.url.path, query
            )
            if not isinstance(opened, Reply):
                return StreamingResponse(
                    opened,
                    media_type="application/json",
                    headers={"Cache-Control": "no-cache, private"},
                )
            reply = opened
        else:
            reply = await anyio.to_thread.run_sync(
                api.handle, request.method, request.url.path, query
            )
        headers = {"Cache-Control": "no-cache, private"}
        body = reply.body
        if accepts_gzip and len(body) >= GZIP_MIN_BYTES:
            body = await anyio.to_thread.run_sync(reply.gzipped)
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        return Response(body, reply.status, headers, media_type="application/json")

    return Starlette(
        routes=[Route("/{path:path}", endpoint, methods=_METHODS)], middleware=list(middleware)
    )


def _watching(query: str) -> bool:
    return parse_qs(query).get("watch", [""])[0].lower() in ("1", "true")


def _bind(host: str, port: int) -> socket.socket:
    return listen_socket(host, port, what="simulator")


def _url(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class ServerTls:
    """HTTPS for the simulator: its certificate and key (PEM), and the CA whose client
    certificates it accepts (asked for, not required: token clients need none)."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    client_ca_pem: bytes | None = None


class _TlsScopeProtocol(H11Protocol):
    """uvicorn's h11 protocol, adding the ASGI ``tls`` extension (the verified client
    certificate chain) to each request's scope, which uvicorn does not do itself."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        tls = {
            "server_cert": None,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": None,
            "cipher_suite": None,
        }
        inner = self.app

        async def with_tls(scope: Scope, receive: Receive, send: Send) -> None:
            scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
            await inner(scope, receive, send)

        self.app = with_tls


def _uvicorn(app: ASGIApp, log_level: str, tls: ServerTls | None = None) -> uvicorn.Server:
    """A uvicorn server, its configuration loaded (with TLS, the key never stays on disk)."""
    options: dict[str, Any] = {}
    directory: Path | None = None
    if tls is not None:
        directory = Path(tempfile.mkdtemp(prefix="recorder-simulator-tls-"))
        options = {
            "ssl_certfile": _private_file(directory / "server.crt", tls.cert_pem),
            "ssl_keyfile": _private_file(directory / "server.key", tls.key_pem),
            "http": _TlsScopeProtocol,
        }
        if tls.client_ca_pem is not None:
            options["ssl_ca_certs"] = _private_file(directory / "client-ca.crt", tls.client_ca_pem)
            options["ssl_cert_reqs"] = ssl.CERT_OPTIONAL
    config = uvicorn.Config(
        app,
        log_level=log_level,
        log_config=None,  # uvicorn's lines go through the process's logging, as ours do
        access_log=False,
        server_header=False,
        lifespan="off",
        http=options.pop("http", "h11"),
        ws="none",
        timeout_graceful_shutdown=5,
        **options,
    )
    try:
        config.load()  # reads the certificate files into an SSLContext
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    return uvicorn.Server(config)


def _private_file(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return str(path)


class SimulatorServer:
    """Runs an app with uvicorn in a background thread on a loopback port (0 = any free one).

    >>> with SimulatorServer(create_app(ClusterModel(SimulatorConfig()))) as server:
    ...     httpx.get(f"{server.url}/apis/metrics.k8s.io/v1beta1/nodes")
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        tls: ServerTls | None = None,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._log_level = log_level
        self._tls = tls
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._url = ""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with TLS), once started."""
        if not self._url:
            raise RuntimeError("the simulator server is not running")
        return self._url

    def start(self, timeout: float = 10.0) -> None:
        server = _uvicorn(self._app, self._log_level, self._tls)
        sock = _bind(self._host, self._port)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="metrics-simulator", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(timeout)
                sock.close()
                raise RuntimeError("the simulated Metrics API did not start")
            time.sleep(0.005)
        scheme = "https" if self._tls is not None else "http"
        self._server, self._thread, self._url = server, thread, _url(sock, scheme)

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._server = self._thread = None
        self._url = ""

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    config: SimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    serve_v1: bool = False,
    *,
    legacy: bool = False,
    log_level: str = "warning",
    clock: Callable[[], float] = time.time,
    core_api: bool = False,
    middleware: Sequence[Middleware] = (),
    tls: ServerTls | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve a simulated cluster until interrupted (``recorder simulate``).

    Logs the URL it listens on and passes it to ``on_listening`` (e.g. to write a kubeconfig);
    raises `ConfigError` when it cannot bind ``host:port``; returns after Ctrl-C.
    """
    started = time.perf_counter()
    model = ClusterModel(config, clock)
    model.frame()  # build the cluster and its first frame before accepting requests
    app = create_app(
        model, serve_v1=serve_v1, legacy=legacy, core_api=core_api, middleware=middleware
    )
    server = _uvicorn(app, log_level, tls)
    sock = _bind(host, port)
    url = _url(sock, "https" if tls is not None else "http")
    logger.info(
        "simulated Metrics API listening on %s (%d nodes, %d pods, seed %d, resolution %gs, "
        "ready in %.1fs)",
        url,
        config.nodes,
        config.pods,
        config.seed,
        config.resolution_seconds,
        time.perf_counter() - started,
    )
    if tls is None:
        logger.info("try: kubectl --server %s get --raw /apis/%s/v1beta1/nodes", url, wire.GROUP)
    if on_listening is not None:
        on_listening(url)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after shutting down cleanly
        logger.info("simulated Metrics API stopped")
