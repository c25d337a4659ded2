"""Exact exposition output of the data gauges from a snapshot, on a fresh registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from recorder.domain import Kind, Sample, SeriesKey
from recorder.exporter import DataCollector, SnapshotHolder


def render(holder: SnapshotHolder) -> str:
    registry = CollectorRegistry()
    registry.register(DataCollector(holder))
    return generate_latest(registry).decode()


def test_exact_text_exposition_and_vanished_pods_vanish() -> None:
    holder = SnapshotHolder()
    holder.publish(
        Kind.NODE, [Sample(SeriesKey.for_node("10.0.2.15"), 1, 1, 487_558_164, 732_212 * 1024)], 1
    )
    holder.publish(
        Kind.CONTAINER,
        [
            Sample(SeriesKey.for_container("shop", "web", "app"), 1, 1, 1_500_000_000, 512),
            Sample(SeriesKey.for_container("shop", "old", "app"), 1, 1, 0, 1),
        ],
        1,
    )
    assert render(holder) == (
        "# HELP recorder_node_cpu_usage_cores CPU usage of the node in cores, from "
        "metrics.k8s.io NodeMetrics usage.cpu\n"
        "# TYPE recorder_node_cpu_usage_cores gauge\n"
        'recorder_node_cpu_usage_cores{node="10.0.2.15"} 0.487558164\n'
        "# HELP recorder_node_memory_working_set_bytes Memory working set of the node in bytes, "
        "from metrics.k8s.io NodeMetrics usage.memory\n"
        "# TYPE recorder_node_memory_working_set_bytes gauge\n"
        'recorder_node_memory_working_set_bytes{node="10.0.2.15"} 7.49785088e+08\n'
        "# HELP recorder_container_cpu_usage_cores CPU usage of the container in cores, from "
        "metrics.k8s.io PodMetrics containers[].usage.cpu\n"
        "# TYPE recorder_container_cpu_usage_cores gauge\n"
        'recorder_container_cpu_usage_cores{container="app",namespace="shop",pod="web"} 1.5\n'
        'recorder_container_cpu_usage_cores{container="app",namespace="shop",pod="old"} 0.0\n'
        "# HELP recorder_container_memory_working_set_bytes Memory working set of the container "
        "in bytes, from metrics.k8s.io PodMetrics containers[].usage.memory\n"
        "# TYPE recorder_container_memory_working_set_bytes gauge\n"
        "recorder_container_memory_working_set_bytes"
        '{container="app",namespace="shop",pod="web"} 512.0\n'
        "recorder_container_memory_working_set_bytes"
        '{container="app",namespace="shop",pod="old"} 1.0\n'
    )
    holder.publish(
        Kind.CONTAINER, [Sample(SeriesKey.for_container("shop", "web", "app"), 2, 1, 1, 1)], 2
    )
    assert 'pod="old"' not in render(holder)
