"""Workloads' block statistics, taken at compaction: for each closed block, each workload's sum
over its pods, aligned as ``kind=workload`` aligns it (``recorder.stats.align``: at each
multiple of the poll interval in the block, each pod's newest sample within two intervals
before it), summarised as any series' block is (``recorder.stats.block``). A long-range
workload history then reads one row per workload per block instead of every sample of every
pod it ever had (``recorder.query.engine``), and still answers once the samples have expired.

A pod's value at an instant is the sum of its containers' samples at that instant (as a pod's
own statistics are). The lookback reaches into the block before: a pod whose newest sample
before an instant lies there counts with that block's last value, read from its containers'
statistics (``last_ms``, ``cpu_last``, ``memory_last``), not decoded. Pods belong to the
workload recorded for them (``pod_workloads``; a pod without one is its own workload, kind
``Pod``) when the block is compacted; a pod that is its own workload gets none (its pod's
statistics say as much, and without the cluster objects every pod would be one: 524 bytes a
row at 1,000 pods, a tenth more than their chunks), and its workload is read from samples.

Memory: one (cluster, namespace) at a time, and within it the samples of at most
``SLICE_SERIES`` container series at once (int64 columns), so a block of a 150,000-pod cluster
never holds its samples whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, select

from recorder.domain import Kind
from recorder.stats.align import aligned_sum
from recorder.stats.block import BlockStats
from recorder.stats.codec import ChunkSamples, decode_arrays, decode_samples
from recorder.store import chunks, schema
from recorder.store.engine import dialect_insert
from recorder.store.objects import BARE_POD, read_pod_workloads
from recorder.store.workload_stats import WorkloadKey

__all__ = ["instants_of", "take"]

SLICE_SERIES = 2_000
"""Container series whose samples are decoded at once."""
_UPSERT_ROWS = 1_000

Run = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]
"""A pod's (timestamps, cpu, memory), time-ordered."""


