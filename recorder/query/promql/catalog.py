"""The metrics PromQL sees: the exporter's four gauges over the whole stored history, with its
labels (``cluster``, and ``node``, or ``namespace``, ``pod``, ``container``), plus
``workload_kind`` and ``workload`` on containers: the pod's top-level owner as the worker
recorded it, or ``Pod`` and the pod's own name for a pod without one (a bare pod, or history
from before cluster objects were read), exactly as ``kind=workload`` groups them.

The names and HELP texts of the four are the exporter's (``recorder.exporter.families``, which
the query layer may not import; a test holds the two tables equal). Four more are the
containers' requests and limits as the worker recorded them from the pods' specs
(``REQUESTS_LIMITS``): a sample at each of the container's usage samples, with the value in
effect then, where it is set; so they live exactly as long as the container's usage does.
"""

from __future__ import annotations

from dataclasses import dataclass

from recorder.domain import Kind, Resource
from recorder.query.promql.values import METRIC_NAME, Labels, labels_of
from recorder.store.series import Series

NANOCORES_PER_CORE = 1e9


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    help: str
    unit: str
    kind: Kind
    resource: Resource
    column: str | None = None
    """For requests and limits: the ``store.objects.ContainerResources`` field it reads."""

    @property
    def scale(self) -> float:
        """What the stored integer is divided by: nanocores to cores, bytes stay bytes."""
        return NANOCORES_PER_CORE if self.resource is Resource.CPU else 1.0


FAMILIES = (
    Family(
        "recorder_node_cpu_usage_cores",
        "CPU usage of the node in cores (average over the Metrics API window), "
        "from metrics.k8s.io NodeMetrics usage.cpu",
        "cores",
        Kind.NODE,
        Resource.CPU,
    ),
    Family(
        "recorder_node_memory_working_set_bytes",
        "Memory working set of the node in bytes, from metrics.k8s.io NodeMetrics usage.memory",
        "bytes",
        Kind.NODE,
        Resource.MEMORY,
    ),
    Family(
        "recorder_container_cpu_usage_cores",
        "CPU usage of the container in cores (average over the Metrics API window), "
        "from metrics.k8s.io PodMetrics containers[].usage.cpu",
        "cores",
        Kind.CONTAINER,
        Resource.CPU,
    ),
    Family(
        "recorder_container_memory_working_set_bytes",
        "Memory working set of the container in bytes, "
        "from metrics.k8s.io PodMetrics containers[].usage.memory",
        "bytes",
        Kind.CONTAINER,
        Resource.MEMORY,
    ),
)

REQUESTS_LIMITS = (
    Family(
        "recorder_container_cpu_request_cores",
        "CPU request of the container in cores, from its pod's spec as recorded, at each of "
        "its usage samples (absent where not set)",
        "cores",
        Kind.CONTAINER,
        Resource.CPU,
        "cpu_request_nanocores",
    ),
    Family(
        "recorder_container_cpu_limit_cores",
        "CPU limit of the container in cores, from its pod's spec as recorded, at each of "
        "its usage samples (absent where not set)",
        "cores",
        Kind.CONTAINER,
        Resource.CPU,
        "cpu_limit_nanocores",
    ),
    Family(
        "recorder_container_memory_request_bytes",
        "Memory request of the container in bytes, from its pod's spec as recorded, at each "
        "of its usage samples (absent where not set)",
        "bytes",
        Kind.CONTAINER,
        Resource.MEMORY,
        "memory_request_bytes",
    ),
    Family(
        "recorder_container_memory_limit_bytes",
        "Memory limit of the container in bytes, from its pod's spec as recorded, at each of "
        "its usage samples (absent where not set)",
        "bytes",
        Kind.CONTAINER,
        Resource.MEMORY,
        "memory_limit_bytes",
    ),
)

ALL_FAMILIES = FAMILIES + REQUESTS_LIMITS

LABEL_NAMES = {
    Kind.NODE: ("cluster", "node"),
    Kind.CONTAINER: ("cluster", "container", "namespace", "pod", "workload", "workload_kind"),
}
"""The labels of each kind's series (besides ``__name__``)."""


def identity(series: Series, workload: tuple[str, str] | None) -> Labels:
    """A stored series' labels without the metric name; ``workload`` is its pod's
    ``(kind, name)`` (containers only)."""
    if series.kind is Kind.NODE:
        return labels_of((("cluster", series.cluster), ("node", series.node)))
    kind, name = workload if workload is not None else ("Pod", series.pod)
    return labels_of(
        (
            ("cluster", series.cluster),
            ("container", series.container),
            ("namespace", series.namespace),
            ("pod", series.pod),
            ("workload", name),
            ("workload_kind", kind),
        )
    )


def with_name(labels: Labels, family: Family) -> Labels:
    return labels_of((*labels, (METRIC_NAME, family.name)))
