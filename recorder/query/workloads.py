"""Workloads: which stored series make up each workload, and the requests, limits and node
allocatable in effect over time (from the cluster-objects tables, ``recorder.store.objects``).

A pod's workload is its top-level owner as the worker recorded it when it first saw the pod
(``pod_workloads``: Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet without a
Deployment, another controller's kind, or ``Pod``), kept after the pod is gone, so a workload's
members include every pod it ever had: its history survives rollouts that rename every pod. A
pod with no recorded workload (history from before cluster objects were read, or a recorder
without their RBAC) is a workload of its own: kind ``Pod``, name the pod's ("bare pod").

The public, stable interface (``recorder.query.recommend`` and the history queries build on
it; do not rename):

``WorkloadKey(cluster, namespace, kind, name)``
    A named tuple; ``str()`` is ``namespace/Kind/name``.
``WorkloadFilter(cluster=None, namespaces=(), kind=None, name=None, container=None,
selector=None)``
    Which workloads and series: ``namespaces`` empty means all; ``kind`` is compared without
    case (``deployment`` finds ``Deployment``); ``container`` keeps only the series of that
    container name; ``selector`` matches pod labels (a workload's members are the pods that
    match it).
``workload_members(conn, where, *, kinds=(Kind.CONTAINER,)) -> dict[WorkloadKey, list[Series]]``
    Every workload with at least one stored series of ``kinds`` (``Kind.CONTAINER`` and/or
    ``Kind.POD``, the pods' statistics series made by compaction), sorted by key, each with
    its series in id order. A container series carries its container name
    (``Series.container``) and its pod (``Series.pod``); pod series have container ``""`` and
    are left out by a ``container`` filter.
``container_requests(conn, where, *, until_ms=None) -> dict[tuple[WorkloadKey, str],
list[ContainerResources]]``
    The requests/limits history of every pod of each workload, per (workload, container name):
    ``store.objects.ContainerResources`` rows (pod, ``since_ms``, requests and limits, restart
    count, last termination reason; ``None`` = not set) in time order (then pod). A row holds
    from its ``since_ms`` until the next row of the same pod and container. Pods with rows but
    no samples count (and vice versa). Only rows since at most ``until_ms`` when given.
``current_requests(history) -> dict[tuple[WorkloadKey, str], Requests]``
    Pure: what a workload's container requests now, from ``container_requests``' answer: the
    newest row of the pod that appeared last (its template is the workload's current one, even
    while an older pod restarts during a rollout).
``in_effect(rows, at_ms)``
    Pure: of one pod's (or node's) time-ordered rows, the one in effect at ``at_ms`` (the
    newest with ``since_ms <= at_ms``), or ``None`` before the first.
``node_allocatable(conn, *, cluster=None, nodes=(), until_ms=None) -> dict[tuple[str, str],
list[NodeResources]]``
    Each node's capacity/allocatable history by (cluster, node), in time order.
``workload_of_pods(conn, *, cluster=None, namespaces=()) -> WorkloadOf`` and
``workload_of(found, cluster, namespace, pod) -> WorkloadKey``
    Every recorded pod's workload, and one pod's (its own bare-pod workload when it has
    none recorded): for grouping series by workload.
``span(stamps, instants, lookback_ms)``, ``newest_within(stamps, instants, lookback_ms)``
    Pure (``recorder.stats.align``, shared with compaction): the instants where one run can
    count, and its sample counted at each.
``aligned_sum(runs, instants, lookback_ms)``
    Pure (``recorder.stats.align``): a workload's value at each instant, as PromQL's ``sum``
    aligns series that report at different instants: each run's (pod's) newest sample in
    ``(t - lookback_ms, t]``, summed; instants where no run has one are left out (missing
    is missing, not zero).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from sqlalchemy import Connection

from recorder.domain import Kind, QueryKind, SeriesFilter
from recorder.errors import QueryError
from recorder.selectors import LabelSelector
from recorder.stats.align import aligned_sum, newest_within, span
from recorder.store.objects import (
    BARE_POD,
    ContainerResources,
    NodeResources,
    WorkloadOf,
    read_container_resources,
    read_node_resources,
    read_pod_workloads,
)
from recorder.store.series import Series, select_series

__all__ = [
    "BARE_POD",
    "ContainerResources",
    "NodeResources",
    "Requests",
    "WorkloadFilter",
    "WorkloadKey",
    "WorkloadOf",
    "aligned_sum",
    "container_requests",
    "current_requests",
    "in_effect",
    "newest_within",
    "node_allocatable",
    "span",
    "workload_members",
    "workload_of",
    "workload_of_pods",
]


class WorkloadKey(NamedTuple):
    cluster: str
    namespace: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class WorkloadFilter:
    """Which workloads (and which of their series); see the module docstring."""

    cluster: str | None = None
    namespaces: tuple[str, ...] = ()
    kind: str | None = None
    name: str | None = None
    container: str | None = None
    selector: LabelSelector | None = None

    @classmethod
    def of(cls, where: SeriesFilter, *, series: bool = True) -> WorkloadFilter:
        """The workloads a history filter names; ``series``: its container and selector too
        (else every series of those workloads)."""
        return cls(
            where.cluster,
            namespaces_of(where),
            where.workload_kind,
            where.workload,
            where.container if series else None,
            where.selector if series else None,
        )


def namespaces_of(where: SeriesFilter) -> tuple[str, ...]:
    """The namespaces a history filter restricts to, as ``WorkloadFilter.namespaces`` takes
    them (empty: all): the one named, else the readable ones access control passed."""
    if where.namespace is not None:
        return (where.namespace,)
    return tuple(sorted(where.namespaces)) if where.namespaces is not None else ()


@dataclass(frozen=True, slots=True)
class Requests:
    """A container's requests and limits (``None``: not set)."""

    cpu_request_nanocores: int | None
    cpu_limit_nanocores: int | None
    memory_request_bytes: int | None
    memory_limit_bytes: int | None

    @classmethod
    def of(cls, row: ContainerResources) -> Requests:
        return cls(
            row.cpu_request_nanocores,
            row.cpu_limit_nanocores,
            row.memory_request_bytes,
            row.memory_limit_bytes,
        )


