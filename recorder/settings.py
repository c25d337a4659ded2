"""The one configuration object, read from ``RECORDER_*`` variables; CLI flags override it.

Built once at the edge (``recorder.cli``) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from recorder import timeutil, units
from recorder.domain import DEFAULT_CLUSTER
from recorder.errors import ConfigError, DurationError, QuantityError

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///recorder.db"
# metrics-server's own manifests scrape every 15 s; polling faster only returns the same values.
MIN_USEFUL_INTERVAL_SECONDS = 15.0
MAX_CLUSTER_CHARS = 63
DEFAULT_RATE_LIMIT = 20.0
"""Requests a second per client with access control on (bursts of ``rate_limit_burst``)."""
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
"""A Kubernetes label value, which is also a Prometheus label value as it is."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
REDACTED = "***"
_SECRET_PARAMETER = re.compile(
    r"(?i)(?:^|[&;])([^=&;]*(?:pass|pwd|secret|token|key|credential|signature|auth)[^=&;]*)=([^&;]*)"
)
"""A query parameter whose value may be a secret: ``password``, ``sslpassword`` (the passphrase
of libpq's ``sslkey``), ``token``, ``api_key``..."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _duration_seconds(value: Any) -> Any:
    """A duration setting in ``timeutil``'s grammar (``30``, ``1m30s``, ``14d``, ``1.5d``, ``2w``)
    as seconds; non-strings (defaults, values passed in code) are left to the field's type."""
    if isinstance(value, str):
        try:
            return timeutil.parse_duration_seconds(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    return value


def redact_url(url: str) -> str:
    """``url`` as it may be shown in a log line, a message or a response: the password of its
    user information and the values of secret-looking query parameters (``password``,
    ``sslpassword``, ``token``...) replaced by ``***``, the rest as it was written. The one
    rule for every URL the recorder shows (database URLs, ``--api-url``, a kubeconfig's proxy).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
    before_query, question, query = rest.partition("?")
    query, hash_sign, fragment = query.partition("#")
    userinfo, at, hostpath = before_query.rpartition("@")
    if at and sep:
        user, colon, _password = userinfo.partition(":")
        before_query = f"{user}:{REDACTED}@{hostpath}" if colon else before_query
    query = _SECRET_PARAMETER.sub(lambda m: m.group(0)[: m.start(2) - m.start(0)] + REDACTED, query)
    return f"{scheme}{before_query}{question}{query}{hash_sign}{fragment}"


def parse_log_level(text: str) -> str:
    """A log level name (any case) as ``logging`` spells it; a ValueError naming the levels."""
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not a log level: use {', '.join(LOG_LEVELS)}")
    return level


def _split_listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"must be HOST:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    return host.removeprefix("[").removesuffix("]") or "0.0.0.0", port


def parse_listen(text: str, name: str = "--listen") -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:8080`` for IPv6) into its parts, validating the port; a
    ``ConfigError`` naming ``name`` (the flag or variable it came from)."""
    try:
        return _split_listen(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


_LISTEN_PROBLEMS = {
    errno.EADDRINUSE: "address already in use (is another {what} running? choose another "
    "with {name})",
    errno.EACCES: "permission denied (ports below 1024 need privileges; choose another with "
    "{name})",
    errno.EADDRNOTAVAIL: "this machine has no such address (choose another with {name})",
}


def listen_socket(
    host: str, port: int, *, what: str = "recorder", name: str = "--listen"
) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, for a server to serve on; a one-line
    ``ConfigError`` naming the address, the cause and ``name`` (the flag to change) when the
    address cannot be had: another process holds it, it needs privileges, or it is not one of
    this machine's. ``what`` is what may already run there, for the hint."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {shown}: unknown host ({exc.strerror or exc}; choose another "
            f"with {name})"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        # As asyncio does: a port left in TIME_WAIT by the last run can be bound again at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        problem = _LISTEN_PROBLEMS.get(exc.errno or 0)
        detail = (
            problem.format(what=what, name=name)
            if problem is not None
            else f"{(exc.strerror or str(exc)).lower()} (choose another with {name})"
        )
        raise ConfigError(f"cannot listen on {shown}: {detail}") from None
    return sock


def check_cluster(name: str) -> None:
    """Refuse a cluster name that is not a Kubernetes label value (a ValueError saying why;
    the caller names the flag or variable)."""
    if len(name) > MAX_CLUSTER_CHARS:
        raise ValueError(
            f"must be at most {MAX_CLUSTER_CHARS} characters, like a Kubernetes label value, "
            f"got {len(name)}"
        )
    if _CLUSTER_NAME.match(name) is None:
        raise ValueError(
            "must be a Kubernetes label value: letters, digits, '-', '_' and '.', beginning "
            f"and ending with a letter or digit (e.g. prod-eu-1), got {name!r}"
        )


class Settings(BaseSettings):
    """Every knob of the recorder. Each field is also ``RECORDER_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="RECORDER_", extra="forbid", validate_default=True, frozen=True
    )

    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user:pass@host/db",
    )
    api_url: str | None = Field(
        default=None, description="Plain Metrics API base URL, e.g. kubectl proxy's"
    )
    cluster: str = Field(
        default=DEFAULT_CLUSTER,
        description="Name of this cluster: the `cluster` label of every series, in the database, "
        "the APIs and /metrics; set it before the first run (changing it starts new series)",
    )
    kubeconfig: str | None = Field(default=None, description="Kubeconfig path(s), ':'-separated")
    context: str | None = Field(default=None, description="Kubeconfig context to use")
    namespace: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Only these namespaces (skips nodes)"
    )
    interval_seconds: float = Field(
        default=30.0,
        validation_alias="RECORDER_INTERVAL",
        description="Poll interval: a duration (30s, 1m30s) or seconds (30, 0.5)",
    )
    listen: str = Field(default="0.0.0.0:8080", description="HOST:PORT of the HTTP server")
    block_seconds: float = Field(
        default=3600.0,
        validation_alias="RECORDER_BLOCK",
        ge=60,
        le=86_400,
        description="Compaction block: samples of a series in one block become one chunk row",
    )
    full_resolution_retention_seconds: float = Field(
        default=14 * 86_400.0,
        validation_alias="RECORDER_FULL_RESOLUTION_RETENTION",
        gt=0,
        description="How long every sample is kept (then only block statistics)",
    )
    statistics_retention_seconds: float = Field(
        default=35 * 86_400.0,
        validation_alias="RECORDER_STATISTICS_RETENTION",
        gt=0,
        description="How long block statistics (count, sum, min, max, sketches) are kept",
    )
    rollup_retention_seconds: float = Field(
        default=400 * 86_400.0,
        validation_alias="RECORDER_ROLLUP_RETENTION",
        gt=0,
        description="How long day-level rollups of the statistics are kept",
    )
    maintenance_interval_seconds: float = Field(
        default=600.0,
        validation_alias="RECORDER_MAINTENANCE_INTERVAL",
        gt=0,
        description="How often `run` compacts closed blocks and applies retention",
    )
    buffer_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="Bytes of compressed samples kept in memory while the database does not "
        "accept them and no spool folder can (oldest dropped first); a quantity (64Mi) or bytes",
    )
    spool_dir: str | None = Field(
        default=None,
        description="Folder where samples waiting for the database survive a restart; default: "
        "beside a SQLite file (<file>.spool), none for PostgreSQL; empty: memory only",
    )
    spool_max_bytes: int = Field(
        default=1024 * 1024 * 1024,
        gt=0,
        description="Most bytes the spool folder may hold (oldest dropped first); e.g. 1Gi",
    )
    max_future_skew_seconds: float = Field(
        default=300.0,
        validation_alias="RECORDER_MAX_FUTURE_SKEW",
        ge=0,
        description="Samples stamped further than this in the future (a node with a wrong "
        "clock) are rejected one by one",
    )
    max_response_bytes: int = Field(
        default=192 * 1024 * 1024,
        gt=0,
        description="Largest Metrics API response accepted, after decompression (e.g. 192Mi)",
    )
    shutdown_grace_seconds: float = Field(
        default=20.0,
        validation_alias="RECORDER_SHUTDOWN_GRACE",
        gt=0,
        description="On SIGTERM: time to finish the poll and write or spool what waits, "
        "then exit 0 (keep it below the pod's terminationGracePeriodSeconds)",
    )
    database_timeout_seconds: float = Field(
        default=30.0,
        validation_alias="RECORDER_DATABASE_TIMEOUT",
        gt=0,
        description="PostgreSQL statement timeout of writes and maintenance",
    )
    database_connect_timeout_seconds: float = Field(
        default=5.0,
        validation_alias="RECORDER_DATABASE_CONNECT_TIMEOUT",
        gt=0,
        description="Connect timeout of PostgreSQL; SQLite's wait for a locked file",
    )
    max_concurrent_queries: int | None = Field(
        default=None,
        gt=0,
        description="History queries run at once (default: the number of cores, at least 2)",
    )
    max_queued_queries: int = Field(
        default=64,
        ge=0,
        description="History queries that may wait for a slot; more get 503 with Retry-After",
    )
    query_queue_timeout_seconds: float = Field(
        default=10.0,
        validation_alias="RECORDER_QUERY_QUEUE_TIMEOUT",
        gt=0,
        description="Longest wait for a query slot before 503 with Retry-After",
    )
    http_max_connections: int = Field(
        default=512,
        gt=0,
        description="Open HTTP connections at once; more are answered 503 and closed",
    )
    http_header_timeout_seconds: float = Field(
        default=10.0,
        validation_alias="RECORDER_HTTP_HEADER_TIMEOUT",
        gt=0,
        description="A client must send a whole request (head and body) within this time",
    )
    max_points: int = Field(
        default=500_000, gt=0, description="Most points one history response may hold"
    )
    max_samples: int = Field(
        default=5_000_000, gt=0, description="Most raw samples one query may decode"
    )
    max_series: int = Field(
        default=50_000, gt=0, description="Most series or groups one response may list"
    )
    query_max_range_seconds: float = Field(
        default=400 * 86_400.0,
        validation_alias="RECORDER_QUERY_MAX_RANGE",
        gt=0,
        description="Longest time range one query may cover",
    )
    query_timeout_seconds: float = Field(
        default=30.0,
        validation_alias="RECORDER_QUERY_TIMEOUT",
        gt=0,
        description="Statement timeout of history queries",
    )
    metrics_containers: bool = Field(
        default=True,
        description="Per-container gauges on /metrics (false: node gauges only); "
        "recording is not affected",
    )
    metrics_namespace: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Only containers of these namespaces on /metrics: names or shell "
        "patterns (team-*), comma-separated; default all",
    )
    metrics_exclude_namespace: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="No containers of these namespaces on /metrics: names or shell patterns, "
        "comma-separated; wins over metrics_namespace",
    )
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    cluster_objects: bool = Field(
        default=True,
        description="Read pods, ReplicaSets, Jobs, nodes and HPAs from the core API (list + "
        "watch) and store each pod's workload, requests, limits and node capacity; needs the "
        "RBAC of deploy/components/cluster-objects, and without it only says so",
    )
    auth: Literal["none", "tokens", "kubernetes"] = Field(
        default="none",
        description="Who may read: none (anyone who reaches the port), tokens (bearer tokens "
        "from auth_token_file), kubernetes (TokenReview + SubjectAccessReview per namespace)",
    )
    auth_token_file: str | None = Field(
        default=None,
        description="With auth=tokens: a file of lines TOKEN[,NAME[,SCOPE]] (SCOPE: * or "
        "namespaces and /metrics separated by ';'), read again when it changes",
    )
    auth_cache_seconds: float = Field(
        default=30.0,
        validation_alias="RECORDER_AUTH_CACHE",
        gt=0,
        le=600,
        description="How long an allowed review is reused (kubernetes mode); denials 1/6 of it",
    )
    auth_review_timeout_seconds: float = Field(
        default=5.0,
        validation_alias="RECORDER_AUTH_REVIEW_TIMEOUT",
        gt=0,
        description="Deadline of one TokenReview or SubjectAccessReview (then 503)",
    )
    rate_limit: float | None = Field(
        default=None,
        ge=0,
        description="Requests per second each client may make (token identity, else address; "
        "/livez and /readyz exempt); default 20 with auth tokens or kubernetes, off with "
        "auth none; 0 turns the limit off",
    )
    rate_limit_burst: int = Field(
        default=100, gt=0, description="Requests a client may make at once before rate_limit"
    )
    max_request_body_bytes: int = Field(
        default=256 * 1024,
        gt=0,
        description="Largest request body accepted (413 beyond); a quantity (256Ki) or bytes",
    )
    tls_cert_file: str | None = Field(
        default=None,
        description="PEM certificate (chain) of the HTTP server: HTTPS when given, with "
        "tls_key_file; read again when it changes",
    )
    tls_key_file: str | None = Field(default=None, description="PEM private key of tls_cert_file")
    log_level: str = Field(default="INFO")

    @field_validator(
        "buffer_max_bytes",
        "spool_max_bytes",
        "max_response_bytes",
        "max_request_body_bytes",
        mode="before",
    )
    @classmethod
    def _byte_sizes(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return units.memory_bytes(value.strip())
            except QuantityError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("namespace", "metrics_namespace", "metrics_exclude_namespace", mode="before")
    @classmethod
    def _namespaces(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator(
        "interval_seconds",
        "block_seconds",
        "full_resolution_retention_seconds",
        "statistics_retention_seconds",
        "rollup_retention_seconds",
        "maintenance_interval_seconds",
        "query_max_range_seconds",
        "query_timeout_seconds",
        "max_future_skew_seconds",
        "shutdown_grace_seconds",
        "database_timeout_seconds",
        "database_connect_timeout_seconds",
        "query_queue_timeout_seconds",
        "http_header_timeout_seconds",
        "request_timeout_seconds",
        "auth_cache_seconds",
        "auth_review_timeout_seconds",
        mode="before",
    )
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return _duration_seconds(value)

    @field_validator("statistics_retention_seconds")
    @classmethod
    def _statistics_outlive_samples(cls, value: float, info: Any) -> float:
        full = info.data.get("full_resolution_retention_seconds")
        if full is not None and value < full:
            raise ValueError(
                f"must be at least the full-resolution retention ({_seconds_text(full)}), "
                f"got {_seconds_text(value)}"
            )
        return value

    @field_validator("rollup_retention_seconds")
    @classmethod
    def _rollups_outlive_statistics(cls, value: float, info: Any) -> float:
        statistics = info.data.get("statistics_retention_seconds")
        if statistics is not None and value < statistics:
            raise ValueError(
                f"must be at least the statistics retention ({_seconds_text(statistics)}), "
                f"got {_seconds_text(value)}"
            )
        return value

    @field_validator("interval_seconds")
    @classmethod
    def _interval_positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"must be longer than zero, e.g. 30s, got {value:g}")
        return value

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        check_cluster(value)
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _split_listen(value)
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parts = urlsplit(value)
                valid = parts.scheme in ("http", "https") and bool(parts.hostname)
                parts.port  # noqa: B018 - a port out of range raises here
            except ValueError:
                valid = False
            if not valid:
                raise ValueError(
                    "must be an http:// or https:// URL such as http://127.0.0.1:8001 "
                    f"(kubectl proxy), got {redact_url(value)!r}"
                )
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return parse_log_level(value)

    @model_validator(mode="after")
    def _auth_and_tls_complete(self) -> Settings:
        if self.auth == "tokens" and not self.auth_token_file:
            raise ValueError(
                "auth=tokens needs auth_token_file (--auth-token-file): the file of tokens"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "TLS needs both tls_cert_file and tls_key_file (--tls-cert-file, --tls-key-file)"
            )
        return self

    @property
    def rate_limit_per_second(self) -> float:
        """``rate_limit``, or its default: 20 a second with access control, none without."""
        if self.rate_limit is not None:
            return self.rate_limit
        return 0.0 if self.auth == "none" else DEFAULT_RATE_LIMIT

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    def spool_path(self) -> Path | None:
        """Where waiting samples are spooled: ``spool_dir``, else beside a SQLite file."""
        if self.spool_dir is not None:
            return Path(self.spool_dir) if self.spool_dir.strip() else None
        url = self.database_url.get_secret_value()
        prefix = "sqlite:///"
        if url.startswith(prefix) and url[len(prefix) :] not in ("", ":memory:"):
            database = Path(url[len(prefix) :].split("?", 1)[0])
            return database.with_name(database.name + ".spool")
        return None

    def warn_about_interval(self) -> None:
        if self.interval_seconds < MIN_USEFUL_INTERVAL_SECONDS:
            log.warning(
                "poll interval %.3gs is shorter than metrics-server's usual resolution (15 s): "
                "faster polls return the same samples again and store nothing new",
                self.interval_seconds,
            )


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the non-``None`` ``overrides`` (CLI flags) on top.

    A ``ConfigError`` says what is wrong in the words the user typed: the flag (``--interval``)
    for an override, the variable (``RECORDER_INTERVAL``) for the environment; never pydantic's
    own text, and never the value of a secret.
    """
    from pydantic import ValidationError

    given = {key: value for key, value in overrides.items() if value is not None}
    flags = set(given)
    for name, field in Settings.model_fields.items():
        if name in given and isinstance(field.validation_alias, str):
            given[field.validation_alias] = given.pop(name)
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = [_problem(error, flags) for error in exc.errors(include_url=False)]
        raise ConfigError("; ".join(dict.fromkeys(problems))) from None


_FIELD_BY_ALIAS = {
    field.validation_alias: name
    for name, field in Settings.model_fields.items()
    if isinstance(field.validation_alias, str)
}
_SECRET_FIELDS = frozenset({"database_url", "api_url"})


def _problem(error: Mapping[str, Any], flags: set[str]) -> str:
    """One validation error as ``<flag or variable>: <what is wrong>``."""
    loc = ".".join(str(part) for part in error["loc"])
    context = error.get("ctx") or {}
    if not loc and "error" in context:  # a rule over several settings: its message names them
        return str(context["error"])
    field = _FIELD_BY_ALIAS.get(loc, loc)
    if field not in Settings.model_fields:
        return f"{field}: unknown setting"
    return f"{_typed_name(field, flags)}: {_what_is_wrong(field, error)}"


def _typed_name(field: str, flags: set[str]) -> str:
    """The flag a user typed for ``field`` (``--interval``), or its environment variable
    (``RECORDER_INTERVAL``) when no flag gave it."""
    alias = Settings.model_fields[field].validation_alias
    variable = alias if isinstance(alias, str) else f"RECORDER_{field.upper()}"
    if field in flags:
        return "--" + variable.removeprefix("RECORDER_").lower().replace("_", "-")
    return variable


def _what_is_wrong(field: str, error: Mapping[str, Any]) -> str:
    kind, context = error["type"], error.get("ctx") or {}
    shown = "" if field in _SECRET_FIELDS else f", got {error.get('input')!r}"
    if kind == "value_error" and "error" in context:
        return str(context["error"])
    bounds = {  # pydantic's own constraints, in the settings' words
        "greater_than": "must be longer than"
        if field.endswith("_seconds")
        else "must be more than",
        "greater_than_equal": "must be at least",
        "less_than": "must be less than",
        "less_than_equal": "must be at most",
    }
    if kind in bounds:
        bound = next(iter(context.values()))
        if field.endswith("_seconds"):
            return f"{bounds[kind]} {_seconds_text(bound)}, got {_seconds_text(error['input'])}"
        return f"{bounds[kind]} {bound}, got {error['input']}"  # numbers: no secret fields
    return invalid_value_words(kind, context, shown) or f"is not valid ({kind}){shown}"


def invalid_value_words(kind: str, context: Mapping[str, Any], shown: str) -> str | None:
    """What pydantic's error ``kind`` says, in our words ("must be a whole number"), then
    ``shown`` (", got 'x'", or nothing for a secret); None for a kind without words here. The
    one phrasing of invalid values for the settings and the HTTP API's parameters."""
    if kind == "missing":
        return "is required"
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"must be a whole number{shown}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{shown}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{shown}"
    if kind in ("enum", "literal_error"):
        expected = str(context.get("expected", "")).replace("'", "")
        return f"must be one of {expected}{shown}"
    if kind in ("string_too_long", "too_long"):
        return f"must be at most {context.get('max_length', '?')} characters long"
    if kind == "string_pattern_mismatch":
        return f"holds a character it may not (such as NUL){shown}"
    if kind in ("string_type", "list_type"):
        return "has the wrong type"
    return None


def _seconds_text(seconds: Any) -> str:
    """A duration in seconds as the duration grammar writes it (``14d``, ``1m30s``)."""
    try:
        return timeutil.format_duration(round(float(seconds) * 1000))
    except (TypeError, ValueError):
        return repr(seconds)
