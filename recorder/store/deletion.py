"""Deleting one cluster's or one namespace's history on request (``recorder delete``): its
series with their head rows, chunks and day rollups, and the rows keyed by cluster (pods'
labels and workloads, containers' and nodes' requests and limits, HPAs, namespace rollups,
and for a whole cluster the ``kube-system`` UID kept beside its name), in one transaction, so
a failure deletes nothing.

A namespace's deletion keeps the cluster's node series (they have no namespace). The recorder
of that cluster should be stopped first (or the namespace gone from the cluster): a running one
writes the series again at its next poll.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Select, Table, delete, select

from recorder.store import head as heads
from recorder.store import schema

__all__ = ["DeletionReport", "Doomed", "delete_history", "held"]

_BY_CLUSTER: tuple[Table, ...] = (
    schema.pod_labels,
    schema.namespace_rollups,
    schema.pod_workloads,
    schema.container_resources,
    schema.hpas,
    schema.workload_stats,
    schema.workload_blocks,
)
"""Tables keyed by (cluster, namespace, ...) beside the series."""


@dataclass(frozen=True, slots=True)
class Doomed:
    """What to delete: a cluster's whole history, or one namespace of it."""

    cluster: str
    namespace: str | None = None

    def __str__(self) -> str:
        where = f"cluster {self.cluster}"
        return where if self.namespace is None else f"namespace {self.namespace} of {where}"


@dataclass(frozen=True, slots=True)
class DeletionReport:
    series: int
    head_rows: int
    chunks: int
    rollups: int
    other_rows: int
    """Pods' labels and workloads, requests and limits, HPAs, namespace rollups (and, for a
    whole cluster, node capacities, handed-over batches and the cluster's identity)."""


def held(conn: Connection, doomed: Doomed) -> int:
    """How many series ``doomed`` covers (0: nothing to delete)."""
    return len(conn.execute(_series_ids(doomed)).all())


def delete_history(conn: Connection, doomed: Doomed) -> DeletionReport:
    """Delete ``doomed``'s history in the caller's transaction."""
    s = schema.series
    ids = _series_ids(doomed).scalar_subquery()
    head, chunks, rollups = (
        conn.execute(delete(table).where(table.c.series_id.in_(ids))).rowcount
        for table in (schema.samples_head, schema.chunks, schema.rollups)
    )
    if head:
        heads.prune_spans(conn)  # the appends all of whose rows were the series'
    other = 0
    for table in _BY_CLUSTER:
        statement = delete(table).where(table.c.cluster == doomed.cluster)
        if doomed.namespace is not None:
            statement = statement.where(table.c.namespace == doomed.namespace)
        other += conn.execute(statement).rowcount
    if doomed.namespace is None:
        # Batches a deposed leader handed over too (a leader would write them back), and the
        # cluster's identity: the name is free for another cluster.
        for table in (schema.node_resources, schema.handover, schema.clusters):
            other += conn.execute(delete(table).where(table.c.cluster == doomed.cluster)).rowcount
    series = conn.execute(delete(s).where(s.c.id.in_(_series_ids(doomed)))).rowcount
    return DeletionReport(series, head, chunks, rollups, other)


def _series_ids(doomed: Doomed) -> Select[tuple[int]]:
    s = schema.series
    statement = select(s.c.id).where(s.c.cluster == doomed.cluster)
    if doomed.namespace is not None:
        statement = statement.where(s.c.namespace == doomed.namespace)
    return statement
