"""The one configuration object, read from ``RECORDER_*`` variables; CLI flags override it.

Built once at the edge (``cli.py``) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from recorder import units
from recorder.errors import ConfigError, QuantityError

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///recorder.db"
# metrics-server's own manifests scrape every 15 s; polling faster only returns the same values.
MIN_USEFUL_INTERVAL_SECONDS = 15.0


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def parse_period_seconds(text: str) -> float:
    """A duration for retention-like settings: ``14d``, ``36h``, ``90m``, ``1h30m`` or seconds."""
    value = text.strip()
    if value.endswith("d") and value[:-1].replace(".", "", 1).isdigit():
        return float(value[:-1]) * 86_400
    return units.parse_interval_seconds(value)


def _period(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_period_seconds(value)
        except QuantityError as exc:
            raise ValueError(str(exc)) from exc
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
    kubeconfig: str | None = Field(default=None, description="Kubeconfig path(s), ':'-separated")
    context: str | None = Field(default=None, description="Kubeconfig context to use")
    namespace: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Only these namespaces (skips nodes)"
    )
    interval_seconds: float = Field(
        default=30.0,
        validation_alias="RECORDER_INTERVAL",
        description="Poll interval: seconds (30, 0.5) or a duration (30s, 1m)",
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
    max_buffered_samples: int = Field(
        default=2_000_000,
        gt=0,
        description="Samples kept in memory while the database is down (oldest dropped first)",
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

    @field_validator("namespace", "metrics_namespace", "metrics_exclude_namespace", mode="before")
    @classmethod
    def _namespaces(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("interval_seconds", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return units.parse_interval_seconds(value)
            except QuantityError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator(
        "block_seconds",
        "full_resolution_retention_seconds",
        "statistics_retention_seconds",
        "rollup_retention_seconds",
        "maintenance_interval_seconds",
        "query_max_range_seconds",
        "query_timeout_seconds",
        mode="before",
    )
    @classmethod
    def _periods(cls, value: Any) -> Any:
        return _period(value)

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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