def instants_of(start_ms: int, end_ms: int, interval_ms: int) -> npt.NDArray[np.int64]:
    """The multiples of ``interval_ms`` in ``[start_ms, end_ms]``."""
    first = -(-start_ms // interval_ms) * interval_ms
    count = 0 if first > end_ms else (end_ms - first) // interval_ms + 1
    return first + interval_ms * np.arange(count, dtype=np.int64)


def take(
    conn: Connection,
    block_start_ms: int,
    *,
    block_ms: int,
    interval_ms: int,
    namespaces: Iterable[tuple[str, str]],
) -> int:
    """Take (or take again) the statistics of every workload with samples in the block at
    ``block_start_ms`` in each (cluster, namespace) of ``namespaces``, and record that they
    were taken; the number of workload rows written."""
    written = 0
    for cluster, namespace in sorted(set(namespaces)):
        written += _take_namespace(
            conn, cluster, namespace, block_start_ms, block_ms=block_ms, interval_ms=interval_ms
        )
    return written


def _take_namespace(
    conn: Connection,
    cluster: str,
    namespace: str,
    start: int,
    *,
    block_ms: int,
    interval_ms: int,
) -> int:
    c, s = schema.chunks, schema.series
    lookback = 2 * interval_ms
    containers = select(s.c.id, s.c.pod).where(
        s.c.kind == Kind.CONTAINER.value, s.c.cluster == cluster, s.c.namespace == namespace
    )
    # The block's container chunks with samples, and each pod's last instant before the block
    # within the lookback, from the block before (its containers' last values, summed).
    in_block: dict[str, list[int]] = {}
    for sid, pod in conn.execute(
        containers.join(c, c.c.series_id == s.c.id).where(
            c.c.block_start_ms == start, c.c.payload.is_not(None)
        )
    ):
        in_block.setdefault(pod, []).append(sid)
    tails: dict[str, tuple[int, int, int]] = {}
    for pod, last_ms, cpu, memory in conn.execute(
        select(s.c.pod, c.c.last_ms, c.c.cpu_last, c.c.memory_last)
        .join(c, c.c.series_id == s.c.id)
        .where(s.c.kind == Kind.CONTAINER.value, s.c.cluster == cluster)
        .where(s.c.namespace == namespace)
        .where(c.c.block_start_ms >= start - block_ms, c.c.block_start_ms < start)
        .where(c.c.last_ms > start - lookback, c.c.last_ms < start)
    ):
        found = tails.get(pod)
        if found is None or last_ms > found[0]:
            tails[pod] = (last_ms, cpu, memory)
        elif last_ms == found[0]:
            tails[pod] = (last_ms, found[1] + cpu, found[2] + memory)
    _mark(conn, cluster, namespace, start)
    if not in_block and not tails:
        return 0
    owners = read_pod_workloads(conn, cluster=cluster, namespaces=[namespace])
    members: dict[WorkloadKey, list[str]] = {}
    for pod in sorted(in_block.keys() | tails.keys()):
        owner = owners.get((cluster, namespace, pod))
        if owner is not None and owner[0] != BARE_POD:  # a bare pod has its pod's statistics
            members.setdefault((cluster, namespace, owner[0], owner[1]), []).append(pod)
    instants = instants_of(start, start + block_ms - 1, interval_ms)
    pod_of = {sid: pod for pod, sids in in_block.items() for sid in sids}
    rows: list[dict[str, Any]] = []
    written = 0
    for part in _slices(members, in_block):
        ids = [sid for _key, pods in part for pod in pods for sid in in_block.get(pod, ())]
        runs = _pod_runs(conn, ids, start, block_ms, pod_of)
        for key, pods in part:
            pod_runs = [_with_tail(runs.get(pod), tails.get(pod)) for pod in pods]
            stats = _stats(pod_runs, instants, lookback)
            if stats is None:
                continue
            rows.append(
                {
                    "cluster": key[0],
                    "namespace": key[1],
                    "workload_kind": key[2],
                    "workload_name": key[3],
                    "block_start_ms": start,
                    **stats.to_columns(),
                }
            )
            if len(rows) >= _UPSERT_ROWS:
                written += _upsert(conn, rows)
                rows = []
    if rows:
        written += _upsert(conn, rows)
    return written


def _slices(
    members: dict[WorkloadKey, list[str]], in_block: dict[str, list[int]]
) -> Iterator[list[tuple[WorkloadKey, list[str]]]]:
    """The workloads in parts of about ``SLICE_SERIES`` container series (a workload whole)."""
    part: list[tuple[WorkloadKey, list[str]]] = []
    size = 0
    for key in sorted(members):
        pods = members[key]
        part.append((key, pods))
        size += sum(len(in_block.get(pod, ())) for pod in pods)
        if size >= SLICE_SERIES:
            yield part
            part, size = [], 0
    if part:
        yield part


def _pod_runs(
    conn: Connection, ids: Sequence[int], start: int, block_ms: int, pod_of: dict[int, str]
) -> dict[str, Run]:
    """Each pod's samples in the block: its containers' summed at each instant."""
    if not ids:
        return {}
    payloads = chunks.read_payloads_in_range(
        conn, ids, start, start + block_ms - 1, block_ms=block_ms
    )
    columns = _columns([payload for _sid, _start, payload in payloads])
    parts: dict[str, list[Run]] = {}
    for (sid, _start, _payload), run in zip(payloads, columns, strict=True):
        parts.setdefault(pod_of[sid], []).append(run)
    return {pod: found[0] if len(found) == 1 else _summed(found) for pod, found in parts.items()}


def _columns(payloads: Sequence[bytes]) -> list[Run]:
    """Each payload's samples as int64 columns (one by one when they may not fit)."""
    arrays = decode_arrays(payloads) if payloads else None
    if arrays is None:
        out = []
        for payload in payloads:
            run = decode_samples(payload)
            out.append(_as_run(run))
        return out
    ends = np.cumsum(arrays.counts)
    begins = ends - np.asarray(arrays.counts)
    return [
        (
            arrays.timestamps_ms[b:e],
            arrays.cpu_nanocores[b:e],
            arrays.memory_bytes[b:e],
        )
        for b, e in zip(begins.tolist(), ends.tolist(), strict=True)
    ]


def _as_run(run: ChunkSamples) -> Run:
    return (
        np.asarray(run.timestamps_ms, np.int64),
        np.asarray(run.cpu_nanocores, np.int64),
        np.asarray(run.memory_bytes, np.int64),
    )


def _summed(runs: Sequence[Run]) -> Run:
    """Several containers' runs summed at each instant any of them has (``dedup.sum_runs``)."""
    stamps = np.concatenate([r[0] for r in runs])
    order, where = np.unique(stamps, return_inverse=True)
    cpu = np.zeros(len(order), np.int64)
    memory = np.zeros(len(order), np.int64)
    np.add.at(cpu, where, np.concatenate([r[1] for r in runs]))
    np.add.at(memory, where, np.concatenate([r[2] for r in runs]))
    return order, cpu, memory


def _with_tail(run: Run | None, tail: tuple[int, int, int] | None) -> Run | None:
    if tail is None:
        return run
    last_ms, cpu, memory = tail
    head: Run = (
        np.array([last_ms], np.int64),
        np.array([cpu], np.int64),
        np.array([memory], np.int64),
    )
    if run is None:
        return head
    return (
        np.concatenate((head[0], run[0])),
        np.concatenate((head[1], run[1])),
        np.concatenate((head[2], run[2])),
    )


def _stats(
    runs: Sequence[Run | None], instants: npt.NDArray[np.int64], lookback_ms: int
) -> BlockStats | None:
    present = [run for run in runs if run is not None]
    at, cpu = aligned_sum([(r[0], r[1]) for r in present], instants, lookback_ms)
    if not len(at):
        return None
    _at, memory = aligned_sum([(r[0], r[2]) for r in present], instants, lookback_ms)
    stamps = at.tolist()
    return BlockStats.of(ChunkSamples(stamps, [0] * len(stamps), cpu.tolist(), memory.tolist()))


def _mark(conn: Connection, cluster: str, namespace: str, start: int) -> None:
    """Record that this namespace's workloads' statistics were taken for the block."""
    b = schema.workload_blocks
    conn.execute(
        dialect_insert(conn, b).on_conflict_do_nothing(),
        [{"cluster": cluster, "namespace": namespace, "block_start_ms": start}],
    )


def _upsert(conn: Connection, rows: list[dict[str, Any]]) -> int:
    t = schema.workload_stats
    insert = dialect_insert(conn, t)
    keys = ("cluster", "namespace", "workload_kind", "workload_name", "block_start_ms")
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[t.c[k] for k in keys],
            set_={name: insert.excluded[name] for name in rows[0] if name not in keys},
        ),
        rows,
    )
    return len(rows)
