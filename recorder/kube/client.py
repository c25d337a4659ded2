"""HTTP client for ``metrics.k8s.io``: discovery, list calls, retries, and one place mapping
errors to messages that say what to do.

Every request is bounded:
- in time, as a whole: connect, headers and body must finish within ``deadline_seconds`` (and
  within what is left of the retry budget). httpx's timeouts apply to each read, so a server
  sending a byte a second would never trip them; here every socket operation waits at most
  until the request's deadline (``_DeadlineBackend``), and the body loop checks it too;
- in size: a ``Content-Length`` above ``max_response_bytes`` is refused before reading, and the
  body is read in chunks, inflated here with a bound (gzip, the only coding the API server
  uses), and abandoned as soon as either the bytes on the wire or the inflated bytes pass the
  limit, so a gzip bomb costs the limit, not gigabytes;
- in where it goes: redirects are reported, never followed, so credentials stay with the host
  they were configured for.
"""

from __future__ import annotations

import contextvars
import io
import logging
import ssl
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import urlencode

import httpcore
import httpx

from recorder import __version__
from recorder.errors import (
    ConfigError,
    DecodeError,
    MalformedResponseError,
    MetricsApiError,
    MetricsApiForbidden,
    MetricsApiNotFound,
    MetricsApiRedirected,
    MetricsApiResponseTooLarge,
    MetricsApiThrottled,
    MetricsApiTimeout,
    MetricsApiTLSError,
    MetricsApiTransportError,
    MetricsApiUnauthorized,
    MetricsApiUnavailable,
)
from recorder.kube.config import ClusterConfig
from recorder.kube.decode import decode_group, decode_status
from recorder.kube.retry import RetryPolicy
from recorder.kube.tls import ClientCertificate, build_ssl_context, system_trust_store
from recorder.settings import redact_url

log = logging.getLogger(__name__)

GROUP = "metrics.k8s.io"
PREFERRED_VERSIONS = ("v1", "v1beta1")
DISCOVERY_TTL_SECONDS = 600.0
"""Discovery is also refreshed this often, so an upgrade to ``v1`` is noticed without a 404."""
RBAC_RULE = "apiGroups [metrics.k8s.io], resources [nodes, pods], verbs [get, list]"
_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
DEFAULT_MAX_RESPONSE_BYTES = 192 * 1024 * 1024
"""The largest body accepted, on the wire and inflated: a 150,000-pod PodMetricsList is about
69 MB of JSON, so this leaves room for the largest clusters metrics-server supports."""
ERROR_BODY_BYTES = 64 * 1024
"""How much of an error answer (3xx, 4xx, 5xx) is read for its message; the rest is dropped."""
_INFLATE_ANY = zlib.MAX_WBITS | 32  # a gzip or zlib header, told apart by zlib itself
_INFLATED_ENCODINGS = ("gzip", "x-gzip", "deflate")
_INFLATE_STEP = 1024 * 1024
_MIB = 1024 * 1024
T = TypeVar("T")


