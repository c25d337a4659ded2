"""Prometheus exposition: data gauges rebuilt from the latest snapshot at every scrape, and the
recorder's own metrics.

The data gauges come from a custom collector over ``SnapshotHolder`` (never module-level labelled
gauges, which would keep series of pods that are gone). Everything lives in an explicit
``CollectorRegistry``, not prometheus-client's global one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recorder import __version__
from recorder.domain import Kind, Sample, Snapshot

# Division by an exact power of ten gives the double nearest the exact decimal value.
_NANOCORES_PER_CORE = 1e9


class SnapshotHolder:
    """The latest samples of each kind, swapped atomically by the poller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: tuple[Sample, ...] = ()
        self._containers: tuple[Sample, ...] = ()
        self._taken_at_ms = 0

    def publish(self, kind: Kind, samples: Sequence[Sample], taken_at_ms: int) -> None:
        frozen = tuple(samples)
        with self._lock:
            if kind is Kind.NODE:
                self._nodes = frozen
            else:
                self._containers = frozen
            self._taken_at_ms = taken_at_ms

    def get(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._taken_at_ms, self._nodes, self._containers)


class DataCollector(Collector):
    def __init__(self, holder: SnapshotHolder):
        self._holder = holder

    def collect(self) -> Iterable[Metric]:
        snapshot = self._holder.get()
        node_cpu = GaugeMetricFamily(
            "recorder_node_cpu_usage_cores",
            "CPU usage of the node in cores, from metrics.k8s.io NodeMetrics usage.cpu",
            labels=["node"],
        )
        node_memory = GaugeMetricFamily(
            "recorder_node_memory_working_set_bytes",
            "Memory working set of the node in bytes, from metrics.k8s.io NodeMetrics usage.memory",
            labels=["node"],
        )
        for sample in snapshot.nodes:
            labels = [sample.key.node]
            node_cpu.add_metric(labels, sample.cpu_nanocores / _NANOCORES_PER_CORE)
            node_memory.add_metric(labels, sample.memory_bytes)
        container_cpu = GaugeMetricFamily(
            "recorder_container_cpu_usage_cores",
            "CPU usage of the container in cores, from metrics.k8s.io PodMetrics "
            "containers[].usage.cpu",
            labels=["namespace", "pod", "container"],
        )
        container_memory = GaugeMetricFamily(
            "recorder_container_memory_working_set_bytes",
            "Memory working set of the container in bytes, from metrics.k8s.io PodMetrics "
            "containers[].usage.memory",
            labels=["namespace", "pod", "container"],
        )
        for sample in snapshot.containers:
            key = sample.key
            labels = [key.namespace, key.pod, key.container]
            container_cpu.add_metric(labels, sample.cpu_nanocores / _NANOCORES_PER_CORE)
            container_memory.add_metric(labels, sample.memory_bytes)
        return [node_cpu, node_memory, container_cpu, container_memory]


class SelfMetrics:
    """The recorder's own health and throughput, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry):
        self.polls = Counter(
            "recorder_polls",
            "Poll attempts of the Metrics API, by resource (nodes, pods)",
            ["resource"],
            registry=registry,
        )
        self.poll_errors = Counter(
            "recorder_poll_errors",
            "Failed polls by resource and reason (unauthorized, forbidden, not_found, "
            "unavailable, timeout, tls, connection, malformed, store)",
            ["resource", "reason"],
            registry=registry,
        )
        self.poll_duration = Histogram(
            "recorder_poll_duration_seconds",
            "Duration of a whole poll cycle (fetch, decode, store) in seconds",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.last_success = Gauge(
            "recorder_last_successful_poll_timestamp_seconds",
            "Unix time of the end of the last poll in which every resource succeeded",
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
            "Samples dropped because the database was down longer than the write buffer holds",
            registry=registry,
        )
        self.samples_buffered = Gauge(
            "recorder_samples_buffered",
            "Samples held in memory waiting for the database to accept them",
            registry=registry,
        )
        self.api_up = Gauge(
            "recorder_metrics_api_up",
            "1 when the last poll read the Metrics API successfully, else 0",
            registry=registry,
        )
        build_info = Gauge(
            "recorder_build_info",
            "Build information of the recorder; the value is always 1",
            ["version"],
            registry=registry,
        )
        build_info.labels(version=__version__).set(1)


def build_registry(holder: SnapshotHolder) -> tuple[CollectorRegistry, SelfMetrics]:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DataCollector(holder))
    return registry, SelfMetrics(registry)
