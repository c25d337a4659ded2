"""Plain domain values shared by every layer (no third-party imports).

Units are in the names: CPU in integer nanocores, memory in integer bytes, times in integer
milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import overload

from recorder.selectors import LabelSelector


class Kind(StrEnum):
    """What a series measures: a node as a whole, one container of a pod, or a pod as a whole
    (the sum of its containers at each instant; made by compaction, never polled)."""

    NODE = "node"
    CONTAINER = "container"
    POD = "pod"


DEFAULT_CLUSTER = "default"
"""The ``cluster`` of every series when none is configured (``RECORDER_CLUSTER``)."""
DEFAULT_INTERVAL_MS = 30_000
"""The poll interval when none is given (``RECORDER_INTERVAL``'s default): a workload query
aligns its pods at its multiples, and so does compaction."""


class Resource(StrEnum):
    CPU = "cpu"
    MEMORY = "memory"


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """The identity of one time series.

    Nodes have only ``node``; containers have ``namespace``, ``pod`` and ``container`` (the
    Metrics API does not say which node a pod runs on, so ``node`` is empty for them); pods have
    ``namespace`` and ``pod``. Every series belongs to a ``cluster``.
    """

    kind: Kind
    node: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""
    cluster: str = DEFAULT_CLUSTER
    _hash: int = field(init=False, repr=False, compare=False)
    """Computed once: a key is looked up several times per poll (writer, exporter)."""

    def __post_init__(self) -> None:
        identity = (self.kind, self.node, self.namespace, self.pod, self.container, self.cluster)
        object.__setattr__(self, "_hash", hash(identity))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[SeriesKey], tuple[Kind, str, str, str, str, str]]:
        # String hashes differ between processes: a key is rebuilt, never its hash copied.
        return SeriesKey, (
            self.kind,
            self.node,
            self.namespace,
            self.pod,
            self.container,
            self.cluster,
        )

    @classmethod
    def for_node(cls, node: str, cluster: str = DEFAULT_CLUSTER) -> SeriesKey:
        return cls(Kind.NODE, node=node, cluster=cluster)

    @classmethod
    def for_container(
        cls, namespace: str, pod: str, container: str, cluster: str = DEFAULT_CLUSTER
    ) -> SeriesKey:
        return cls(
            Kind.CONTAINER, namespace=namespace, pod=pod, container=container, cluster=cluster
        )

    @classmethod
    def for_pod(cls, namespace: str, pod: str, cluster: str = DEFAULT_CLUSTER) -> SeriesKey:
        return cls(Kind.POD, namespace=namespace, pod=pod, cluster=cluster)


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of one series, stamped with the Metrics API's own timestamp."""

    key: SeriesKey
    timestamp_ms: int
    window_ms: int
    cpu_nanocores: int
    memory_bytes: int


class Samples(Sequence[Sample]):
    """Samples as five parallel columns, one entry per sample: what a poll hands on.

    At 150,000 pods a poll has 200,000 samples; an object per sample costs more than all the
    rest of normalizing it, so the poll path (normalize, the writer, the buffer, the exporter)
    reads and writes the columns. Indexing and iterating give ``Sample`` objects, for the
    paths that are not hot. The columns are not changed once the ``Samples`` is handed on.
    """

    __slots__ = (
        "cpu_nanocores",
        "keys",
        "memory_bytes",
        "restored",
        "timestamps_ms",
        "windows_ms",
    )

    def __init__(
        self,
        keys: list[SeriesKey] | None = None,
        timestamps_ms: list[int] | None = None,
        windows_ms: list[int] | None = None,
        cpu_nanocores: list[int] | None = None,
        memory_bytes: list[int] | None = None,
        *,
        restored: bool = False,
    ) -> None:
        self.restored = restored
        """Read back from the write buffer: the keys are a transient copy of the poller's (a
        writer keeps the poller's own key objects, not these)."""
        self.keys: list[SeriesKey] = [] if keys is None else keys
        self.timestamps_ms: list[int] = [] if timestamps_ms is None else timestamps_ms
        self.windows_ms: list[int] = [] if windows_ms is None else windows_ms
        self.cpu_nanocores: list[int] = [] if cpu_nanocores is None else cpu_nanocores
        self.memory_bytes: list[int] = [] if memory_bytes is None else memory_bytes
        count = len(self.keys)
        if not (
            len(self.timestamps_ms)
            == len(self.windows_ms)
            == len(self.cpu_nanocores)
            == len(self.memory_bytes)
            == count
        ):
            raise ValueError("the columns of Samples must have one entry per sample each")

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> Samples:
        if isinstance(samples, Samples):
            return samples
        found = cls()
        for sample in samples:
            found.append(sample)
        return found

    @classmethod
    def joined(cls, parts: Iterable[Samples]) -> Samples:
        found = cls()
        for part in parts:
            found.keys += part.keys
            found.timestamps_ms += part.timestamps_ms
            found.windows_ms += part.windows_ms
            found.cpu_nanocores += part.cpu_nanocores
            found.memory_bytes += part.memory_bytes
        return found

    def append(self, sample: Sample) -> None:
        """Add one sample (while building, before the columns are handed on)."""
        self.keys.append(sample.key)
        self.timestamps_ms.append(sample.timestamp_ms)
        self.windows_ms.append(sample.window_ms)
        self.cpu_nanocores.append(sample.cpu_nanocores)
        self.memory_bytes.append(sample.memory_bytes)

    def rows(self) -> Iterator[tuple[SeriesKey, int, int, int, int]]:
        """(key, timestamp, window, cpu, memory) per sample, without a ``Sample`` each."""
        return zip(
            self.keys,
            self.timestamps_ms,
            self.windows_ms,
            self.cpu_nanocores,
            self.memory_bytes,
            strict=True,
        )

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> Samples: ...

    def __getitem__(self, index: int | slice) -> Sample | Samples:
        if isinstance(index, slice):
            return Samples(
                self.keys[index],
                self.timestamps_ms[index],
                self.windows_ms[index],
                self.cpu_nanocores[index],
                self.memory_bytes[index],
            )
        return Sample(
            self.keys[index],
            self.timestamps_ms[index],
            self.windows_ms[index],
            self.cpu_nanocores[index],
            self.memory_bytes[index],
        )

    def __iter__(self) -> Iterator[Sample]:
        return map(
            Sample,
            self.keys,
            self.timestamps_ms,
            self.windows_ms,
            self.cpu_nanocores,
            self.memory_bytes,
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Samples):
            return self._columns() == other._columns()
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # the columns are lists

    def _columns(self) -> tuple[list[SeriesKey], list[int], list[int], list[int], list[int]]:
        return (
            self.keys,
            self.timestamps_ms,
            self.windows_ms,
            self.cpu_nanocores,
            self.memory_bytes,
        )

    def __repr__(self) -> str:
        return f"Samples({list(self)!r})"


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
    samples: Samples = field(default_factory=Samples)
    pod_labels: Mapping[PodRef, Mapping[str, str]] = field(default_factory=dict)
    rejections: tuple[Rejection, ...] = ()
    cluster: str = DEFAULT_CLUSTER
    """The cluster of ``pod_labels`` (and of every sample: one list call, one cluster)."""

    def __post_init__(self) -> None:
        if not isinstance(self.samples, Samples):  # any sequence of ``Sample`` is taken
            object.__setattr__(self, "samples", Samples.of(self.samples))


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What ``Store.write`` did with a batch.

    Every sample of the batch is written, skipped as an exact duplicate, or rejected alone;
    ``rejected`` holds one rejection per refused sample and one per pod whose labels could not
    be stored (its detail starts with ``labels:``; the pod's samples may still be written).
    Reasons: ``out_of_range`` and ``invalid_text`` (checked against the columns before
    sending), ``database_rejected`` (the database refused it; the detail is its first message
    line).
    """

    written: int
    skipped_duplicates: int
    rejected: tuple[Rejection, ...] = ()


class QueryKind(StrEnum):
    """What a history query returns: nodes, containers, pods (the sum of their containers
    at each timestamp), or workloads (the sum of their pods, aligned at each instant as PromQL
    aligns: ``recorder.query.workloads``)."""

    NODE = "node"
    CONTAINER = "container"
    POD = "pod"
    WORKLOAD = "workload"

    @property
    def stored(self) -> Kind:
        return Kind.NODE if self is QueryKind.NODE else Kind.CONTAINER


class Agg(StrEnum):
    """How a bucket's samples become one value; ``stddev`` is the population standard
    deviation, ``pNN`` the NN-th percentile."""

    AVG = "avg"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    LAST = "last"
    STDDEV = "stddev"
    P50 = "p50"
    P75 = "p75"
    P90 = "p90"
    P95 = "p95"
    P99 = "p99"

    @property
    def quantile(self) -> float | None:
        return int(self.value[1:]) / 100 if self.value.startswith("p") else None


class Tier(StrEnum):
    RAW = "raw"
    STATISTICS = "chunk_statistics"


@dataclass(frozen=True, slots=True)
class SeriesFilter:
    """Which series: a kind and exact-match filters; ``selector`` matches pod labels."""

    kind: QueryKind
    node: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None
    selector: LabelSelector | None = None
    cluster: str | None = None
    workload_kind: str | None = None
    """The pods' top-level owner's kind (``Deployment``; compared without case)."""
    workload: str | None = None
    """The pods' top-level owner's name (a bare pod's is its own)."""
    namespaces: frozenset[str] | None = None
    """Only series of these namespaces (the caller's readable ones, when access control filters
    an answer); ``None``: no such restriction. Node series have no namespace: a set excludes
    them."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Samples of one resource for the series matching ``where`` in ``[start_ms, end_ms]``
    (both inclusive): raw, or aggregated with ``agg`` in buckets of ``step_ms`` aligned to
    multiples of ``step_ms`` since the epoch (a point's timestamp is its bucket's start)."""

    resource: Resource
    where: SeriesFilter
    start_ms: int
    end_ms: int
    step_ms: int | None = None
    agg: Agg = Agg.AVG


Value = int | float | Fraction
"""Integer nanocores or bytes; an exact Fraction for averages; a float for percentiles."""


@dataclass(frozen=True, slots=True)
class SeriesPoints:
    """One series' identity labels and its ``(timestamp_ms, value)`` points in time order;
    values are in nanocores (CPU) or bytes (memory)."""

    labels: Mapping[str, str]
    points: list[tuple[int, Value]]
    request: list[int | None] | None = None
    """With requests asked for: the request in effect at each point (``None``: not known),
    in nanocores or bytes; see ``recorder.query.requests_limits``."""
    limit: list[int | None] | None = None
    """Likewise the limit (``None``: not known, or no limit)."""
    allocatable: list[int | None] | None = None
    """With allocatable asked for (nodes): the node's allocatable in effect at each point
    (``None``: not recorded), in nanocores or bytes."""


@dataclass(frozen=True, slots=True)
class HistoryResult:
    series: list[SeriesPoints]
    tier: Tier
    relative_error: float = 0.0
    """Bound on the relative error of percentile values (0 when they are exact)."""


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    labels: Mapping[str, str]
    first_seen_ms: int
    last_seen_ms: int
    pod_labels: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ResourceSummary:
    samples: int
    avg: float
    max: int
    p95: float
    integral: float
    """Usage integral in unit-seconds (core-seconds, byte-seconds)."""
    coverage: float


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group: str
    series: int
    cpu: ResourceSummary | None
    memory: ResourceSummary | None