class MetricsClient:
    """Reads the Metrics API. Bodies are returned as bytes, or handed over in pieces as they
    arrive (``read_pods``); decoding is the caller's step."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        timeout_seconds: float = 10.0,
        deadline_seconds: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """``timeout_seconds`` bounds each network operation; ``deadline_seconds`` (default:
        the same) the whole of one request, body included; ``max_response_bytes`` its body,
        compressed and inflated."""
        self.config = config
        self.retry = retry or RetryPolicy()
        self._timeout = timeout_seconds
        self._deadline = timeout_seconds if deadline_seconds is None else deadline_seconds
        self._max_bytes = max_response_bytes
        self._clock = clock
        self._sleep = sleep
        self._extensions = (
            {"sni_hostname": config.tls.server_name} if config.tls.server_name else {}
        )
        self._certificate: ClientCertificate | None = None
        self._http: httpx.Client | None = None
        if not (config.credentials and config.credentials.uses_exec):
            # Build now, so a bad CA or key is a configuration error at start-up; an exec
            # plugin runs only when the first request needs it.
            self._http = self._build(self._current_certificate())
        self._version: str | None = None
        self._discovered_at = 0.0

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> MetricsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> str | None:
        """The discovered group version (``v1`` or ``v1beta1``), once known."""
        return self._version

    # --- the calls ------------------------------------------------------------------------

    def discover(self, *, refresh: bool = False) -> str:
        fresh = self._clock() - self._discovered_at < DISCOVERY_TTL_SECONDS
        if self._version is not None and fresh and not refresh:
            return self._version
        response = self._get(f"/apis/{GROUP}", what=f"the {GROUP} API group", group=True)
        group = decode_group(response.body)
        served = {v.version for v in group.versions}
        for version in PREFERRED_VERSIONS:
            if version in served:
                if self._version is not None and version != self._version:
                    log.info("%s is now read through %s (was %s)", GROUP, version, self._version)
                self._version = version
                self._discovered_at = self._clock()
                return version
        raise MetricsApiNotFound(
            f"{GROUP} at {self.config.server} serves versions {sorted(served)}, none of which "
            f"this recorder reads ({', '.join(PREFERRED_VERSIONS)}); upgrade the recorder",
            status=200,
        )

    def list_nodes(self) -> bytes:
        return self._list("nodes", resource="nodes", namespace=None).body

    def list_pods(self, namespace: str | None = None) -> list[bytes]:
        """The PodMetricsList in the pieces it arrived in (inflated, never joined)."""
        return self.read_pods(list, namespace)

    def read_pods(self, consume: Callable[[Iterator[bytes]], T], namespace: str | None = None) -> T:
        """What ``consume`` makes of the PodMetricsList, handed to it inflated, in pieces, as
        they arrive: nothing holds the whole text (64 MB at 150,000 pods), and ``decode.
        PodItems`` types and lets go of each few MB while the rest is on its way.

        The body is bounded as every answer is (the size limit; the deadline, which stands
        still while ``consume`` works on a piece, so a slow consumer does not time out a fast
        server). A failure while it arrives raises from the iteration (the same errors as a
        whole read: a timeout, a reset connection, too large, broken gzip) and is retried like
        a failed request: ``consume`` is called again with a new body, so whatever it made of
        the broken one must be thrown away, which the exception leaving it does."""
        path = f"namespaces/{namespace}/pods" if namespace else "pods"
        reply = self._list(path, resource="pods", namespace=namespace, consume=consume)
        return cast(T, reply.consumed)

    def _list(
        self,
        path: str,
        *,
        resource: str,
        namespace: str | None,
        consume: Callable[[Iterator[bytes]], object] | None = None,
    ) -> _Reply:
        kind = "NodeMetrics" if resource == "nodes" else "PodMetrics"
        scope = f"in namespace {namespace}" if namespace else "in all namespaces"
        what = f"{kind} ({resource}.{GROUP})" + ("" if resource == "nodes" else f" {scope}")
        version = self.discover()
        try:
            url = f"/apis/{GROUP}/{version}/{path}"
            return self._get(url, what=what, namespace=namespace, consume=consume)
        except MetricsApiNotFound:
            # The served version may have changed (an upgrade to v1): discover again, once.
            fresh = self.discover(refresh=True)
            url = f"/apis/{GROUP}/{fresh}/{path}"
            return self._get(url, what=what, namespace=namespace, consume=consume)

    # --- cluster objects of the core API: list pages and watches ----------------------------

    def list_objects(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        what: str,
        rbac_rule: str,
        namespace: str | None = None,
    ) -> bytes:
        """One page of a list of core-API objects (``path`` such as ``/api/v1/pods``; the caller
        sets ``limit`` and ``continue``), bounded and retried like a Metrics API read. A 403
        names ``rbac_rule``; a 410 (an expired ``continue``) is a ``MetricsApiError`` with
        ``status`` 410."""
        url = f"{path}?{urlencode(params)}" if params else path
        return self._get(url, what=what, namespace=namespace, objects_rule=rbac_rule).body

    def get_object(self, path: str, *, what: str, rbac_rule: str) -> bytes:
        """One core-API object (``path`` such as ``/api/v1/namespaces/kube-system``), bounded
        and retried like a list page; a 403 names ``rbac_rule``, a 404 is
        ``MetricsApiNotFound``."""
        return self._get(path, what=what, objects_rule=rbac_rule).body

    @contextmanager
    def watch_objects(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        what: str,
        rbac_rule: str,
        namespace: str | None = None,
        idle_seconds: float,
        deadline_seconds: float,
        max_line_bytes: int,
    ) -> Iterator[Iterator[bytes]]:
        """A watch: the event lines of one streamed response (``watch=1`` is added), read
        within bounds. No read waits longer than ``idle_seconds`` (bookmarks keep a quiet watch
        talking), the whole stream ends by ``deadline_seconds`` (ask the server for a shorter
        ``timeoutSeconds``), and a line longer than ``max_line_bytes`` fails it. Failures are
        the same ``MetricsApiError`` classes as a list's, raised on opening or while reading
        lines; no retry here (the caller watches again)."""
        url = f"{path}?{urlencode({**params, 'watch': '1'})}"
        http, headers = self._connection()
        deadline = time.monotonic() + deadline_seconds
        timeout = httpx.Timeout(self._timeout, read=idle_seconds)
        try:
            with (
                _until(deadline),
                http.stream(
                    "GET", url, headers=headers, extensions=self._extensions, timeout=timeout
                ) as response,
            ):
                if response.status_code >= 300:
                    body = self._read_body(response, what, ERROR_BODY_BYTES, deadline)
                    reply = _Reply(
                        response.status_code, response.reason_phrase, response.headers, body
                    )
                    credentials = self.config.credentials
                    if reply.status == 401 and credentials is not None:
                        credentials.refresh()  # the next watch sends the fresh credential
                    if reply.status < 400:
                        self._redirected(reply, what)
                    self._raise_for_objects(reply, what, rbac_rule, namespace)
                    self._raise_for(reply, what, group=False, namespace=namespace)
                yield self._lines(response, what, max_line_bytes, idle_seconds)
        except httpx.TimeoutException as exc:
            raise MetricsApiTimeout(
                f"the watch of {what} on {self.config.server} stayed silent for "
                f"{idle_seconds:g} s or passed its {deadline_seconds:g} s deadline"
            ) from exc
        except httpx.RequestError as exc:
            raise self._request_failure(exc, what, watching=True) from exc

    def _lines(
        self, response: httpx.Response, what: str, max_line_bytes: int, idle_seconds: float
    ) -> Iterator[bytes]:
        """The non-empty lines of a watch body, inflated if it is compressed."""
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity", *_INFLATED_ENCODINGS):
            raise MalformedResponseError(
                f"the watch of {what} from {self.config.server} is encoded as {encoding!r}, "
                "which the recorder did not ask for: a proxy in between changed it"
            )
        inflater = zlib.decompressobj(_INFLATE_ANY) if encoding in _INFLATED_ENCODINGS else None
        pending = b""
        for chunk in response.iter_raw():
            pieces = [chunk]
            if inflater is not None:
                pieces = []
                data = chunk
                while data:
                    out = inflater.decompress(data, max_line_bytes + 1)
                    pieces.append(out)
                    data = inflater.unconsumed_tail
                    if len(pending) + sum(map(len, pieces)) > 2 * max_line_bytes + 2:
                        break  # split below, or fail as too long
            for piece in pieces:
                pending += piece
                while True:
                    end = pending.find(b"\n")
                    if end < 0:
                        break
                    line, pending = pending[:end], pending[end + 1 :]
                    if len(line) > max_line_bytes:
                        raise self._line_too_long(what, max_line_bytes)
                    if line.strip():
                        yield line
                if len(pending) > max_line_bytes:
                    raise self._line_too_long(what, max_line_bytes)
        if pending.strip():
            yield pending

    def _line_too_long(self, what: str, limit: int) -> MetricsApiResponseTooLarge:
        return MetricsApiResponseTooLarge(
            f"an event of the watch of {what} from {self.config.server} is longer than "
            f"{limit} bytes, the limit of one object: reading stopped there"
        )

    def _connection(self) -> tuple[httpx.Client, list[tuple[str, str]]]:
        """The HTTP client (rebuilt when the client certificate changed) and the headers of
        the current credential."""
        headers: list[tuple[str, str]] = []
        credentials = self.config.credentials
        http = self._http
        if credentials is not None:
            certificate = self._current_certificate()
            if http is None or certificate != self._certificate:
                if http is not None:
                    log.info("the client certificate changed; reconnecting with the new one")
                    http.close()
                http = self._http = self._build(certificate)
            headers = credentials.headers()
        assert http is not None
        return http, headers

    def _raise_for_objects(
        self, response: _Reply, what: str, rule: str, namespace: str | None
    ) -> None:
        """The errors of a core-API read whose meaning differs from a Metrics API read's:
        403 (the cluster-objects RBAC is missing), 404 (not served), 410 (expired) and 5xx."""
        status = response.status
        body = decode_status(response.body)
        detail = f"; the API server says: {body.message}" if body and body.message else ""
        if status == 403:
            where = f"in namespace {namespace} " if namespace else ""
            raise MetricsApiForbidden(
                f"{self._who()} may not read {what} {where}(403 Forbidden){detail}. Grant it "
                f"{rule}",
                status=status,
            )
        if status == 404:
            raise MetricsApiNotFound(
                f"the API server at {self.config.server} does not serve {what} (404){detail}",
                status=status,
            )
        if status == 410:
            raise MetricsApiError(
                f"the resource version of {what} is too old (410 Gone){detail}", status=status
            )
        if status >= 500:
            error = MetricsApiUnavailable(
                f"the API server answered {status} {response.reason_phrase} while reading "
                f"{what}{detail}",
                status=status,
            )
            error.retry_after_seconds = _retry_after(response)
            raise error

    # --- one request, with retries --------------------------------------------------------

    def _get(
        self,
        url: str,
        *,
        what: str,
        group: bool = False,
        namespace: str | None = None,
        objects_rule: str | None = None,
        consume: Callable[[Iterator[bytes]], object] | None = None,
    ) -> _Reply:
        started = self._clock()
        budget_ends = started + self.retry.budget_seconds
        attempt = 0
        previous: MetricsApiError | None = None
        while True:
            try:
                return self._attempt(
                    url,
                    what=what,
                    group=group,
                    namespace=namespace,
                    budget_ends=budget_ends,
                    objects_rule=objects_rule,
                    consume=consume,
                )
            except MetricsApiError as exc:
                if previous is not None and isinstance(exc, MetricsApiTimeout) and exc.cut_short:
                    # A retry left with a sliver of the budget timed out: the failure before
                    # it (a refused connection, a 503) is what the user needs to read.
                    raise previous from exc
                credentials = self.config.credentials
                delay = self.retry.next_delay(
                    exc,
                    attempt=attempt,
                    elapsed_seconds=self._clock() - started,
                    retry_after_seconds=(
                        exc.retry_after_seconds if isinstance(exc, MetricsApiUnavailable) else None
                    ),
                    credentials_refreshable=bool(credentials and credentials.refreshable),
                )
                if delay is None:
                    raise
                # DEBUG: the poll's one line says the failure if the last attempt fails too.
                log.debug(
                    "reading %s failed (%s); retrying in %.2fs (attempt %d of %d)",
                    what,
                    exc.reason,
                    delay,
                    attempt + 2,
                    self.retry.max_attempts,
                )
                self._sleep(delay)
                attempt += 1
                previous = exc

    def _attempt(
        self,
        url: str,
        *,
        what: str,
        group: bool,
        namespace: str | None,
        budget_ends: float,
        objects_rule: str | None = None,
        consume: Callable[[Iterator[bytes]], object] | None = None,
    ) -> _Reply:
        reply = self._send(url, what, budget_ends, consume=consume)
        credentials = self.config.credentials
        if reply.status == 401 and credentials is not None and credentials.refresh():
            # A rotated token or an expired plugin credential: the new one, straight away.
            log.info("the API server rejected the credentials; re-sending with fresh ones")
            reply = self._send(url, what, budget_ends, consume=consume)
        if 300 <= reply.status < 400:
            self._redirected(reply, what)
        if reply.status >= 400:
            if objects_rule is not None:
                self._raise_for_objects(reply, what, objects_rule, namespace)
            self._raise_for(reply, what, group=group, namespace=namespace)
        return reply

    def _send(
        self,
        url: str,
        what: str,
        budget_ends: float,
        *,
        consume: Callable[[Iterator[bytes]], object] | None = None,
    ) -> _Reply:
        """One request, bounded by the deadline and the size limit. ``consume``: a successful
        answer's body is handed to it as it arrives (``_streamed``), and what it returns is
        ``_Reply.consumed``."""
        http, headers = self._connection()
        seconds = min(self._deadline, budget_ends - self._clock())
        if seconds <= 0:
            spent = MetricsApiTimeout(
                f"the retry budget of {self.retry.budget_seconds:g} s for reading {what} is "
                "spent; the next poll tries again"
            )
            spent.cut_short = True
            raise spent
        deadline = time.monotonic() + seconds
        try:
            with (
                _until(deadline),
                http.stream("GET", url, headers=headers, extensions=self._extensions) as response,
            ):
                ok = response.status_code < 300
                status, phrase = response.status_code, response.reason_phrase
                if ok and consume is not None:
                    consumed = consume(self._streamed(response, what, deadline))
                    return _Reply(status, phrase, response.headers, consumed=consumed)
                limit = self._max_bytes if ok else ERROR_BODY_BYTES
                read = self._read_body(response, what, limit, deadline)
                return _Reply(status, phrase, response.headers, read)
        except httpx.TimeoutException as exc:
            raise self._timeout_error(what, seconds) from exc
        except httpx.RequestError as exc:
            raise self._request_failure(exc, what) from exc

    def _timeout_error(self, what: str, seconds: float) -> MetricsApiTimeout:
        limit = f"{seconds:.3g} s"
        if seconds < self._deadline:
            limit += (
                f" (the {self._deadline:g} s request deadline, cut to what was left of the "
                "poll's retry budget)"
            )
        error = MetricsApiTimeout(
            f"no complete answer from {self.config.server} within {limit} while "
            f"reading {what}: the API server or metrics-server is overloaded or unreachable, "
            "or something in between sends the answer very slowly. Check metrics-server "
            "(`kubectl -n kube-system get pods -l k8s-app=metrics-server`) or raise "
            "RECORDER_REQUEST_TIMEOUT_SECONDS"
        )
        error.cut_short = seconds < self._deadline
        return error

    def _read_body(self, response: httpx.Response, what: str, limit: int, deadline: float) -> bytes:
        """The body, inflated, or an error as soon as it passes ``limit`` or the deadline.

        An error answer (``limit`` is then ``ERROR_BODY_BYTES``) is cut, not refused: its
        status says what happened, the body only adds the API server's message.
        """
        error_answer = response.status_code >= 300
        body = self._bounded(response, what, limit, error_answer=error_answer)
        if body is None:
            return b""
        try:
            for chunk in response.iter_raw():
                body.add(chunk)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the request's deadline has passed")
            return body.finish()
        except (_TooLarge, zlib.error) as exc:
            if error_answer:  # its status tells the story; what could be read adds to it
                return body.partial()
            raise self._unreadable(what, exc) from (None if isinstance(exc, _TooLarge) else exc)

    def _streamed(self, response: httpx.Response, what: str, deadline: float) -> Iterator[bytes]:
        """A successful answer's body, inflated, a piece at a time as it arrives, bounded as
        ``_read_body`` bounds it. The deadline (that of every socket operation too) is moved
        on by the time the consumer spends between pieces: it bounds the server, not us."""
        body = self._bounded(response, what, self._max_bytes, error_answer=False, pieces=True)
        assert body is not None  # a successful answer is refused, not emptied
        try:
            for chunk in response.iter_raw():
                body.add(chunk)
                pieces = body.take()
                if pieces:
                    handed = time.monotonic()
                    yield from pieces
                    deadline += time.monotonic() - handed
                    _DEADLINE.set(deadline)  # ``_until`` in ``_send`` restores the outer one
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the request's deadline has passed")
            body.finish()
            yield from body.take()
        except (_TooLarge, zlib.error) as exc:
            raise self._unreadable(what, exc) from (None if isinstance(exc, _TooLarge) else exc)

    def _bounded(
        self,
        response: httpx.Response,
        what: str,
        limit: int,
        *,
        error_answer: bool,
        pieces: bool = False,
    ) -> _BoundedBody | None:
        """The collector of a body, after its headers are checked (``None``: an error answer
        whose body cannot be read, which its status explains)."""
        declared = response.headers.get("Content-Length", "")
        if not error_answer and declared.isdigit() and int(declared) > limit:
            raise self._too_large(what, f"announces {int(declared)} bytes (Content-Length)")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity", *_INFLATED_ENCODINGS):
            if error_answer:
                return None
            raise MalformedResponseError(
                f"the response for {what} from {self.config.server} is encoded as "
                f"{encoding!r}, which the recorder did not ask for (it accepts gzip): a proxy "
                "in between changed it"
            )
        return _BoundedBody(limit, inflate=encoding in _INFLATED_ENCODINGS, pieces=pieces)

    def _unreadable(self, what: str, exc: _TooLarge | zlib.error) -> MetricsApiError | DecodeError:
        if isinstance(exc, _TooLarge):
            return self._too_large(what, str(exc))
        return MalformedResponseError(
            f"the response for {what} from {self.config.server} could not be decompressed "
            f"({exc}): it was cut short, or a proxy changed it"
        )

    def _too_large(self, what: str, how: str) -> MetricsApiResponseTooLarge:
        limit = self._max_bytes
        return MetricsApiResponseTooLarge(
            f"the response for {what} from {self.config.server} {how}: the limit is {limit} "
            f"bytes ({limit / _MIB:.0f} MiB), and reading stopped there. A PodMetricsList "
            "takes about 460 bytes per pod: if the cluster is that large, raise "
            "RECORDER_MAX_RESPONSE_BYTES (and the memory limit with it), or read fewer pods "
            "with --namespace; otherwise something other than the API server answers"
        )

    def _redirected(self, reply: _Reply, what: str) -> NoReturn:
        location = reply.headers.get("Location") or "nowhere (no Location header)"
        raise MetricsApiRedirected(
            f"the server at {self.config.server} answered {reply.status} "
            f"{reply.reason_phrase} redirecting to {location} while reading {what}: it is not "
            "the Kubernetes API server (a login page, a load balancer or an ingress answers "
            "there). Point --api-url or the kubeconfig's cluster server at the API server "
            "itself; redirects are not followed, so credentials never go to another host",
            status=reply.status,
        )

    # --- building the HTTP client ---------------------------------------------------------

    def _current_certificate(self) -> ClientCertificate | None:
        credentials = self.config.credentials
        return credentials.certificate() if credentials is not None else None

    def _build(self, certificate: ClientCertificate | None) -> httpx.Client:
        config = self.config
        if config.server.startswith("https://"):
            verify = build_ssl_context(config.tls, certificate)
        else:
            verify = ssl.create_default_context()  # unused for http://, but never certifi's
        proxy: httpx.Proxy | str | None = config.proxy
        if config.proxy is not None and config.proxy.startswith("https://"):
            # An https:// proxy is verified with the system trust store too, as the docs say.
            proxy = httpx.Proxy(config.proxy, ssl_context=ssl.create_default_context())
        self._certificate = certificate
        try:
            client = httpx.Client(
                base_url=config.server,
                verify=verify,
                proxy=proxy,
                timeout=self._timeout,
                follow_redirects=False,
                headers={
                    "Accept": "application/json",
                    "Accept-Encoding": "gzip",
                    "User-Agent": f"kube-metrics-recorder/{__version__}",
                },
            )
        except ImportError as exc:  # a socks5:// proxy-url without socksio
            raise ConfigError(
                f"proxy-url {redact_url(config.proxy or '')} needs SOCKS support: "
                "pip install 'httpx[socks]'"
            ) from exc
        if not _bound_every_read(client):
            log.warning(
                "this httpx/httpcore version hides its connection pool: a request's deadline "
                "is checked between body chunks only, not within each read"
            )
        return client

    # --- messages -------------------------------------------------------------------------

    def _who(self) -> str:
        return self.config.identity or "the configured identity"

    def _tls_message(self, error: ssl.SSLError) -> str:
        config = self.config
        name = f" (checking the name {config.tls.server_name!r})" if config.tls.server_name else ""
        trusted = config.tls.ca_source
        if config.tls.ca_pem is None and not config.tls.insecure:
            trusted = system_trust_store()
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = error.verify_message or error.reason or str(error)
            if error.verify_code in _NAME_MISMATCH:
                fix = (
                    "the certificate does not name this host: connect by a name it holds, or "
                    "set tls-server-name in the kubeconfig's cluster to one of them"
                )
            else:
                fix = (
                    "the server's certificate is not signed by that CA: fix "
                    "certificate-authority(-data) in the kubeconfig's cluster (or, in a pod, "
                    "the mounted ca.crt)"
                )
            return (
                f"TLS verification of {config.server} failed ({detail}) using "
                f"{trusted}{name}: {fix}"
            )
        return (
            f"the TLS handshake with {config.server} failed ({error.reason or error}) using "
            f"{trusted}{name}: if the server asks for a client certificate, check "
            "client-certificate(-data) and client-key(-data); otherwise check that the server "
            "speaks HTTPS on that port"
        )

    def _request_failure(
        self, exc: httpx.RequestError, what: str, *, watching: bool = False
    ) -> MetricsApiError:
        """What a request (a read, or a watch) that failed below HTTP raises."""
        if isinstance(exc, httpx.TransportError):
            tls_error = _ssl_cause(exc)
            if tls_error is not None:
                return MetricsApiTLSError(self._tls_message(tls_error))
            return MetricsApiTransportError(self._transport_message(exc, what))
        doing = f"watching {what} on" if watching else f"reading {what} from"
        return MetricsApiTransportError(f"{doing} {self.config.server} failed: {exc}")

    def _transport_message(self, exc: httpx.TransportError, what: str) -> str:
        config = self.config
        if isinstance(exc, httpx.ProxyError):
            return f"the proxy {redact_url(config.proxy or '')} failed while reading {what}: {exc}"
        if isinstance(exc, httpx.RemoteProtocolError):
            hint = "a proxy or load balancer may be cutting responses"
            if self._certificate is not None:
                source = self._certificate.source
                hint = (
                    f"a server that does not trust the client certificate ({source}) closes "
                    "the connection like this; check that it is signed by the cluster's client "
                    f"CA and not expired. Otherwise {hint}"
                )
            return f"the connection to {config.server} broke while reading {what} ({exc}): {hint}"
        return f"cannot reach the Kubernetes API at {config.server} ({config.source}): {exc}"

    def _raise_for(
        self, response: _Reply, what: str, *, group: bool, namespace: str | None
    ) -> NoReturn:
        status = response.status
        body = decode_status(response.body)
        detail = f"; the API server says: {body.message}" if body and body.message else ""
        if status == 401:
            sent = "no credentials" if self.config.credentials is None else "credentials"
            raise MetricsApiUnauthorized(
                f"the Kubernetes API at {self.config.server} rejected the {sent} of "
                f"{self._who()} from {self.config.source} (401 Unauthorized){detail}. The token "
                "or certificate is expired, revoked or for another cluster: log in again or "
                "refresh the kubeconfig (in a pod, check the service-account token mount)",
                status=status,
            )
        if status == 403:
            raise MetricsApiForbidden(self._forbidden(what, namespace, detail), status=status)
        if status == 404 and group:
            raise MetricsApiNotFound(
                f"the API server at {self.config.server} does not serve {GROUP} (404 on "
                f"/apis/{GROUP}): metrics-server is not installed, or its APIService "
                f"v1beta1.{GROUP} is missing. Install metrics-server, then check that "
                f"`kubectl get apiservice v1beta1.{GROUP}` shows Available True",
                status=status,
            )
        if status == 404:
            raise MetricsApiNotFound(
                f"{what} was not found (404){detail}: the APIService of {GROUP} may be "
                f"changing; check `kubectl get apiservice v1beta1.{GROUP}`",
                status=status,
            )
        if status == 429:
            throttled = MetricsApiThrottled(
                f"the API server asks the recorder to slow down (429 Too Many Requests) while "
                f"reading {what}{detail}; lengthen --interval if this persists",
                status=status,
            )
            throttled.retry_after_seconds = _retry_after(response)
            raise throttled
        if status >= 500:
            error = MetricsApiUnavailable(
                f"the Metrics API is installed but unavailable ({status} "
                f"{response.reason_phrase}) while reading {what}{detail}: metrics-server is "
                f"down or not ready. Check `kubectl get apiservice v1beta1.{GROUP}` and "
                "`kubectl -n kube-system logs deploy/metrics-server`",
                status=status,
            )
            error.retry_after_seconds = _retry_after(response)
            raise error
        raise MetricsApiError(f"reading {what} failed with HTTP {status}{detail}", status=status)

    def _forbidden(self, what: str, namespace: str | None, detail: str) -> str:
        who = self._who()
        head = f"{who} may not read {what} (403 Forbidden){detail}."
        if namespace is not None:
            return (
                f"{head} Grant it, in namespace {namespace}, a Role with apiGroups "
                f"[metrics.k8s.io], resources [pods], verbs [get, list] and a RoleBinding to it "
                f"(or a ClusterRole with {RBAC_RULE})"
            )
        return (
            f"{head} Grant it a ClusterRole with {RBAC_RULE} and a ClusterRoleBinding to it; "
            "or, with rights in some namespaces only, run with --namespace NS (repeatable; "
            "nodes are skipped) and a Role with resources [pods] plus a RoleBinding in each"
        )


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _retry_after(response: _Reply) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


# --- one answer, read within bounds ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    """A whole answer: status line, headers and the (inflated) body."""

    status: int
    reason_phrase: str
    headers: httpx.Headers
    body: bytes = b""
    consumed: object = None
    """What the consumer made of a successful answer's body instead (``_send(consume=...)``)."""


