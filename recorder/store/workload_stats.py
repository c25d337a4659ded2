"""Workloads' block statistics as stored (``workload_stats``, ``workload_blocks``): which
blocks compaction took them for, and their rows. How they are taken:
``recorder.store.workload_compaction``; how a history reads them:
``recorder.query.workload_sums.workload_gathered``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, tuple_

from recorder.store import schema

__all__ = ["WorkloadKey", "read_rows", "taken_blocks"]

_LOOKUP = 500

WorkloadKey = tuple[str, str, str, str]
"""(cluster, namespace, workload kind, workload name)"""


def taken_blocks(
    conn: Connection, namespaces: Sequence[tuple[str, str]], start_ms: int, end_ms: int
) -> dict[tuple[str, str], set[int]]:
    """The blocks starting in ``[start_ms, end_ms]`` whose workloads' statistics were taken,
    per (cluster, namespace)."""
    b = schema.workload_blocks
    out: dict[tuple[str, str], set[int]] = {key: set() for key in namespaces}
    for first in range(0, len(namespaces), _LOOKUP):
        part = list(namespaces[first : first + _LOOKUP])
        for cluster, namespace, block in conn.execute(
            select(b.c.cluster, b.c.namespace, b.c.block_start_ms)
            .where(tuple_(b.c.cluster, b.c.namespace).in_(part))
            .where(b.c.block_start_ms >= start_ms, b.c.block_start_ms <= end_ms)
        ):
            out[(cluster, namespace)].add(block)
    return out


def read_rows(
    conn: Connection,
    keys: Sequence[WorkloadKey],
    start_ms: int,
    end_ms: int,
    names: Sequence[str],
    *,
    block_ms: int,
) -> list[tuple[Any, ...]]:
    """``(index in keys, block start, *names)`` of the workloads' blocks that lie wholly in
    ``[start_ms, end_ms]`` (``names``: statistics columns)."""
    t = schema.workload_stats
    index = {key: i for i, key in enumerate(keys)}
    by_namespace: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for cluster, namespace, kind, name in keys:
        by_namespace.setdefault((cluster, namespace), []).append((kind, name))
    out: list[tuple[Any, ...]] = []
    for (cluster, namespace), wanted in sorted(by_namespace.items()):
        for first in range(0, len(wanted), _LOOKUP):
            part = wanted[first : first + _LOOKUP]
            named = tuple_(t.c.workload_kind, t.c.workload_name).in_(part)
            for kind, name, block, *values in conn.execute(
                select(t.c.workload_kind, t.c.workload_name, t.c.block_start_ms)
                .add_columns(*(t.c[n] for n in names))
                .where(t.c.cluster == cluster, t.c.namespace == namespace)
                .where(named)
                .where(t.c.block_start_ms >= start_ms)
                .where(t.c.block_start_ms <= end_ms - block_ms + 1)
            ):
                out.append((index[(cluster, namespace, kind, name)], block, *values))
    return out
