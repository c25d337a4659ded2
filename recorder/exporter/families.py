"""The four data gauges: names, HELP strings, units and labels, in the order they are exposed.

One table, shared by the collector (``collector.py``), the fast renderer (``render.py``) and
the docs test, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from recorder.domain import Kind, Resource

NANOCORES_PER_CORE = 1e9
"""Division by an exact power of ten gives the double nearest the exact decimal value."""


@dataclass(frozen=True, slots=True)
class DataFamily:
    """One gauge family over the latest snapshot of one kind of series."""

    name: str
    documentation: str
    unit: str
    kind: Kind
    resource: Resource
    label_names: tuple[str, ...]
    """As exposed: sorted, since the exposition formats sort label names; ``cluster`` comes
    first on every data family, so a Prometheus federating several recorders keeps their
    clusters apart."""


NODE_CPU = DataFamily(
    "recorder_node_cpu_usage_cores",
    "CPU usage of the node in cores (average over the Metrics API window), "
    "from metrics.k8s.io NodeMetrics usage.cpu",
    "cores",
    Kind.NODE,
    Resource.CPU,
    ("cluster", "node"),
)
NODE_MEMORY = DataFamily(
    "recorder_node_memory_working_set_bytes",
    "Memory working set of the node in bytes, from metrics.k8s.io NodeMetrics usage.memory",
    "bytes",
    Kind.NODE,
    Resource.MEMORY,
    ("cluster", "node"),
)
CONTAINER_CPU = DataFamily(
    "recorder_container_cpu_usage_cores",
    "CPU usage of the container in cores (average over the Metrics API window), "
    "from metrics.k8s.io PodMetrics containers[].usage.cpu",
    "cores",
    Kind.CONTAINER,
    Resource.CPU,
    ("cluster", "container", "namespace", "pod"),
)
CONTAINER_MEMORY = DataFamily(
    "recorder_container_memory_working_set_bytes",
    "Memory working set of the container in bytes, "
    "from metrics.k8s.io PodMetrics containers[].usage.memory",
    "bytes",
    Kind.CONTAINER,
    Resource.MEMORY,
    ("cluster", "container", "namespace", "pod"),
)

DATA_FAMILIES = (NODE_CPU, NODE_MEMORY, CONTAINER_CPU, CONTAINER_MEMORY)