class _TooLarge(Exception):
    pass


class _BoundedBody:
    """Collects a body, inflating gzip (several members, as Go reads them) or zlib with a
    bound, and raises ``_TooLarge`` as soon as the wire bytes or the inflated bytes pass
    ``limit``. zlib is asked for at most 1 MiB at a time and never for more than one byte
    past the room left, so memory holds the limit plus a step, whatever the compression
    ratio."""

    def __init__(self, limit: int, *, inflate: bool, pieces: bool = False) -> None:
        self._limit = limit
        self._sink = io.BytesIO()  # getvalue() hands over its buffer: no second copy
        self._pieces: list[bytes] | None = [] if pieces else None
        self._size = 0
        self._wire = 0
        self._inflater = zlib.decompressobj(_INFLATE_ANY) if inflate else None
        self._pending = False

    def add(self, chunk: bytes) -> None:
        self._wire += len(chunk)
        if self._inflater is None:
            self._keep(chunk)
        elif self._wire > self._limit:
            raise _TooLarge(f"is more than {self._limit} bytes on the wire (compressed)")
        else:
            self._inflate(self._inflater, chunk)

    def _inflate(self, inflater: zlib._Decompress, data: bytes) -> None:
        while data or self._pending:
            if inflater.eof:  # another gzip member follows the last one
                inflater = self._inflater = zlib.decompressobj(_INFLATE_ANY)
            step = min(self._limit - self._size + 1, _INFLATE_STEP)
            out = inflater.decompress(data, step)
            self._keep(out)
            self._pending = len(out) == step and not inflater.eof  # zlib may hold more
            data = inflater.unconsumed_tail or inflater.unused_data

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            self._write(data[: len(data) - (self._size - self._limit)])  # for partial()
            if self._inflater is None:
                raise _TooLarge(f"is more than {self._limit} bytes")
            raise _TooLarge(
                f"inflates to more than {self._limit} bytes (after {self._wire} compressed bytes)"
            )
        self._write(data)

    def _write(self, data: bytes) -> None:
        if self._pieces is None:
            self._sink.write(data)
        elif data:
            self._pieces.append(data)

    def take(self) -> list[bytes]:
        """The pieces kept since the last ``take`` (``pieces``), let go of here."""
        taken = self._pieces or []
        self._pieces = [] if self._pieces is not None else None
        return taken

    def finish(self) -> bytes:
        """The whole body (``pieces``: only what no ``take`` has taken, joined)."""
        if self._inflater is not None and self._wire:
            self._keep(self._inflater.flush())
            if not self._inflater.eof:
                raise zlib.error("the compressed stream ends early")
        return self.partial()

    def partial(self) -> bytes:
        return self._sink.getvalue() if self._pieces is None else b"".join(self._pieces)


