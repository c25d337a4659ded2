"""Workloads over time: each workload's (or each workload's container name's) sum over its
pods, aligned as PromQL's ``sum`` aligns series that report at different instants.

At each instant ``t`` (the multiples of the resolution, by default the poll interval, in the
range), each pod's newest sample in ``(t - 2 * interval, t]`` is taken and the pods' values
are summed (``stats.align.aligned_sum``); an instant where no pod has one has no value (missing
is missing). A pod renamed by a rollout is just another member of its workload, so the sum is
continuous across rollouts. Computed from the samples (``max_samples`` bounds how many are
decoded; pods' statistics do not add up to a sum at each instant), except where compaction
took the workloads' statistics (``recorder.store.workload_stats``): a history whose step is a
multiple of the block reads those blocks' statistics and the rest's samples
(``workload_gathered``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection

from recorder.domain import Resource, SeriesFilter
from recorder.errors import QueryError
from recorder.query import requests_limits
from recorder.query.requests_limits import Lines
from recorder.query.scan import Gathered, Scan, Unit
from recorder.query.workloads import (
    BARE_POD,
    WorkloadFilter,
    aligned_sum,
    newest_within,
    span,
    workload_members,
)
from recorder.stats.buckets import BucketOf
from recorder.stats.codec import ChunkSamples
from recorder.store import workload_stats
from recorder.store.series import Series
from recorder.timeutil import floor_to

__all__ = [
    "Aligned",
    "Workload",
    "workload_gathered",
    "workload_key",
    "workload_series",
    "workload_units",
]

_WORK_PER_SAMPLE = 4
"""How many (pod, instant) pairs a workload query may evaluate per sample it may decode: the
bound on its CPU time besides ``max_samples``."""


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
    lines: dict[Resource, Lines] | None = None
    """With ``with_requests``: the request and limit at each instant with a value
    (``requests_limits``)."""


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
    members = workload_members(conn, WorkloadFilter.of(where))
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
    with_requests: bool = False,
    decoded: int = 0,
) -> tuple[list[Aligned], int]:
    """Each workload's aligned sum of ``resources`` at the multiples of ``resolution_ms`` in
    ``[start_ms, end_ms]``, pods' samples within ``2 * interval_ms`` before each instant
    (``block_ms``: the store's block); workloads without a value in the range are left out.
    At most ``max_samples`` samples are decoded and instants evaluated. ``with_requests``:
    also the requests and limits of the pods counted at each instant.
    Also how many samples the answer has decoded, ``decoded`` (those of the same answer
    decoded before) included, all counted against ``max_samples``."""
    resolution = max(resolution_ms, 1)
    lookback = 2 * max(interval_ms, 1)
    first = -(-start_ms // resolution) * resolution
    count = 0 if first > end_ms else (end_ms - first) // resolution + 1
    outputs, units, owner = workload_units(conn, where, by_container=by_container)
    if not units:
        return [], decoded
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
        decoded=decoded,
    )
    try:
        runs = scan.samples(conn)
    except QueryError:
        raise QueryError(
            f"the query needs more than {max_samples} raw samples (a workload's sum is computed "
            "from its pods' samples, not from block statistics): narrow the time range, or "
            "filter by namespace, workload or container"
        ) from None
    instants = first + resolution * np.arange(count, dtype=np.int64)
    per_output: list[list[int]] = [[] for _ in outputs]
    work = 0
    for unit, run in runs.items():
        per_output[owner[unit]].append(unit)
        low, high = span(run.timestamps_ms, instants, lookback)
        work += max(high - low, 0)
    if work > _WORK_PER_SAMPLE * max_samples:
        raise QueryError(
            f"the query would align more than {_WORK_PER_SAMPLE * max_samples} pod-instants: "
            "use a larger step, or narrow the time range or the filters"
        )
    loaded: requests_limits.Loaded = {}
    if with_requests:
        loaded = requests_limits.load(
            conn, ((s.cluster, s.namespace, s.pod) for o in outputs for s in o.members), end_ms
        )
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
        if not pods or not len(values[resources[0]][0]):
            continue
        lines = None
        if with_requests:
            lines = {
                r: _pods_lines(
                    output,
                    [units[u] for u in pods],
                    [runs[u] for u in pods],
                    instants,
                    lookback,
                    loaded,
                    r,
                )
                for r in resources
            }
        found.append(Aligned(output.labels, values, lines))
    return found, scan.decoded


def workload_key(labels: Mapping[str, str]) -> workload_stats.WorkloadKey:
    """(cluster, namespace, workload kind, workload name) of a workload's labels."""
    return (labels["cluster"], labels["namespace"], labels["workload_kind"], labels["workload"])


def workload_gathered(
    conn: Connection,
    where: SeriesFilter,
    start_ms: int,
    end_ms: int,
    resource: Resource,
    *,
    bucket_of: BucketOf,
    names: Sequence[str],
    block_ms: int,
    interval_ms: int,
    max_samples: int,
) -> tuple[list[Workload], Gathered]:
    """Each workload ``where`` matches (whole: no container or selector filter) and what
    answers its buckets (``bucket_of``, whose buckets hold whole blocks): the statistics
    columns ``names`` of each block compaction took its workloads' statistics for
    (``workload_stats``; a workload without a row there had no sample), and the aligned sum
    of the samples of every other block of the range (the newest, not compacted yet; those
    the range cuts through; those compacted before workload statistics were taken) and of a
    bare pod's whole range (it has none), at most ``max_samples`` decoded in all.
    ``Gathered``'s series ids are the workloads' indexes."""
    outputs, _units, _owner = workload_units(conn, where)
    keys = [workload_key(o.labels) for o in outputs]
    index_of = {key: i for i, key in enumerate(keys)}
    namespaces = sorted({(key[0], key[1]) for key in keys})
    taken = workload_stats.taken_blocks(conn, namespaces, start_ms, end_ms - block_ms + 1)
    rows = [
        row
        for row in workload_stats.read_rows(conn, keys, start_ms, end_ms, names, block_ms=block_ms)
        if row[1] in taken[(keys[row[0]][0], keys[row[0]][1])]
    ]
    blocks = np.arange(floor_to(start_ms, block_ms), end_ms + 1, block_ms, dtype=np.int64)
    # The namespaces whose blocks lack statistics in the same spans are read together (the
    # newest block and the range's edges: usually every namespace's).
    # A bare pod (its own workload, kind Pod) has no workload statistics: read from samples
    # over the whole range, apart.
    together: dict[tuple[str, bool, int, int], list[str]] = {}
    for cluster, namespace in namespaces:
        done = np.fromiter(taken[(cluster, namespace)], np.int64)
        for first, end in _spans(blocks[~np.isin(blocks, done)], block_ms):
            together.setdefault((cluster, False, first, end), []).append(namespace)
    for cluster, namespace in sorted({(k[0], k[1]) for k in keys if k[2] == BARE_POD}):
        together.setdefault((cluster, True, start_ms, end_ms + 1), []).append(namespace)
    parts: dict[int, list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]] = {}
    decoded = 0
    for (cluster, bare, first, end), names_read in sorted(together.items()):
        read = replace(where, cluster=cluster, namespace=None, namespaces=frozenset(names_read))
        found, decoded = workload_series(
            conn,
            replace(read, workload_kind=BARE_POD) if bare else read,
            max(first, start_ms),
            min(end - 1, end_ms),
            (resource,),
            block_ms=block_ms,
            interval_ms=interval_ms,
            resolution_ms=interval_ms,
            max_samples=max_samples,
            decoded=decoded,
        )
        for one in found:
            key = workload_key(one.labels)
            if (key[2] == BARE_POD) is bare:  # each workload from one source only
                parts.setdefault(index_of[key], []).append(one.values[resource])
    runs: dict[int, ChunkSamples] = {}
    for index, found_parts in parts.items():
        stamps = np.concatenate([p[0] for p in found_parts]).tolist()
        sums = np.concatenate([p[1] for p in found_parts]).tolist()
        runs[index] = ChunkSamples(stamps, [0] * len(stamps), sums, sums)
    units = np.fromiter((row[0] for row in rows), np.int64, len(rows))
    starts = np.fromiter((row[1] for row in rows), np.int64, len(rows))
    return outputs, Gathered(rows, tuple(names), units, bucket_of.many(starts), runs)


