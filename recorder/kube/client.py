"""HTTP client for ``metrics.k8s.io``: discovery, list calls, retries, and one place mapping
errors to messages that say what to do."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from typing import NoReturn

import httpx

from recorder import __version__
from recorder.errors import (
    ConfigError,
    MalformedResponseError,
    MetricsApiError,
    MetricsApiForbidden,
    MetricsApiNotFound,
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
from recorder.kube.tls import ClientCertificate, build_ssl_context

log = logging.getLogger(__name__)

GROUP = "metrics.k8s.io"
PREFERRED_VERSIONS = ("v1", "v1beta1")
DISCOVERY_TTL_SECONDS = 600.0
"""Discovery is also refreshed this often, so an upgrade to ``v1`` is noticed without a 404."""
RBAC_RULE = "apiGroups [metrics.k8s.io], resources [nodes, pods], verbs [get, list]"
_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


class MetricsClient:
    """Reads the Metrics API. Bodies are returned as bytes; decoding is the caller's step."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        timeout_seconds: float = 10.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self.retry = retry or RetryPolicy()
        self._timeout = timeout_seconds
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
        group = decode_group(response.content)
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
        return self._list("nodes", resource="nodes", namespace=None)

    def list_pods(self, namespace: str | None = None) -> bytes:
        path = f"namespaces/{namespace}/pods" if namespace else "pods"
        return self._list(path, resource="pods", namespace=namespace)

    def _list(self, path: str, *, resource: str, namespace: str | None) -> bytes:
        kind = "NodeMetrics" if resource == "nodes" else "PodMetrics"
        scope = f"in namespace {namespace}" if namespace else "in all namespaces"
        what = f"{kind} ({resource}.{GROUP})" + ("" if resource == "nodes" else f" {scope}")
        version = self.discover()
        try:
            url = f"/apis/{GROUP}/{version}/{path}"
            return self._get(url, what=what, namespace=namespace).content
        except MetricsApiNotFound:
            # The served version may have changed (an upgrade to v1): discover again, once.
            fresh = self.discover(refresh=True)
            url = f"/apis/{GROUP}/{fresh}/{path}"
            return self._get(url, what=what, namespace=namespace).content

    # --- one request, with retries --------------------------------------------------------

    def _get(
        self, url: str, *, what: str, group: bool = False, namespace: str | None = None
    ) -> httpx.Response:
        started = self._clock()
        attempt = 0
        while True:
            try:
                return self._attempt(url, what=what, group=group, namespace=namespace)
            except MetricsApiError as exc:
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
                log.warning(
                    "reading %s failed (%s); retrying in %.2fs (attempt %d of %d)",
                    what,
                    exc.reason,
                    delay,
                    attempt + 2,
                    self.retry.max_attempts,
                )
                self._sleep(delay)
                attempt += 1

    def _attempt(
        self, url: str, *, what: str, group: bool, namespace: str | None
    ) -> httpx.Response:
        response = self._send(url, what)
        credentials = self.config.credentials
        if response.status_code == 401 and credentials is not None and credentials.refresh():
            # A rotated token or an expired plugin credential: the new one, straight away.
            log.info("the API server rejected the credentials; re-sending with fresh ones")
            response = self._send(url, what)
        if response.status_code >= 400:
            self._raise_for(response, what, group=group, namespace=namespace)
        return response

    def _send(self, url: str, what: str) -> httpx.Response:
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
        try:
            return http.get(url, headers=headers, extensions=self._extensions)
        except httpx.TimeoutException as exc:
            raise MetricsApiTimeout(
                f"no answer from {self.config.server} within {self._timeout:g} s while reading "
                f"{what}: the API server or metrics-server is overloaded or unreachable. Check "
                "metrics-server (`kubectl -n kube-system get pods -l k8s-app=metrics-server`) "
                "or raise RECORDER_REQUEST_TIMEOUT_SECONDS"
            ) from exc
        except httpx.TransportError as exc:
            tls_error = _ssl_cause(exc)
            if tls_error is not None:
                raise MetricsApiTLSError(self._tls_message(tls_error)) from exc
            raise MetricsApiTransportError(self._transport_message(exc, what)) from exc
        except httpx.DecodingError as exc:
            raise MalformedResponseError(
                f"the response for {what} from {self.config.server} could not be decompressed "
                f"({exc}): it was cut short, or a proxy changed it"
            ) from exc
        except httpx.RequestError as exc:
            raise MetricsApiTransportError(
                f"reading {what} from {self.config.server} failed: {exc}"
            ) from exc

    # --- building the HTTP client ---------------------------------------------------------

    def _current_certificate(self) -> ClientCertificate | None:
        credentials = self.config.credentials
        return credentials.certificate() if credentials is not None else None

    def _build(self, certificate: ClientCertificate | None) -> httpx.Client:
        config = self.config
        verify: ssl.SSLContext | bool = True
        if config.server.startswith("https://"):
            verify = build_ssl_context(config.tls, certificate)
        self._certificate = certificate
        try:
            return httpx.Client(
                base_url=config.server,
                verify=verify,
                proxy=config.proxy,
                timeout=self._timeout,
                headers={
                    "Accept": "application/json",
                    "User-Agent": f"kube-metrics-recorder/{__version__}",
                },
            )
        except ImportError as exc:  # a socks5:// proxy-url without socksio
            raise ConfigError(
                f"proxy-url {config.proxy} needs SOCKS support: pip install 'httpx[socks]'"
            ) from exc

    # --- messages -------------------------------------------------------------------------

    def _who(self) -> str:
        return self.config.identity or "the configured identity"

    def _tls_message(self, error: ssl.SSLError) -> str:
        config = self.config
        name = f" (checking the name {config.tls.server_name!r})" if config.tls.server_name else ""
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
                f"{config.tls.ca_source}{name}: {fix}"
            )
        return (
            f"the TLS handshake with {config.server} failed ({error.reason or error}) using "
            f"{config.tls.ca_source}{name}: if the server asks for a client certificate, check "
            "client-certificate(-data) and client-key(-data); otherwise check that the server "
            "speaks HTTPS on that port"
        )

    def _transport_message(self, exc: httpx.TransportError, what: str) -> str:
        config = self.config
        if isinstance(exc, httpx.ProxyError):
            return f"the proxy {config.proxy} failed while reading {what}: {exc}"
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
        self, response: httpx.Response, what: str, *, group: bool, namespace: str | None
    ) -> NoReturn:
        status = response.status_code
        body = decode_status(response.content)
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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
