"""``SelfMetrics``: the recorder's own health and throughput."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recorder import __version__
from recorder.errors import RecorderError
from recorder.exporter.holder import WITHDRAW_AFTER_INTERVALS, SnapshotHolder

log = logging.getLogger(__name__)

SERIES_KINDS = ("node", "container")
LOW_VOLUME_SHARE = 0.10
"""Below this share of its volume left, each refresh of the store statistics warns."""


class StoreStatistics(Protocol):
    """What the database-size and series gauges need of ``store.Store``."""

    def size_bytes(self) -> int: ...

    def volume_bytes(self) -> tuple[str, int, int] | None: ...

    def series_counts(self) -> Mapping[str, int]: ...


class ApiUp(Collector):
    """``recorder_metrics_api_up``: the poller sets the last poll's outcome; it reads 0 as well
    once the data gauges are withdrawn (no successful read for 3 intervals), even if the
    poller is stuck and sets nothing."""

    NAME = "recorder_metrics_api_up"

    def __init__(self, holder: SnapshotHolder) -> None:
        self._holder = holder
        self._last = 0.0

    def set(self, value: float) -> None:
        self._last = float(value)

    def collect(self) -> Iterable[Metric]:
        value = self._last if self._holder.view().fresh else 0.0
        return [
            GaugeMetricFamily(
                self.NAME,
                "1 when the last poll read the Metrics API (metrics.k8s.io) successfully and a "
                f"successful read is less than {WITHDRAW_AFTER_INTERVALS} poll intervals old, "
                "else 0",
                value=value,
            )
        ]


class SelfMetrics:
    """The recorder's own metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry, holder: SnapshotHolder) -> None:
        self.polls = Counter(
            "recorder_polls",
            "Poll attempts of the Metrics API (metrics.k8s.io), by resource (nodes, pods)",
            ["resource"],
            registry=registry,
        )
        self.poll_errors = Counter(
            "recorder_poll_errors",
            "Failed polls of the Metrics API (metrics.k8s.io) or writes of their samples, by "
            "resource (nodes, pods) and reason (unauthorized, forbidden, not_found, unavailable, "
            "throttled, timeout, tls, connection, http_error, malformed, store)",
            ["resource", "reason"],
            registry=registry,
        )
        self.poll_duration = Histogram(
            "recorder_poll_duration_seconds",
            "Seconds from the start of a poll until its samples are stored (fetch, decode, "
            "write; until they wait in the buffer while the database refuses writes)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            unit="seconds",
            registry=registry,
        )
        self.store_write_duration = Histogram(
            "recorder_store_write_duration_seconds",
            "Duration of one database transaction writing a poll's samples of one resource "
            "(nodes, pods) in seconds",
            ["resource"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            unit="seconds",
            registry=registry,
        )
        self.last_success = Gauge(
            "recorder_last_successful_poll_timestamp_seconds",
            "Unix time in seconds of the end of the last poll in which every resource succeeded",
            unit="seconds",
            registry=registry,
        )
        self.samples_written = Counter(
            "recorder_samples_written",
            "Samples (one per series and timestamp, CPU and memory together) written to the "
            "database",
            registry=registry,
        )
        self.samples_rejected = Counter(
            "recorder_samples_rejected",
            "Metrics API items rejected as malformed, by reason",
            ["reason"],
            registry=registry,
        )
        self.samples_dropped = Counter(
            "recorder_samples_dropped",
            "Samples given up before reaching the database, by reason (buffer_full: the "
            "database was down longer than the buffer holds; unreadable: a damaged spool file or "
            "handed-over batch; deposed: fetched by a deposed leader and not handed over in "
            "time; not_leader: spooled by an earlier run, not handed over in time)",
            ["reason"],
            registry=registry,
        )
        self.samples_handed_over = Counter(
            "recorder_samples_handed_over",
            "Samples this replica fetched as the leader and could not store before another "
            "replica took over, handed over to the new leader through the database (it writes "
            "them, skipping those it stored itself)",
            registry=registry,
        )
        self.samples_buffered = Gauge(
            "recorder_samples_buffered",
            "Samples waiting for the database to accept them (in memory or spooled)",
            registry=registry,
        )
        self.write_errors = Counter(
            "recorder_store_write_errors",
            "Writes of a batch of samples that failed for a transient reason (database down, "
            "locked, full, timed out), by resource (nodes, pods); the batch waits in the "
            "buffer and is written again",
            ["resource"],
            registry=registry,
        )
        self.last_write = Gauge(
            "recorder_last_successful_write_timestamp_seconds",
            "Unix time in seconds of the last batch of samples the database accepted",
            unit="seconds",
            registry=registry,
        )
        self.buffer_bytes = Gauge(
            "recorder_buffer_bytes",
            "Bytes of samples parked while the database does not accept them, by place "
            "(memory, spool: the spool folder on disk)",
            ["place"],
            unit="bytes",
            registry=registry,
        )
        self.component_healthy = Gauge(
            "recorder_component_healthy",
            "1 when a part of the recorder works, else 0: poll (the last poll read the Metrics "
            "API), write (the last write to the database succeeded); alert on 0 for a few "
            "minutes",
            ["component"],
            registry=registry,
        )
        for component in ("poll", "write"):
            self.component_healthy.labels(component=component).set(1)
        self.api_up = ApiUp(holder)
        registry.register(self.api_up)
        self.compaction_duration = Histogram(
            "recorder_compaction_duration_seconds",
            "Duration of the compaction step of a maintenance round (closed head blocks into "
            "chunks) in seconds",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            unit="seconds",
            registry=registry,
        )
        self.maintenance_errors = Counter(
            "recorder_maintenance_errors",
            "Maintenance rounds (compaction, retention) that failed; the next one runs on schedule",
            registry=registry,
        )
        self.database_size = Gauge(
            "recorder_database_size_bytes",
            "Size of the database in bytes (SQLite: file and write-ahead log; PostgreSQL: "
            "pg_database_size), refreshed every minute and after maintenance",
            unit="bytes",
            registry=registry,
        )
        self.volume_size = Gauge(
            "recorder_database_volume_size_bytes",
            "Size of the filesystem holding the SQLite database, by folder (absent for PostgreSQL)",
            ["folder"],
            unit="bytes",
            registry=registry,
        )
        self.volume_available = Gauge(
            "recorder_database_volume_available_bytes",
            "Bytes still available to the recorder on the filesystem holding the SQLite "
            "database, by folder; alert on predict_linear() of it (README, Sizing)",
            ["folder"],
            unit="bytes",
            registry=registry,
        )
        self.stored_series = Gauge(
            "recorder_stored_series",
            "Series in the database (node, container) within retention, refreshed every "
            "minute and after maintenance",
            ["kind"],
            registry=registry,
        )
        self.render_duration = Histogram(
            "recorder_metrics_render_duration_seconds",
            "Time to render (and compress) the data gauges of a new snapshot for /metrics, in "
            "seconds: in the service, once per snapshot and kind in the worker; in one process, "
            "once per snapshot and format, later scrapes reusing it",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            unit="seconds",
            registry=registry,
        )
        build_info = Gauge(
            "recorder_build_info",
            "Build information of the recorder; the value is always 1",
            ["version"],
            registry=registry,
        )
        build_info.labels(version=__version__).set(1)

    def refresh_store_statistics(self, store: StoreStatistics) -> None:
        """Database size and series counts; a failure is logged and the old values kept."""
        try:
            size = store.size_bytes()
            counts = store.series_counts()
        except RecorderError as exc:
            log.warning("could not read the database size and series count: %s", exc)
            return
        self.database_size.set(size)
        volume = store.volume_bytes()
        if volume is not None:
            folder, total, available = volume
            self.volume_size.labels(folder=folder).set(total)
            self.volume_available.labels(folder=folder).set(available)
            if total and available < total * LOW_VOLUME_SHARE:
                log.warning(
                    "the database's volume has %.1f%% left (%d MiB of %d MiB): grow the volume "
                    "or shorten retention (RECORDER_STATISTICS_RETENTION, "
                    "RECORDER_FULL_RESOLUTION_RETENTION) before writes fail",
                    100 * available / total,
                    available // 2**20,
                    total // 2**20,
                )
        for kind in sorted({*SERIES_KINDS, *counts}):
            self.stored_series.labels(kind=kind).set(counts.get(kind, 0))