def _spans(blocks: npt.NDArray[np.int64], block_ms: int) -> list[tuple[int, int]]:
    """Ascending block starts as ``[first, end)`` spans of consecutive blocks."""
    if not len(blocks):
        return []
    breaks = np.flatnonzero(np.diff(blocks) != block_ms) + 1
    firsts = blocks[np.concatenate(([0], breaks))]
    lasts = blocks[np.concatenate((breaks - 1, [len(blocks) - 1]))]
    return list(zip(firsts.tolist(), (lasts + block_ms).tolist(), strict=True))


def _pods_lines(
    output: Workload,
    pods: Sequence[Unit],
    runs: Sequence[ChunkSamples],
    instants: npt.NDArray[np.int64],
    lookback_ms: int,
    loaded: requests_limits.Loaded,
    resource: Resource,
) -> Lines:
    """A workload's request and limit at the instants where it has a value: the sum over
    the pods counted at each (``requests_limits``)."""
    by_id = {s.id: s for s in output.members}
    n = len(instants)
    request = requests_limits.Line(np.zeros(n, np.int64), np.ones(n, bool))
    limit = requests_limits.Line(np.zeros(n, np.int64), np.ones(n, bool))
    present = np.zeros(len(instants), bool)
    for unit, run in zip(pods, runs, strict=True):
        low, high = span(run.timestamps_ms, instants, lookback_ms)
        if low >= high:
            continue
        inside = instants[low:high]
        _at, counted = newest_within(run.timestamps_ms, inside, lookback_ms)
        first = by_id[unit.sample_ids[0]]
        names = sorted({by_id[i].container for i in unit.sample_ids})
        line = requests_limits.pod_line(
            loaded.get((first.cluster, first.namespace, first.pod), {}), names, inside, resource
        )
        request = _add_at(request, _where(line.request, counted), low, high)
        limit = _add_at(limit, _where(line.limit, counted), low, high)
        present[low:high] |= counted
    return Lines(
        requests_limits.Line(request.values[present], request.defined[present]),
        requests_limits.Line(limit.values[present], limit.defined[present]),
    )


def _add_at(
    total: requests_limits.Line, part: requests_limits.Line, low: int, high: int
) -> requests_limits.Line:
    """``total`` with ``part`` (of the instants ``[low, high)``) added in place."""
    total.values[low:high] += part.values
    total.defined[low:high] &= part.defined
    return total


def _where(line: requests_limits.Line, counted: npt.NDArray[np.bool_]) -> requests_limits.Line:
    """A pod's line where it counts; 0 and defined where it does not."""
    return requests_limits.Line(np.where(counted, line.values, 0), line.defined | ~counted)