def _workload(
    workload_of: Mapping[tuple[str, str, str], tuple[str, str]], cluster: str, ns: str, pod: str
) -> WorkloadKey:
    kind, name = workload_of.get((cluster, ns, pod), (BARE_POD, pod))
    return WorkloadKey(cluster, ns, kind, name)


def workload_of_pods(
    conn: Connection, *, cluster: str | None = None, namespaces: Sequence[str] = ()
) -> WorkloadOf:
    """Every recorded pod's workload: (cluster, namespace, pod) -> (kind, name)."""
    return read_pod_workloads(conn, cluster=cluster, namespaces=namespaces)


def workload_of(found: WorkloadOf, cluster: str, namespace: str, pod: str) -> WorkloadKey:
    """A pod's workload in ``workload_of_pods``' answer; its own (kind Pod) when it has none."""
    return _workload(found, cluster, namespace, pod)


def _wanted(where: WorkloadFilter, key: WorkloadKey) -> bool:
    if where.kind is not None and key.kind.lower() != where.kind.lower():
        return False
    return where.name is None or key.name == where.name


def workload_members(
    conn: Connection, where: WorkloadFilter, *, kinds: Sequence[Kind] = (Kind.CONTAINER,)
) -> dict[WorkloadKey, list[Series]]:
    """Each workload's stored series of ``kinds`` (see the module docstring)."""
    if Kind.NODE in kinds:
        raise QueryError("nodes belong to no workload")
    found: list[Series] = []
    for namespace in where.namespaces or (None,):
        chosen = SeriesFilter(
            QueryKind.CONTAINER,
            None,
            namespace,
            None,
            where.container,
            where.selector,
            where.cluster,
        )
        found.extend(select_series(conn, kinds, chosen).values())
    if not found:
        return {}
    workload_of = read_pod_workloads(conn, cluster=where.cluster, namespaces=where.namespaces)
    members: dict[WorkloadKey, list[Series]] = {}
    for series in found:
        key = _workload(workload_of, series.cluster, series.namespace, series.pod)
        if _wanted(where, key):
            members.setdefault(key, []).append(series)
    return {key: sorted(members[key], key=_series_id) for key in sorted(members)}


