"""Plain domain values shared by every layer (no third-party imports).

Units are in the names: CPU in integer nanocores, memory in integer bytes, times in integer
milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """What a series measures: a node as a whole, or one container of a pod."""

    NODE = "node"
    CONTAINER = "container"


class Resource(StrEnum):
    CPU = "cpu"
    MEMORY = "memory"


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """The identity of one time series.

    Nodes have only ``node``; containers have ``namespace``, ``pod`` and ``container`` (the
    Metrics API does not say which node a pod runs on, so ``node`` is empty for them).
    """

    kind: Kind
    node: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""

    @classmethod
    def for_node(cls, node: str) -> SeriesKey:
        return cls(Kind.NODE, node=node)

    @classmethod
    def for_container(cls, namespace: str, pod: str, container: str) -> SeriesKey:
        return cls(Kind.CONTAINER, namespace=namespace, pod=pod, container=container)


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of one series, stamped with the Metrics API's own timestamp."""

    key: SeriesKey
    timestamp_ms: int
    window_ms: int
    cpu_nanocores: int
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """An item of a Metrics API response that could not be turned into samples.

    ``reason`` is a short stable label (e.g. ``null_timestamp``, ``bad_quantity``,
    ``missing_field``) used as the ``reason`` label of ``recorder_samples_rejected_total``.
    """

    kind: Kind
    name: str
    reason: str
    detail: str
    namespace: str = ""


PodRef = tuple[str, str]
"""(namespace, pod)"""


@dataclass(frozen=True, slots=True)
class Batch:
    """What one list call produced after normalizing: samples, pod labels and rejections."""

    kind: Kind
    samples: tuple[Sample, ...] = ()
    pod_labels: Mapping[PodRef, Mapping[str, str]] = field(default_factory=dict)
    rejections: tuple[Rejection, ...] = ()


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int
    skipped_duplicates: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The latest values of every series seen by the last successful poll of each kind."""

    taken_at_ms: int
    nodes: tuple[Sample, ...] = ()
    containers: tuple[Sample, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Raw samples of one resource for the series matching every given filter, in
    ``[start_ms, end_ms]`` (both inclusive)."""

    resource: Resource
    kind: Kind
    start_ms: int
    end_ms: int
    node: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesPoints:
    """One series' identity labels and its ``(timestamp_ms, value)`` points in time order;
    values are integer nanocores (CPU) or bytes (memory)."""

    labels: Mapping[str, str]
    points: list[tuple[int, int]]
