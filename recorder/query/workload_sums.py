"""Workloads over time: each workload's (or each workload's container name's) sum over its
pods, aligned as PromQL's ``sum`` aligns series that report at different instants.

At each instant ``t`` (the multiples of the resolution, by default the poll interval, in the
range), each pod's newest sample in ``(t - 2 * interval, t]`` is taken and the pods' values
are summed (``workloads.aligned_sum``); an instant where no pod has one has no value (missing
is missing). A pod renamed by a rollout is just another member of its workload, so the sum is
continuous across rollouts. Always computed from the samples (``max_samples`` bounds how many
are decoded): pods' statistics do not add up to a sum at each instant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection

from recorder.domain import Resource, SeriesFilter
from recorder.errors import QueryError
from recorder.query.scan import Scan, Unit
from recorder.query.workloads import WorkloadFilter, aligned_sum, workload_members
from recorder.store.series import Series

__all__ = ["Aligned", "Workload", "workload_series", "workload_units"]


@dataclass(frozen=True, slots=True)
class Workload:
    """One output series of ``kind=workload``: its labels (cluster, namespace,
    workload_kind, workload; and container when split by container name), its newest pod's
    labels and every series it is made of."""

    labels: dict[str, str]
    pod_labels: Mapping[str, str] | None
    members: tuple[Series, ...]


@dataclass(frozen=True, slots=True)
class Aligned:
    """A workload's aligned sum per resource: (instants with a value, the sums)."""

    labels: dict[str, str]
    values: dict[Resource, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]


def workload_units(
    conn: Connection, where: SeriesFilter, *, by_container: bool = False
) -> tuple[list[Workload], list[Unit], list[int]]:
    """Each workload ``where`` matches (split by container name with ``by_container``), its
    pods as units (a pod's containers summed at each instant; only the ``container`` named,
    when one is), and each unit's workload index."""
    if where.node is not None or where.pod is not None:
        raise QueryError(
            "kind=workload sums a workload's pods: filter by namespace, workload_kind, "
            "workload, container or selector"
        )
    members = workload_members(
        conn,
        WorkloadFilter(
            where.cluster,
            (where.namespace,) if where.namespace is not None else (),
            where.workload_kind,
            where.workload,
            where.container,
            where.selector,
        ),
    )
    outputs: list[Workload] = []
    units: list[Unit] = []
    owner: list[int] = []
    for key, series in members.items():
        labels = {
            "cluster": key.cluster,
            "namespace": key.namespace,
            "workload_kind": key.kind,
            "workload": key.name,
        }
        parts: dict[str | None, list[Series]] = {}
        for s in series:
            parts.setdefault(s.container if by_container else where.container, []).append(s)
        for container, found in sorted(parts.items(), key=lambda item: item[0] or ""):
            shown = labels if container is None else {**labels, "container": container}
            by_pod: dict[str, list[int]] = {}
            for s in found:
                by_pod.setdefault(s.pod, []).append(s.id)
            outputs.append(Workload(shown, found[-1].pod_labels, tuple(found)))
            for ids in by_pod.values():
                units.append(Unit((), tuple(ids)))
                owner.append(len(outputs) - 1)
    return outputs, units, owner


def workload_series(
    conn: Connection,
    where: SeriesFilter,
    start_ms: int,
    end_ms: int,
    resources: Sequence[Resource],
    *,
    block_ms: int,
    interval_ms: int,
    resolution_ms: int,
    max_samples: int,
    by_container: bool = False,
) -> list[Aligned]:
    """Each workload's aligned sum of ``resources`` at the multiples of ``resolution_ms`` in
    ``[start_ms, end_ms]``, pods' samples within ``2 * interval_ms`` before each instant
    (``block_ms``: the store's block); workloads without a value in the range are left out.
    At most ``max_samples`` samples are decoded and instants evaluated."""
    resolution = max(resolution_ms, 1)
    lookback = 2 * max(interval_ms, 1)
    first = -(-start_ms // resolution) * resolution
    count = 0 if first > end_ms else (end_ms - first) // resolution + 1
    outputs, units, owner = workload_units(conn, where, by_container=by_container)
    if not units:
        return []
    if count * len(outputs) > max_samples:
        raise QueryError(
            f"the query would align more than {max_samples} instants: use a larger step, or "
            "narrow the time range or the filters"
        )
    scan = Scan(
        units,
        start_ms=max(start_ms - lookback + 1, 0),
        end_ms=end_ms,
        block_ms=block_ms,
        max_samples=max_samples,
    )
    runs = scan.samples(conn)
    instants = first + resolution * np.arange(count, dtype=np.int64)
    per_output: list[list[int]] = [[] for _ in outputs]
    for unit in runs:
        per_output[owner[unit]].append(unit)
    found: list[Aligned] = []
    for output, pods in zip(outputs, per_output, strict=True):
        values = {}
        for resource in resources:
            columns = [
                (
                    runs[u].timestamps_ms,
                    runs[u].cpu_nanocores if resource is Resource.CPU else runs[u].memory_bytes,
                )
                for u in pods
            ]
            values[resource] = aligned_sum(columns, instants, lookback)
        if pods and len(values[resources[0]][0]):
            found.append(Aligned(output.labels, values))
    return found
