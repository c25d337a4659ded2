"""Cluster objects in the database: each pod's workload, container requests and limits and node
capacity as histories, and the current HorizontalPodAutoscalers (tables in ``schema``).

Rows come in as plain tuples (the kube reader's records are named tuples of these shapes; the
worker hands them over). Every write is idempotent:

- a pod's workload is inserted when first seen and never changed (``ON CONFLICT DO NOTHING``);
- a container's or a node's values get a new row only when they differ from the newest stored
  one, so a restarted reader, which offers every object again, adds nothing;
- the autoscalers of the cluster (or of the namespaces read) are replaced by the current set,
  keeping ``since_ms`` of those that did not change.

Transactions are short (``BATCH_ROWS`` rows each, the newest rows read before, outside them),
so the sample writer, which shares SQLite's one write lock, never waits long behind them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Engine, Table, and_, delete, or_, select, update

from recorder.errors import StoreError
from recorder.store import engine as engines
from recorder.store.schema import container_resources, hpas, node_resources, pod_workloads

__all__ = [
    "BATCH_ROWS",
    "ContainerResources",
    "ContainerRow",
    "HpaRow",
    "NodeResources",
    "NodeRow",
    "ObjectStore",
    "PodRow",
    "read_container_resources",
    "read_hpas",
    "read_node_resources",
    "read_pod_workloads",
]

log = logging.getLogger(__name__)

BATCH_ROWS = 1_000
"""Rows per transaction."""

PodRow = tuple[str, str, str, str, str | None]
"""(namespace, pod, workload kind, workload name, QoS class)."""
ContainerRow = tuple[
    str, str, str, int | None, int | None, int | None, int | None, int | None, str | None
]
"""(namespace, pod, container, CPU request nanocores, CPU limit nanocores, memory request bytes,
memory limit bytes, restart count, last termination reason)."""
NodeRow = tuple[
    str,
    int | None,
    int | None,
    int | None,
    int | None,
    int | None,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
]
"""(node, CPU capacity nanocores, memory capacity bytes, CPU allocatable nanocores, memory
allocatable bytes, pods allocatable, instance type, zone, region, arch, os)."""
HpaRow = tuple[str, str, str, str, str]
"""(namespace, name, target kind, target name, resources scaled on: "cpu,memory")."""

_CONTAINER_VALUES = (
    "cpu_request_nanocores",
    "cpu_limit_nanocores",
    "memory_request_bytes",
    "memory_limit_bytes",
    "restart_count",
    "last_termination_reason",
)
_NODE_VALUES = (
    "cpu_capacity_nanocores",
    "memory_capacity_bytes",
    "cpu_allocatable_nanocores",
    "memory_allocatable_bytes",
    "pods_allocatable",
    "instance_type",
    "zone",
    "region",
    "arch",
    "os",
)

_T = TypeVar("_T")
_WRITE_ERRORS: tuple[type[BaseException], ...] = (
    *engines.DATABASE_ERRORS,
    OverflowError,
    UnicodeError,
)


def _batches(rows: Iterable[_T], size: int) -> Iterator[list[_T]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


class ObjectStore:
    """Writes and reads the cluster-object tables of one ``cluster``. Thread-safe (each call
    uses its own connections)."""

    def __init__(
        self,
        engine: Engine,
        cluster: str,
        *,
        timeouts: engines.Timeouts | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.engine = engine
        self.cluster = cluster
        self._timeouts = timeouts or engines.Timeouts()
        self._batch = batch_rows
        self.rejected = 0
        """Rows the database refused for their content (skipped, logged)."""

    # --- writing ----------------------------------------------------------------------------

    def record_pods(self, rows: Iterable[PodRow], *, now_ms: int) -> int:
        """Each pod's workload, unless the pod has one already: the rows inserted."""
        cluster = self.cluster
        written = 0
        for batch in _batches(rows, self._batch):
            values = [
                {
                    "cluster": cluster,
                    "namespace": ns,
                    "pod": pod,
                    "workload_kind": kind,
                    "workload_name": name,
                    "qos_class": qos,
                    "first_seen_ms": now_ms,
                }
                for ns, pod, kind, name, qos in batch
            ]
            written += self._insert(pod_workloads, values, "recording pods' workloads")
        return written

    def record_containers(self, rows: Iterable[ContainerRow], *, now_ms: int) -> int:
        """A row for each container whose values differ from its newest stored row (or that has
        none): the rows inserted."""
        written = 0
        for batch in _batches(rows, self._batch):
            by_namespace: dict[str, set[str]] = {}
            for r in batch:
                by_namespace.setdefault(r[0], set()).add(r[1])
            t = container_resources
            # One IN list per namespace (not a row-value IN, which PostgreSQL reads by scanning
            # the table): each is a range of the primary key.
            newest = self._newest(
                t,
                ("namespace", "pod", "container"),
                _CONTAINER_VALUES,
                or_(
                    *(
                        and_(t.c.namespace == ns, t.c.pod.in_(sorted(pods)))
                        for ns, pods in sorted(by_namespace.items())
                    )
                ),
                "reading containers' requests and limits",
            )
            values = [
                {
                    "cluster": self.cluster,
                    "namespace": r[0],
                    "pod": r[1],
                    "container": r[2],
                    "since_ms": now_ms,
                    **dict(zip(_CONTAINER_VALUES, r[3:], strict=True)),
                }
                for r in batch
                if newest.get(r[:3]) != tuple(r[3:])
            ]
            written += self._insert(
                container_resources, values, "recording containers' requests and limits"
            )
        return written

    def record_nodes(self, rows: Iterable[NodeRow], *, now_ms: int) -> int:
        """A row for each node whose capacity, allocatable or labels differ from its newest
        stored row (or that has none): the rows inserted."""
        written = 0
        for batch in _batches(rows, self._batch):
            names = sorted({r[0] for r in batch})
            newest = self._newest(
                node_resources,
                ("node",),
                _NODE_VALUES,
                node_resources.c.node.in_(names),
                "reading nodes' capacity",
            )
            values = [
                {
                    "cluster": self.cluster,
                    "node": r[0],
                    "since_ms": now_ms,
                    **dict(zip(_NODE_VALUES, r[1:], strict=True)),
                }
                for r in batch
                if newest.get(r[:1]) != tuple(r[1:])
            ]
            written += self._insert(node_resources, values, "recording nodes' capacity")
        return written

    def replace_hpas(
        self, rows: Iterable[HpaRow], *, now_ms: int, namespaces: Sequence[str] = ()
    ) -> int:
        """Make the stored autoscalers of the cluster (of ``namespaces`` only, when given) the
        ``rows``: the rows inserted, changed or deleted."""
        wanted = {(r[0], r[1]): r[2:] for r in rows}
        scope = hpas.c.cluster == self.cluster
        if namespaces:
            scope = and_(scope, hpas.c.namespace.in_(sorted(namespaces)))
        doing = "recording autoscalers"

        def replace(conn: Connection) -> int:
            query = select(
                hpas.c.namespace,
                hpas.c.name,
                hpas.c.target_kind,
                hpas.c.target_name,
                hpas.c.resources,
            ).where(scope)
            stored = {(r[0], r[1]): tuple(r[2:]) for r in conn.execute(query)}
            gone = [key for key in stored if key not in wanted]
            changed = [key for key, v in wanted.items() if key in stored and stored[key] != v]
            new = [key for key in wanted if key not in stored]
            for ns, name in gone:
                conn.execute(delete(hpas).where(scope, hpas.c.namespace == ns, hpas.c.name == name))
            for ns, name in changed:
                kind, target, resources = wanted[(ns, name)]
                conn.execute(
                    update(hpas)
                    .where(scope, hpas.c.namespace == ns, hpas.c.name == name)
                    .values(
                        target_kind=kind, target_name=target, resources=resources, since_ms=now_ms
                    )
                )
            if new:
                conn.execute(
                    hpas.insert(),
                    [
                        {
                            "cluster": self.cluster,
                            "namespace": ns,
                            "name": name,
                            "target_kind": wanted[(ns, name)][0],
                            "target_name": wanted[(ns, name)][1],
                            "resources": wanted[(ns, name)][2],
                            "since_ms": now_ms,
                        }
                        for ns, name in new
                    ],
                )
            return len(gone) + len(changed) + len(new)

        return self._transaction(replace, doing)

    # --- reading (tests and, later, queries) --------------------------------------------------

    def pod_workloads(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(namespace, pod) -> (workload kind, workload name) of every pod recorded."""
        t = pod_workloads
        query = select(t.c.namespace, t.c.pod, t.c.workload_kind, t.c.workload_name).where(
            t.c.cluster == self.cluster
        )
        rows = self._read(lambda conn: list(conn.execute(query)), "reading pods' workloads")
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}

    def container_history(self) -> list[tuple[Any, ...]]:
        """Every container row of the cluster: (namespace, pod, container, since_ms, values...)
        in key and time order."""
        t = container_resources
        query = (
            select(
                t.c.namespace,
                t.c.pod,
                t.c.container,
                t.c.since_ms,
                *(t.c[c] for c in _CONTAINER_VALUES),
            )
            .where(t.c.cluster == self.cluster)
            .order_by(t.c.namespace, t.c.pod, t.c.container, t.c.since_ms)
        )
        return self._read(lambda conn: [tuple(r) for r in conn.execute(query)], "reading requests")

    def node_history(self) -> list[tuple[Any, ...]]:
        """Every node row of the cluster: (node, since_ms, values...) in node and time order."""
        t = node_resources
        query = (
            select(t.c.node, t.c.since_ms, *(t.c[c] for c in _NODE_VALUES))
            .where(t.c.cluster == self.cluster)
            .order_by(t.c.node, t.c.since_ms)
        )
        return self._read(lambda conn: [tuple(r) for r in conn.execute(query)], "reading nodes")

    def current_hpas(self) -> dict[tuple[str, str], tuple[str, str, str, int]]:
        """(namespace, name) -> (target kind, target name, resources, since_ms)."""
        t = hpas
        query = select(
            t.c.namespace, t.c.name, t.c.target_kind, t.c.target_name, t.c.resources, t.c.since_ms
        ).where(t.c.cluster == self.cluster)
        rows = self._read(lambda conn: list(conn.execute(query)), "reading autoscalers")
        return {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows}

    # --- helpers ------------------------------------------------------------------------------

    def _newest(
        self,
        table: Table,
        keys: tuple[str, ...],
        values: tuple[str, ...],
        where: Any,
        doing: str,
    ) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        """The newest stored values per key among the rows ``where`` selects (a read of its
        own, before the write's transaction)."""
        query = (
            select(*(table.c[k] for k in keys), table.c.since_ms, *(table.c[v] for v in values))
            .where(table.c.cluster == self.cluster, where)
            .order_by(table.c.since_ms)
        )
        n = len(keys)
        newest: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in self._read(lambda conn: list(conn.execute(query)), doing):
            newest[tuple(row[:n])] = tuple(row[n + 1 :])  # later rows win
        return newest

    def _insert(self, table: Table, values: list[dict[str, Any]], doing: str) -> int:
        if not values:
            return 0

        def insert(conn: Connection) -> int:
            return _inserted(conn, table, values)

        try:
            return self._transaction(insert, doing)
        except _ContentRefused:
            pass
        written = 0  # the batch holds a row the database refuses: write the others alone
        for one in values:

            def insert_one(conn: Connection, row: dict[str, Any] = one) -> int:
                return _inserted(conn, table, [row])

            try:
                written += self._transaction(insert_one, doing)
            except _ContentRefused as exc:
                self.rejected += 1
                log.warning("%s: skipped a row the database refuses (%s)", doing, exc)
        return written

    def _transaction(self, work: Callable[[Connection], _T], doing: str) -> _T:
        try:
            with self.engine.begin() as conn:
                return work(conn)
        except _WRITE_ERRORS as exc:
            if engines.is_content_error(exc):
                raise _ContentRefused(engines.first_line(exc)) from exc
            raise engines.failure(exc, doing, self._timeouts) from exc

    def _read(self, work: Callable[[Connection], _T], doing: str) -> _T:
        try:
            with self.engine.connect() as conn:
                return work(conn)
        except engines.DATABASE_ERRORS as exc:
            raise engines.failure(exc, doing, self._timeouts) from exc


def _inserted(conn: Connection, table: Table, values: list[dict[str, Any]]) -> int:
    """Insert ``values``, skipping rows whose key exists: how many were new (counted from
    ``RETURNING``, as psycopg's batched inserts give no row count)."""
    statement = engines.dialect_insert(conn, table).on_conflict_do_nothing()
    first_key = next(iter(table.primary_key.columns))
    return len(conn.execute(statement.returning(first_key), values).all())


# --- reading, for queries (on a query's connection) ----------------------------------------


class ContainerResources(NamedTuple):
    """One row of a container's requests/limits history: its values from ``since_ms`` until
    the container's next row (NULL: not set)."""

    cluster: str
    namespace: str
    pod: str
    container: str
    since_ms: int
    cpu_request_nanocores: int | None
    cpu_limit_nanocores: int | None
    memory_request_bytes: int | None
    memory_limit_bytes: int | None
    restart_count: int | None
    last_termination_reason: str | None


class NodeResources(NamedTuple):
    """One row of a node's capacity history: its values from ``since_ms`` until the node's
    next row."""

    cluster: str
    node: str
    since_ms: int
    cpu_capacity_nanocores: int | None
    memory_capacity_bytes: int | None
    cpu_allocatable_nanocores: int | None
    memory_allocatable_bytes: int | None
    pods_allocatable: int | None


WorkloadOf = dict[tuple[str, str, str], tuple[str, str]]
"""(cluster, namespace, pod) -> (workload kind, workload name)."""


BARE_POD = "Pod"
"""The workload kind of a pod without a recorded owner (a bare pod, or history from before
cluster objects were read): it is its own workload, named as the pod."""


def read_pod_workloads(
    conn: Connection,
    *,
    cluster: str | None = None,
    namespaces: Sequence[str] = (),
    kind: str | None = None,
    name: str | None = None,
) -> WorkloadOf:
    """The recorded workload of every pod matching the filters (``namespaces`` empty: all;
    ``kind`` compared without case)."""
    t = pod_workloads
    query = select(t.c.cluster, t.c.namespace, t.c.pod, t.c.workload_kind, t.c.workload_name)
    if cluster is not None:
        query = query.where(t.c.cluster == cluster)
    if namespaces:
        query = query.where(t.c.namespace.in_(sorted(set(namespaces))))
    if name is not None:
        query = query.where(t.c.workload_name == name)
    wanted = kind.lower() if kind is not None else None
    return {
        (r[0], r[1], r[2]): (r[3], r[4])
        for r in conn.execute(query)
        if wanted is None or r[3].lower() == wanted
    }


def read_container_resources(
    conn: Connection,
    *,
    cluster: str | None = None,
    namespaces: Sequence[str] = (),
    pods: Sequence[tuple[str, str, str]] | None = None,
    until_ms: int | None = None,
) -> list[ContainerResources]:
    """Container rows in key and time order: of ``pods`` ((cluster, namespace, pod)) when
    given, else of the cluster and namespaces (empty: all); only rows since at most
    ``until_ms`` when given."""
    t = container_resources
    query = select(
        t.c.cluster,
        t.c.namespace,
        t.c.pod,
        t.c.container,
        t.c.since_ms,
        *(t.c[c] for c in _CONTAINER_VALUES),
    ).order_by(t.c.cluster, t.c.namespace, t.c.pod, t.c.container, t.c.since_ms)
    if cluster is not None:
        query = query.where(t.c.cluster == cluster)
    if namespaces:
        query = query.where(t.c.namespace.in_(sorted(set(namespaces))))
    if until_ms is not None:
        query = query.where(t.c.since_ms <= until_ms)
    if pods is None:
        return [ContainerResources(*r) for r in conn.execute(query)]
    # One IN list per (cluster, namespace): a range of the primary key each.
    by_place: dict[tuple[str, str], set[str]] = {}
    for c, ns, pod in pods:
        by_place.setdefault((c, ns), set()).add(pod)
    out: list[ContainerResources] = []
    for (c, ns), names in sorted(by_place.items()):
        ordered = sorted(names)
        for batch in _batches(ordered, BATCH_ROWS):
            one = query.where(t.c.cluster == c, t.c.namespace == ns, t.c.pod.in_(batch))
            out.extend(ContainerResources(*r) for r in conn.execute(one))
    out.sort(key=lambda r: (r.cluster, r.namespace, r.pod, r.container, r.since_ms))
    return out


def read_node_resources(
    conn: Connection,
    *,
    cluster: str | None = None,
    nodes: Sequence[str] = (),
    until_ms: int | None = None,
) -> list[NodeResources]:
    """Node rows (capacity and allocatable) in node and time order; of ``nodes`` only when
    given; only rows since at most ``until_ms`` when given."""
    t = node_resources
    query = select(
        t.c.cluster,
        t.c.node,
        t.c.since_ms,
        t.c.cpu_capacity_nanocores,
        t.c.memory_capacity_bytes,
        t.c.cpu_allocatable_nanocores,
        t.c.memory_allocatable_bytes,
        t.c.pods_allocatable,
    ).order_by(t.c.cluster, t.c.node, t.c.since_ms)
    if cluster is not None:
        query = query.where(t.c.cluster == cluster)
    if nodes:
        query = query.where(t.c.node.in_(sorted(set(nodes))))
    if until_ms is not None:
        query = query.where(t.c.since_ms <= until_ms)
    return [NodeResources(*r) for r in conn.execute(query)]


def read_hpas(
    conn: Connection, *, cluster: str | None = None, namespaces: Sequence[str] = ()
) -> list[tuple[str, str, str, str, str, str]]:
    """The current autoscalers: (cluster, namespace, name, target kind, target name,
    resources scaled on, comma-separated)."""
    t = hpas
    query = select(
        t.c.cluster, t.c.namespace, t.c.name, t.c.target_kind, t.c.target_name, t.c.resources
    ).order_by(t.c.cluster, t.c.namespace, t.c.name)
    if cluster is not None:
        query = query.where(t.c.cluster == cluster)
    if namespaces:
        query = query.where(t.c.namespace.in_(sorted(set(namespaces))))
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in conn.execute(query)]


class _ContentRefused(StoreError):
    """The database refused a row for its content (too long, out of range)."""