# --- a deadline for every socket operation of a request ----------------------------------------

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "metrics_request_deadline", default=None
)
"""The ``time.monotonic()`` by which the current thread's request must be complete."""


@contextmanager
def _until(deadline: float) -> Iterator[None]:
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left before the request's deadline."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        try:
            wait = _left(timeout, httpcore.ConnectTimeout)
        except httpcore.ConnectTimeout:
            # httpcore leaves the connected socket to ``start_tls`` to close when it fails
            # (its own backends do); past the deadline, ours must close it too, not the GC.
            self._inner.close()
            raise
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, wait))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.connect_tcp(host, port, wait, local_address, socket_options)
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        wait = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, wait, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _bound_every_read(client: httpx.Client) -> bool:
    """Put every connection pool of ``client`` (direct and through proxies) on a network
    backend that stops each socket operation at the request's deadline.

    httpx offers no parameter for the network backend, so this reaches into its transports
    (``_transport``, ``_mounts``, ``_pool``) and httpcore's pools (``_network_backend``);
    ``False`` when some version no longer has them. ``tests/integration/test_kube_limits.py``
    fails then (a server dripping bytes would hold a request past its deadline)."""
    transports = [getattr(client, "_transport", None)]
    transports += list(getattr(client, "_mounts", {}).values())
    bound = True
    for transport in transports:
        if transport is None:
            continue  # a mount that routes around proxies
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if not isinstance(backend, httpcore.NetworkBackend):
            bound = False
        elif not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    return bound
