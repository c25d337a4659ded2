"""One exception hierarchy for the whole recorder.

    RecorderError
    ├── ConfigError                  bad settings, kubeconfig, flags: fix the configuration
    ├── MetricsApiError              talking to metrics.k8s.io failed (.status, .reason)
    │   ├── MetricsApiUnauthorized   401: credentials rejected
    │   ├── MetricsApiForbidden      403: RBAC denies the list/get
    │   ├── MetricsApiNotFound       404: metrics-server / APIService missing, or object gone
    │   ├── MetricsApiUnavailable    503 and other 5xx: installed but not serving
    │   └── MetricsApiTransportError timeouts, refused connections, TLS failures
    ├── DecodeError                  a response or a value could not be understood
    │   └── QuantityError            a Kubernetes quantity or Go duration is malformed
    ├── StoreError                   the database failed or is not at the expected schema
    └── QueryError                   a history query parameter is invalid (HTTP 400)

Every message says what the operator can do about it.
"""

from __future__ import annotations


class RecorderError(Exception):
    """Base class of every error the recorder raises on purpose."""


class ConfigError(RecorderError):
    """The configuration (flags, environment, kubeconfig) is invalid or incomplete."""


class MetricsApiError(RecorderError):
    """A request to the Metrics API failed.

    ``reason`` is a short stable label (``unauthorized``, ``forbidden``, ``not_found``,
    ``unavailable``, ``timeout``, ``tls``, ``connection``, ``malformed``, ``http_error``) used as
    the ``reason`` label of ``recorder_poll_errors_total``.
    """

    default_reason = "http_error"

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason or self.default_reason


class MetricsApiUnauthorized(MetricsApiError):
    default_reason = "unauthorized"


class MetricsApiForbidden(MetricsApiError):
    default_reason = "forbidden"


class MetricsApiNotFound(MetricsApiError):
    default_reason = "not_found"


class MetricsApiUnavailable(MetricsApiError):
    default_reason = "unavailable"


class MetricsApiTransportError(MetricsApiError):
    default_reason = "connection"


class DecodeError(RecorderError):
    """A response body or a single value could not be decoded."""


class QuantityError(DecodeError, ValueError):
    """A Kubernetes resource quantity or a Go duration string is malformed."""


class StoreError(RecorderError):
    """The database could not be read or written."""


class QueryError(RecorderError, ValueError):
    """A history query has an invalid parameter; the message names it."""
