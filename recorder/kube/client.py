"""HTTP client for ``metrics.k8s.io``: discovery, list calls, and one place mapping errors."""

from __future__ import annotations

import ssl
from typing import NoReturn

import httpx

from recorder import __version__
from recorder.errors import (
    MetricsApiError,
    MetricsApiForbidden,
    MetricsApiNotFound,
    MetricsApiTransportError,
    MetricsApiUnauthorized,
    MetricsApiUnavailable,
)
from recorder.kube.config import ClusterConfig
from recorder.kube.decode import decode_group, decode_status

GROUP = "metrics.k8s.io"
PREFERRED_VERSIONS = ("v1", "v1beta1")


class MetricsClient:
    """Reads the Metrics API. Bodies are returned as bytes; decoding is the caller's step."""

    def __init__(self, config: ClusterConfig, *, timeout_seconds: float = 10.0):
        self.config = config
        self._http = httpx.Client(
            base_url=config.server,
            verify=config.verify,
            auth=config.auth,
            timeout=timeout_seconds,
            headers={
                "Accept": "application/json",
                "User-Agent": f"kube-metrics-recorder/{__version__}",
            },
        )
        self._version: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MetricsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> str | None:
        """The discovered group version (``v1`` or ``v1beta1``), once known."""
        return self._version

    def discover(self, *, refresh: bool = False) -> str:
        if self._version is not None and not refresh:
            return self._version
        response = self._get(f"/apis/{GROUP}", what="the metrics.k8s.io API group")
        group = decode_group(response.content)
        served = {v.version for v in group.versions}
        for version in PREFERRED_VERSIONS:
            if version in served:
                self._version = version
                return version
        raise MetricsApiNotFound(
            f"{GROUP} serves versions {sorted(served)}, none of which this recorder reads "
            f"({', '.join(PREFERRED_VERSIONS)})",
            status=200,
        )

    def list_nodes(self) -> bytes:
        return self._list("nodes", what="NodeMetrics (nodes.metrics.k8s.io)")

    def list_pods(self, namespace: str | None = None) -> bytes:
        path = f"namespaces/{namespace}/pods" if namespace else "pods"
        scope = f"in namespace {namespace}" if namespace else "in all namespaces"
        return self._list(path, what=f"PodMetrics (pods.metrics.k8s.io) {scope}")

    def _list(self, path: str, *, what: str) -> bytes:
        version = self.discover()
        try:
            return self._get(f"/apis/{GROUP}/{version}/{path}", what=what).content
        except MetricsApiNotFound:
            # The served version may have changed (upgrade to v1): discover again, once.
            fresh = self.discover(refresh=True)
            return self._get(f"/apis/{GROUP}/{fresh}/{path}", what=what).content

    def _get(self, url: str, *, what: str) -> httpx.Response:
        try:
            response = self._http.get(url)
        except httpx.TimeoutException as exc:
            raise MetricsApiTransportError(
                f"timed out reading {what} from {self.config.server}", reason="timeout"
            ) from exc
        except httpx.TransportError as exc:
            if isinstance(exc.__cause__ or exc.__context__, ssl.SSLError) or "SSL" in str(exc):
                raise MetricsApiTransportError(
                    f"TLS failed talking to {self.config.server} ({self.config.source}): {exc}. "
                    "Check the CA (certificate-authority) and the server name.",
                    reason="tls",
                ) from exc
            raise MetricsApiTransportError(
                f"cannot reach the Kubernetes API at {self.config.server} "
                f"({self.config.source}): {exc}",
                reason="connection",
            ) from exc
        if response.status_code >= 400:
            self._raise_for(response, what)
        return response

    def _raise_for(self, response: httpx.Response, what: str) -> NoReturn:
        status = response.status_code
        body = decode_status(response.content)
        detail = f" (API server says: {body.message})" if body and body.message else ""
        who = self.config.identity or "the configured identity"
        if status == 401:
            raise MetricsApiUnauthorized(
                f"the Kubernetes API rejected the credentials from {self.config.source} "
                f"(401){detail}; refresh the token or kubeconfig",
                status=status,
            )
        if status == 403:
            raise MetricsApiForbidden(
                f"{who} may not read {what} (403){detail}. Grant it a ClusterRole (or a Role "
                f"per namespace with --namespace) with apiGroups [metrics.k8s.io], resources "
                f"[nodes, pods], verbs [get, list]",
                status=status,
            )
        if status == 404:
            raise MetricsApiNotFound(
                f"{what} was not found (404){detail}: is metrics-server installed, and is the "
                "APIService v1beta1.metrics.k8s.io available? "
                "(`kubectl get apiservice v1beta1.metrics.k8s.io`)",
                status=status,
            )
        if status == 503 or status >= 500:
            raise MetricsApiUnavailable(
                f"the Metrics API is installed but unavailable ({status}) while reading "
                f"{what}{detail}; check the metrics-server pods and their logs",
                status=status,
            )
        raise MetricsApiError(f"reading {what} failed with HTTP {status}{detail}", status=status)
