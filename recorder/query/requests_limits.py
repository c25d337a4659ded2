"""Requests and limits beside usage: the CPU or memory request and limit in effect at each
point of a history series, from the containers' recorded histories
(``store.objects.ContainerResources``, a row per change).

- A container's value at ``t`` is that of its newest row with ``since_ms <= t``; before its
  first row it is unknown.
- A pod's (or a workload's container name's, per pod) is the sum over its containers, as
  Kubernetes sums a pod's requests: a request that is not set counts 0; a limit that is not
  set makes the sum unlimited (``None``); a container whose value is unknown makes the sum
  unknown (``None``).
- A workload's at an aligned instant is the sum over the pods that count at that instant (a
  sample within the lookback, ``workloads.newest_within``): the pods whose usage is in the
  sum. Unknown or unlimited for any of them makes it ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection

from recorder.domain import Resource
from recorder.store.objects import ContainerResources, NodeResources, read_container_resources

__all__ = ["Line", "Lines", "in_effect", "load", "pod_line", "read_lines"]

PodKey = tuple[str, str, str]
"""(cluster, namespace, pod)"""

_COLUMNS = {
    Resource.CPU: ("cpu_request_nanocores", "cpu_limit_nanocores"),
    Resource.MEMORY: ("memory_request_bytes", "memory_limit_bytes"),
}


@dataclass(frozen=True, slots=True)
class Line:
    """Values at a run of instants, and which are defined (``None`` where not)."""

    values: npt.NDArray[np.int64]
    defined: npt.NDArray[np.bool_]

    def listed(self) -> list[int | None]:
        return [
            int(v) if ok else None
            for v, ok in zip(self.values.tolist(), self.defined.tolist(), strict=True)
        ]

    def __add__(self, other: Line) -> Line:
        return Line(self.values + other.values, self.defined & other.defined)


@dataclass(frozen=True, slots=True)
class Lines:
    request: Line
    limit: Line


Loaded = dict[PodKey, dict[str, list[ContainerResources]]]
"""Each pod's containers' rows, in time order."""


def load(conn: Connection, pods: Iterable[PodKey], until_ms: int) -> Loaded:
    """The requests/limits rows of ``pods``' containers since at most ``until_ms``."""
    wanted = sorted(set(pods))
    if not wanted:
        return {}
    out: Loaded = {}
    for row in read_container_resources(conn, pods=wanted, until_ms=until_ms):
        out.setdefault((row.cluster, row.namespace, row.pod), {}).setdefault(
            row.container, []
        ).append(row)
    return out


def in_effect(
    rows: Sequence[ContainerResources] | Sequence[NodeResources],
    stamps: npt.NDArray[np.int64],
    column: str,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """The value of ``column`` (``cpu_request_nanocores``, ``memory_allocatable_bytes``, ...)
    at ``stamps`` of one container's or node's change rows (time order; at least one): values
    (0 where none), known (a row in effect) and set (not NULL)."""
    since = np.fromiter((r.since_ms for r in rows), np.int64, len(rows))
    raw = [getattr(r, column) for r in rows]
    given = np.fromiter((v is not None for v in raw), bool, len(rows))
    values = np.fromiter((v or 0 for v in raw), np.int64, len(rows))
    at = np.searchsorted(since, stamps, "right") - 1
    known = at >= 0
    at = np.where(known, at, 0)
    is_set = known & given[at]
    return np.where(is_set, values[at], 0), known, is_set


def pod_line(
    containers: dict[str, list[ContainerResources]],
    names: Sequence[str],
    stamps: npt.NDArray[np.int64],
    resource: Resource,
) -> Lines:
    """The request and limit at ``stamps`` of a pod's containers ``names`` (module
    docstring); unknown everywhere when none of them has rows."""
    request_column, limit_column = _COLUMNS[resource]
    request = Line(np.zeros(len(stamps), np.int64), np.ones(len(stamps), bool))
    limit = Line(np.zeros(len(stamps), np.int64), np.ones(len(stamps), bool))
    if not names:
        none = np.zeros(len(stamps), bool)
        return Lines(Line(request.values, none), Line(limit.values, none))
    for name in names:
        rows = containers.get(name)
        if not rows:
            none = np.zeros(len(stamps), bool)
            return Lines(Line(request.values, none), Line(limit.values, none))
        values, known, _set = in_effect(rows, stamps, request_column)
        request = request + Line(values, known)
        values, known, is_set = in_effect(rows, stamps, limit_column)
        limit = limit + Line(values, known & is_set)
    return Lines(request, limit)


def read_lines(
    conn: Connection,
    members: Sequence[tuple[PodKey, Sequence[str]]],
    stamps: Sequence[int],
    resource: Resource,
) -> Lines:
    """The summed request and limit at ``stamps`` of ``members`` (each a pod and its
    container names), every member counting at every stamp: a pod's or a container's line."""
    at = np.asarray(stamps, np.int64)
    loaded = load(conn, (pod for pod, _names in members), int(at.max()) if len(at) else 0)
    total: Lines | None = None
    for pod, names in members:
        line = pod_line(loaded.get(pod, {}), names, at, resource)
        total = (
            line if total is None else Lines(total.request + line.request, total.limit + line.limit)
        )
    if total is None:
        none = np.zeros(len(at), bool)
        zero = np.zeros(len(at), np.int64)
        return Lines(Line(zero, none), Line(zero, none))
    return total