def _series_id(series: Series) -> int:
    return series.id


def container_requests(
    conn: Connection, where: WorkloadFilter, *, until_ms: int | None = None
) -> dict[tuple[WorkloadKey, str], list[ContainerResources]]:
    """Each workload's requests/limits history per container name (module docstring)."""
    pods: list[tuple[str, str, str]] | None = None
    if where.selector is not None:
        # Labels live beside the series: the pods the selector matches are those with series.
        members = workload_members(conn, where)
        pods = sorted({(s.cluster, s.namespace, s.pod) for m in members.values() for s in m})
        if not pods:
            return {}
    rows = read_container_resources(
        conn, cluster=where.cluster, namespaces=where.namespaces, pods=pods, until_ms=until_ms
    )
    if where.container is not None:
        rows = [r for r in rows if r.container == where.container]
    if not rows:
        return {}
    workload_of = read_pod_workloads(conn, cluster=where.cluster, namespaces=where.namespaces)
    out: dict[tuple[WorkloadKey, str], list[ContainerResources]] = {}
    for row in rows:
        key = _workload(workload_of, row.cluster, row.namespace, row.pod)
        if _wanted(where, key):
            out.setdefault((key, row.container), []).append(row)
    return {key: sorted(out[key], key=_when) for key in sorted(out)}


def _when(row: ContainerResources) -> tuple[int, str]:
    return row.since_ms, row.pod


def current_requests(
    history: Mapping[tuple[WorkloadKey, str], Sequence[ContainerResources]],
) -> dict[tuple[WorkloadKey, str], Requests]:
    """The current requests and limits of each (workload, container name) (module docstring)."""
    out: dict[tuple[WorkloadKey, str], Requests] = {}
    for key, rows in history.items():
        first_seen: dict[str, int] = {}
        newest: dict[str, ContainerResources] = {}
        for row in rows:  # time-ordered
            first_seen.setdefault(row.pod, row.since_ms)
            newest[row.pod] = row
        if not newest:
            continue
        last_pod = max(first_seen, key=lambda pod: (first_seen[pod], pod))
        out[key] = Requests.of(newest[last_pod])
    return out


class _Since(Protocol):
    @property
    def since_ms(self) -> int: ...


_R = TypeVar("_R", bound=_Since)


def in_effect(rows: Sequence[_R], at_ms: int) -> _R | None:
    """Of time-ordered rows (one pod's container, or one node), the one in effect at
    ``at_ms``: the newest with ``since_ms <= at_ms``; ``None`` before the first."""
    low, high = 0, len(rows)
    while low < high:
        middle = (low + high) // 2
        if rows[middle].since_ms <= at_ms:
            low = middle + 1
        else:
            high = middle
    return rows[low - 1] if low else None


def node_allocatable(
    conn: Connection,
    *,
    cluster: str | None = None,
    nodes: Sequence[str] = (),
    until_ms: int | None = None,
) -> dict[tuple[str, str], list[NodeResources]]:
    """Each node's capacity and allocatable history, by (cluster, node), in time order."""
    out: dict[tuple[str, str], list[NodeResources]] = {}
    for row in read_node_resources(conn, cluster=cluster, nodes=nodes, until_ms=until_ms):
        out.setdefault((row.cluster, row.node), []).append(row)
    return out
