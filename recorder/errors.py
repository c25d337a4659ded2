"""One exception hierarchy for the whole recorder.

    RecorderError
    ├── ConfigError                  bad settings, kubeconfig, flags: fix the configuration
    │   └── CredentialsError         a credential could not be obtained (token file, exec plugin)
    ├── MetricsApiError              talking to metrics.k8s.io failed (.status)
    │   ├── MetricsApiUnauthorized   401: credentials rejected
    │   ├── MetricsApiForbidden      403: RBAC denies the list/get
    │   ├── MetricsApiNotFound       404: metrics-server / APIService missing, or object gone
    │   ├── MetricsApiUnavailable    503 and other 5xx: installed but not serving
    │   │   └── MetricsApiThrottled  429: API Priority and Fairness asks us to slow down
    │   ├── MetricsApiRedirected     3xx: the URL is not the API server (never followed)
    │   ├── MetricsApiResponseTooLarge  the body passed the size limit (on the wire or inflated)
    │   └── MetricsApiTransportError refused or dropped connections
    │       ├── MetricsApiTimeout    no complete answer within the request's deadline
    │       └── MetricsApiTLSError   the server's certificate or the TLS handshake failed
    ├── DecodeError                  a response or a value could not be understood
    │   ├── MalformedResponseError   a Metrics API body is truncated, not JSON, or of another kind
    │   ├── QuantityError            a Kubernetes quantity or Go duration is malformed
    │   └── DurationError            a duration a user typed (flag, variable, parameter) is not one
    ├── StoreError                   the database failed or is not at the expected schema
    │   ├── QueryTimeout             a query ran past the statement timeout (HTTP 503)
    │   └── StoreUnavailable         unreachable, busy, locked, full or timed out: retry as is
    ├── QueryError                   a history query parameter is invalid (HTTP 400)
    ├── AccessReviewError            a TokenReview or SubjectAccessReview failed (HTTP 503)
    └── InternalError                a bug met while polling one resource (counted, not fatal)

Every message says what the operator can do about it. Every class has a ``reason``: a short
stable label (the ``reason`` label of ``recorder_poll_errors_total`` for errors of a poll),
one per class.
"""

from __future__ import annotations


class RecorderError(Exception):
    """Base class of every error the recorder raises on purpose."""

    reason: str = "error"
    """A short stable label of the kind of failure; every subclass sets its own."""


class ConfigError(RecorderError):
    """The configuration (flags, environment, kubeconfig) is invalid or incomplete."""

    reason = "config"


class CredentialsError(ConfigError):
    """A credential could not be obtained: an unreadable token file, a failing exec plugin.

    Raised at start-up it is a configuration error; raised during a poll it fails that poll
    (counted with ``reason="credentials"``) and the next poll tries again.
    """

    reason = "credentials"


class MetricsApiError(RecorderError):
    """A request to the Metrics API failed.

    ``reason`` is a short stable label (``unauthorized``, ``forbidden``, ``not_found``,
    ``unavailable``, ``throttled``, ``timeout``, ``tls``, ``connection``, ``http_error``,
    ``redirect``, ``too_large``) used as
    the ``reason`` label of ``recorder_poll_errors_total``; ``malformed`` (a bad body) and
    ``credentials`` (no credential could be obtained) come from the classes outside this branch.
    """

    reason = "http_error"

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class MetricsApiUnauthorized(MetricsApiError):
    reason = "unauthorized"


class MetricsApiForbidden(MetricsApiError):
    reason = "forbidden"


class MetricsApiNotFound(MetricsApiError):
    reason = "not_found"


class MetricsApiUnavailable(MetricsApiError):
    reason = "unavailable"
    retry_after_seconds: float | None = None
    """The server's ``Retry-After``, when it sent one."""


class MetricsApiThrottled(MetricsApiUnavailable):
    reason = "throttled"


class MetricsApiRedirected(MetricsApiError):
    """A 3xx answer: the configured URL is not the API server itself (a login page, a load
    balancer). Redirects are never followed, so credentials never reach another host."""

    reason = "redirect"


class MetricsApiResponseTooLarge(MetricsApiError):
    """A response passed the size limit, on the wire or once decompressed; reading stopped
    there, so a huge body or a gzip bomb costs at most the limit in memory."""

    reason = "too_large"


class MetricsApiTransportError(MetricsApiError):
    reason = "connection"


class MetricsApiTimeout(MetricsApiTransportError):
    reason = "timeout"
    cut_short = False
    """True when the request had only what was left of the poll's retry budget, not its
    whole deadline."""


class MetricsApiTLSError(MetricsApiTransportError):
    reason = "tls"


class DecodeError(RecorderError):
    """A response body or a single value could not be decoded."""

    reason = "decode"


class MalformedResponseError(DecodeError):
    """A Metrics API response body is truncated, not JSON, or not the kind of object asked for."""

    reason = "malformed"


class QuantityError(DecodeError, ValueError):
    """A Kubernetes resource quantity or a Go duration string is malformed."""

    reason = "quantity"


class DurationError(DecodeError, ValueError):
    """A duration typed in our CLI, environment or HTTP API is not one (``timeutil``'s grammar).

    ``text`` is what was typed and ``problem`` what is wrong with it, so a caller can name the
    flag, variable or parameter: ``QueryError(f"step={exc.text!r}: {exc.problem}")``.
    ``too_long``: well formed, but longer than any duration the recorder can hold.
    """

    reason = "duration"

    def __init__(
        self, text: str, problem: str = "it is malformed", *, too_long: bool = False
    ) -> None:
        super().__init__(f"{text!r} is not a duration: {problem}")
        self.text = text
        self.problem = problem
        self.too_long = too_long


class StoreError(RecorderError):
    """The database could not be read or written."""

    reason = "store"


class QueryTimeout(StoreError):
    """A history query ran longer than the configured statement timeout."""

    reason = "query_timeout"


class StoreUnavailable(StoreError):
    """The database cannot take the operation now: it is unreachable, shutting down, busy
    (a SQLite lock, a serialization failure), out of space, or past a timeout. Retrying the same
    operation later can succeed. (A *plain* ``StoreError`` from a write means something an
    operator must fix, such as a missing schema; rows the database refuses for their content
    are never raised: ``Store.write`` reports them in ``WriteResult.rejected``.)"""

    reason = "store_unavailable"


class QueryError(RecorderError, ValueError):
    """A history query has an invalid parameter; the message names it."""

    reason = "query"


class AccessReviewError(RecorderError):
    """The API server could not answer whether a caller is who it says or may read what it
    asks (unreachable, slow, or our service account lacks ``system:auth-delegator``): the
    request is answered 503, never allowed."""

    reason = "review"


class InternalError(RecorderError):
    """A bug met while polling one resource: logged with its traceback, counted, and the
    poll of the other resources goes on."""

    reason = "internal"
