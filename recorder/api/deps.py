"""What the HTTP app is built from: the store it reads, the registry ``/metrics`` serves, its
limits and clock (``AppDeps``), passed to ``create_app`` and from there to each router."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry

from recorder import timeutil
from recorder.api.access import Authorizer, OpenAccess
from recorder.api.exposition import Exposer
from recorder.api.limits import default_max_concurrent_queries
from recorder.query.engine import HistoryReader
from recorder.timeutil import DAY_MS

__all__ = ["AppDeps", "HistoryStore"]


class HistoryStore(HistoryReader, Protocol):
    """What the HTTP API needs of ``store.Store``."""

    def ping(self) -> None: ...

    def schema_is_current(self) -> bool: ...


def _no_poller_status() -> Mapping[str, str]:
    return {}


@dataclass
class AppDeps:
    """What the HTTP app needs. ``poller_status`` is called on the event loop for every
    ``/readyz``: it must return at once (e.g. read a few attributes), never wait."""

    store: HistoryStore
    registry: CollectorRegistry | Exposer
    """What ``/metrics`` serves: a registry, or one that renders its own body (the service's
    ``RelayRegistry``)."""
    _: KW_ONLY
    poller_status: Callable[[], Mapping[str, str]] = _no_poller_status
    """Details of polling and writing for ``/readyz``'s ``checks`` (``{"poll": "ok",
    "write": "failing for 40s: disk full"}``); they never change its status code."""
    http_registry: CollectorRegistry | None = None
    """Where the HTTP self-metrics go; ``None`` for none."""
    clock: Callable[[], float] = time.time
    max_points: int = 500_000
    max_samples: int = 5_000_000
    max_series: int = 50_000
    max_range_ms: int = 400 * DAY_MS
    interval_ms: int = 30_000
    """The poll interval: ``kind=workload`` aligns pods within two of it."""
    max_concurrent_queries: int = field(default_factory=default_max_concurrent_queries)
    max_queued_queries: int = 64
    queue_timeout_seconds: float = 10.0
    readiness_timeout_seconds: float = 2.0
    readiness_cache_seconds: float = 1.0
    authorizer: Authorizer = field(default_factory=OpenAccess)
    """Who may read what (``guard``): everyone everything by default."""
    rate_limit: float = 0.0
    """Requests a second per client (its identity, else its address); 0: no limit."""
    rate_limit_burst: int = 100
    max_request_body_bytes: int = 256 * 1024

    def now_ms(self) -> int:
        """Now by ``clock``, in milliseconds: where relative times (``-24h``) count from."""
        return timeutil.now_ms(self.clock)
