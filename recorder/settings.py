"""The one configuration object, read from ``RECORDER_*`` variables; CLI flags override it.

Built once at the edge (``recorder.cli``) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from recorder import timeutil, units
from recorder.domain import DEFAULT_CLUSTER
from recorder.errors import ConfigError, DurationError, QuantityError

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///recorder.db"
# metrics-server's own manifests scrape every 15 s; polling faster only returns the same values.
MIN_USEFUL_INTERVAL_SECONDS = 15.0
MAX_CLUSTER_CHARS = 63
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
"""A Kubernetes label value, which is also a Prometheus label value as it is."""


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


def parse_listen(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:8080`` for IPv6) into its parts, validating the port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--listen port must be 0-65535, got {port}")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, port


def check_cluster(name: str) -> None:
    """Refuse a cluster name that is not a Kubernetes label value (a ValueError saying why)."""
    if len(name) > MAX_CLUSTER_CHARS:
        raise ValueError(
            f"--cluster must be at most {MAX_CLUSTER_CHARS} characters, like "
            f"a Kubernetes label value, got {len(name)}"
        )
    if _CLUSTER_NAME.match(name) is None:
        raise ValueError(
            "--cluster must be a Kubernetes label value: letters, digits, "
            "'-', '_' and '.', beginning and ending with a letter or digit (e.g. prod-eu-1), "
            f"got {name!r}"
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
        default=400 * 86_400.0,
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
    log_level: str = Field(default="INFO")

    @field_validator("buffer_max_bytes", "spool_max_bytes", "max_response_bytes", mode="before")
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
            raise ValueError("statistics retention must be at least the full-resolution one")
        return value

    @field_validator("rollup_retention_seconds")
    @classmethod
    def _rollups_outlive_statistics(cls, value: float, info: Any) -> float:
        statistics = info.data.get("statistics_retention_seconds")
        if statistics is not None and value < statistics:
            raise ValueError("rollup retention must be at least the statistics one")
        return value

    @field_validator("interval_seconds")
    @classmethod
    def _interval_positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"interval must be positive, got {value}")
        return value

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        check_cluster(value)
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        try:
            parse_listen(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return value

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
    """Settings from the environment, with the non-``None`` ``overrides`` (CLI flags) on top."""
    from pydantic import ValidationError

    given = {key: value for key, value in overrides.items() if value is not None}
    for name, field in Settings.model_fields.items():
        if name in given and isinstance(field.validation_alias, str):
            given[field.validation_alias] = given.pop(name)
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{_variable(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable a validation error is about (``RECORDER_INTERVAL``)."""
    where = ".".join(str(part) for part in loc) or "settings"
    if where in Settings.model_fields and not where.startswith("RECORDER_"):
        return f"RECORDER_{where.upper()}"
    return where
