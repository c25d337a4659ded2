"""The database schema, in SQLAlchemy Core. Alembic migrations in ``migrations/`` build exactly
this (a test compares them).

- ``series`` dictionary-encodes a series' identity; ``samples_head`` refers to it by id.
- ``pod_labels`` keeps each pod's latest labels beside the series (for label selectors).
- ``samples_head`` is append-only in time order with no per-series index (design §5). On
  PostgreSQL it is partitioned by time, one partition per block plus a default one; compaction
  drops a block's partition instead of deleting rows (no vacuum churn), and the time index is
  a BRIN index (a range of timestamps per 128 pages, not an entry per row). On SQLite it has
  no index: ``head_spans`` keeps a row per append (the rows' rowid range and their least and
  greatest timestamp), through which a time range is read as a rowid range
  (``recorder.store.head``).
- ``chunks`` holds one row per series per closed block: the block statistics of
  ``recorder.stats.block`` (one column each, named by ``block.COLUMNS``) and the compressed
  samples (``payload``, set to NULL once full-resolution retention has passed: that is the
  downsampling). Pods have series of their own (kind ``pod``), made by compaction from the sum
  of their containers at each instant: they have chunks and rollups, never head rows.
- ``namespace_rollups`` merges each day's rollups of one kind of series per cluster and
  namespace: the row count, the sample count and the two sketches, so a namespace summary
  reads one row per namespace per day for its percentiles (``recorder.store.rollups``).
- Every series and pod's labels belong to a ``cluster``.
- Cluster objects (``recorder.store.objects``): ``pod_workloads`` is each pod's top-level owner,
  written when the pod is first seen and kept after it is gone; ``container_resources`` and
  ``node_resources`` are histories (a row when a value changes, ``since_ms`` when the recorder
  saw it; NULL for a request or limit that is not set); ``hpas`` is the current autoscalers.
- ``workload_stats`` holds, per workload and closed block, the statistics of the workload's
  aligned sum over its pods, taken at compaction (``recorder.store.workload_compaction``);
  ``workload_blocks`` the (cluster, namespace, block) for which they were taken.
- ``handover`` holds the batches a deposed leader fetched and could not store (each as the
  write queue encodes it, ``buffer.encode_batch``), until the new leader of their cluster
  writes them and deletes them in one transaction (``recorder.store.handover``). PostgreSQL
  only uses it (SQLite has one writer).
- ``clusters`` keeps, beside a cluster's name, the UID of its ``kube-system`` namespace when a
  recorder could read it (``recorder.store.clusters``): one cluster per name, so the same
  ``--cluster`` from two clusters is refused instead of mixing their histories.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from recorder.stats.block import BLOCK_FIELDS, RESOURCE_PARTS, RESOURCES

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("cluster", String(63), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("node", String(253), nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("pod", String(253), nullable=False),
    Column("container", String(253), nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    # Newest sample timestamp already moved into chunks (maintained by compaction); with the
    # head's own maximum it rebuilds the writer's idempotency map without scanning chunks.
    Column("last_seen_ms", BigInteger, nullable=False),
    UniqueConstraint("cluster", "kind", "node", "namespace", "pod", "container"),
    # Queries name a namespace, a pod or a container, rarely a node (migration 0007).
    Index(None, "namespace", "pod", "container"),
)

pod_labels = Table(
    "pod_labels",
    metadata,
    Column("cluster", String(63), primary_key=True),
    Column("namespace", String(63), primary_key=True),
    Column("pod", String(253), primary_key=True),
    Column("labels_json", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

samples_head = Table(
    "samples_head",
    metadata,
    Column("ts_ms", BigInteger, nullable=False),
    Column("series_id", Integer, nullable=False),
    Column("window_ms", Integer, nullable=False),
    Column("cpu_nanocores", BigInteger, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    # PostgreSQL: a block range index (migration 0008). SQLite: none (migration 0009), the
    # time ranges are found through head_spans.
    Index(None, "ts_ms", postgresql_using="brin", postgresql_with={"autosummarize": "on"}).ddl_if(
        dialect="postgresql"
    ),
    postgresql_partition_by="RANGE (ts_ms)",
)

head_spans = Table(
    "head_spans",
    metadata,
    # SQLite only: a row per append to samples_head, its rows' rowids and least and greatest
    # timestamp (recorder.store.head).
    Column("first_row", BigInteger, nullable=False),
    Column("last_row", BigInteger, nullable=False),
    Column("min_ts_ms", BigInteger, nullable=False),
    Column("max_ts_ms", BigInteger, nullable=False),
)


_PART_TYPES: dict[str, Any] = {
    "sum": BigInteger,
    "min": BigInteger,
    "max": BigInteger,
    "last": BigInteger,
    "sketch": LargeBinary,
}


def _statistics() -> list[Column[Any]]:
    """The block-statistics columns shared by chunks (one block) and rollups (one day), named
    and ordered as ``recorder.stats.block.COLUMNS``."""
    columns: list[Column[Any]] = [
        Column(name, Integer if name in ("count", "interval_ms") else BigInteger, nullable=False)
        for name in BLOCK_FIELDS
    ]
    for resource in RESOURCES:
        for part in RESOURCE_PARTS:
            if part == "sumsq":
                # Outgrows 64 bits; NULL for blocks compacted before it was kept.
                columns.append(Column(f"{resource}_sumsq", LargeBinary, nullable=True))
            else:
                columns.append(Column(f"{resource}_{part}", _PART_TYPES[part], nullable=False))
    return columns


chunks = Table(
    "chunks",
    metadata,
    Column("series_id", Integer, primary_key=True),
    Column("block_start_ms", BigInteger, primary_key=True),
    *_statistics(),
    Column("payload", LargeBinary, nullable=True),
    # Blocks are compacted in time order, so this index only ever grows at its end.
    Index(None, "block_start_ms"),
    # A rowid table on SQLite, not WITHOUT ROWID: rows of ~1-2 KB stay on their page there,
    # while a WITHOUT ROWID b-tree spills anything past ~1 KB to an overflow page (measured:
    # 17 bytes per cpu+memory pair on disk instead of ~7).
)


rollups = Table(
    "rollups",
    metadata,
    # One row per series per UTC day, merged from that day's chunk statistics: long-range
    # statistics read 24x fewer rows. Rebuilt for a day when a late block lands in it.
    Column("series_id", Integer, primary_key=True),
    Column("day_start_ms", BigInteger, primary_key=True),
    *_statistics(),
    Index(None, "day_start_ms"),
)


namespace_rollups = Table(
    "namespace_rollups",
    metadata,
    # One row per cluster, kind and namespace per UTC day: the merge of that day's rollups of
    # its series (built and rebuilt with them, in the same transaction). ``series`` counts the
    # rollups merged and ``count`` their samples: a read checks both against the rollups.
    Column("cluster", String(63), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("namespace", String(63), primary_key=True),
    Column("day_start_ms", BigInteger, primary_key=True),
    Column("series", Integer, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("cpu_sketch", LargeBinary, nullable=False),
    Column("memory_sketch", LargeBinary, nullable=False),
    Index(None, "day_start_ms"),
)


pod_workloads = Table(
    "pod_workloads",
    metadata,
    Column("cluster", String(63), primary_key=True),
    Column("namespace", String(63), primary_key=True),
    Column("pod", String(253), primary_key=True),
    # Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet (without a Deployment),
    # another controller's kind as its ownerReference names it, or Pod (bare and mirror pods).
    Column("workload_kind", String(63), nullable=False),
    Column("workload_name", String(253), nullable=False),
    Column("qos_class", String(16), nullable=True),
    Column("first_seen_ms", BigInteger, nullable=False),
    Index(None, "cluster", "namespace", "workload_kind", "workload_name"),
)


workload_stats = Table(
    "workload_stats",
    metadata,
    # One row per workload per closed block, taken at compaction: the block statistics of the
    # workload's sum over its pods, aligned as kind=workload aligns them (each pod's newest
    # sample within two poll intervals of each multiple of the interval,
    # ``recorder.store.workload_compaction``). Kept as long as block statistics.
    Column("cluster", String(63), primary_key=True),
    Column("namespace", String(63), primary_key=True),
    Column("workload_kind", String(63), primary_key=True),
    Column("workload_name", String(253), primary_key=True),
    Column("block_start_ms", BigInteger, primary_key=True),
    *_statistics(),
    Index(None, "block_start_ms"),
)

workload_blocks = Table(
    "workload_blocks",
    metadata,
    # The (cluster, namespace, block) whose workloads' statistics were taken: there, a
    # workload without a workload_stats row had no sample. Blocks without a row (compacted
    # before workload statistics existed, or whose taking failed) are read from the samples.
    Column("cluster", String(63), primary_key=True),
    Column("namespace", String(63), primary_key=True),
    Column("block_start_ms", BigInteger, primary_key=True),
    Index(None, "block_start_ms"),
)

container_resources = Table(
    "container_resources",
    metadata,
    Column("cluster", String(63), primary_key=True),
    Column("namespace", String(63), primary_key=True),
    Column("pod", String(253), primary_key=True),
    Column("container", String(253), primary_key=True),
    Column("since_ms", BigInteger, primary_key=True),
    Column("cpu_request_nanocores", BigInteger, nullable=True),
    Column("cpu_limit_nanocores", BigInteger, nullable=True),
    Column("memory_request_bytes", BigInteger, nullable=True),
    Column("memory_limit_bytes", BigInteger, nullable=True),
    Column("restart_count", Integer, nullable=True),
    # lastState.terminated.reason of the container's previous run (OOMKilled, Error, ...).
    Column("last_termination_reason", String(63), nullable=True),
)


node_resources = Table(
    "node_resources",
    metadata,
    Column("cluster", String(63), primary_key=True),
    Column("node", String(253), primary_key=True),
    Column("since_ms", BigInteger, primary_key=True),
    Column("cpu_capacity_nanocores", BigInteger, nullable=True),
    Column("memory_capacity_bytes", BigInteger, nullable=True),
    Column("cpu_allocatable_nanocores", BigInteger, nullable=True),
    Column("memory_allocatable_bytes", BigInteger, nullable=True),
    Column("pods_allocatable", Integer, nullable=True),
    Column("instance_type", String(63), nullable=True),
    Column("zone", String(63), nullable=True),
    Column("region", String(63), nullable=True),
    Column("arch", String(63), nullable=True),
    Column("os", String(63), nullable=True),
)


hpas = Table(
    "hpas",
    metadata,
    Column("cluster", String(63), primary_key=True),
    Column("namespace", String(63), primary_key=True),
    Column("name", String(253), primary_key=True),
    Column("target_kind", String(63), nullable=False),
    Column("target_name", String(253), nullable=False),
    # The resources it scales on, sorted and comma-separated ("cpu", "cpu,memory"); empty when
    # it scales on other metrics only.
    Column("resources", String(253), nullable=False),
    Column("since_ms", BigInteger, nullable=False),
)


handover = Table(
    "handover",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("cluster", String(63), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("samples", Integer, nullable=False),
    # The replica that handed it over (``Leadership.replica``), for the log lines.
    Column("replica", String(63), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    # The leader's check each write round: its cluster's oldest batch, through this index.
    Index(None, "cluster", "id"),
)


clusters = Table(
    "clusters",
    metadata,
    Column("cluster", String(63), primary_key=True),
    # metadata.uid of the cluster's kube-system namespace (a UUID in every Kubernetes).
    Column("kube_system_uid", String(128), nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
)


_ONLY_ON = {"head_spans": "sqlite", "ix_samples_head_ts_ms": "postgresql"}
"""Tables and indexes the migrations make on one database only: SQLite's head is found by its
spans, PostgreSQL's by its partitions and BRIN index."""


def is_managed_table(name: str | None) -> bool:
    """False for the head's time partitions (created and dropped at run time, not by
    migrations), so schema comparisons and autogenerate leave them alone."""
    return not (name or "").startswith("samples_head_")


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Alembic ``include_name`` hook built on :func:`is_managed_table`."""
    return type_ != "table" or is_managed_table(name)


def include_object_for(dialect: str) -> Callable[[object, str | None, str, bool, object], bool]:
    """Alembic's ``include_object`` hook for ``dialect``: leaves out what the migrations make
    on the other database only (``Index.ddl_if`` is not read by autogenerate)."""

    def include_object(
        _object: object, name: str | None, _type: str, _reflected: bool, _compare_to: object
    ) -> bool:
        return _ONLY_ON.get(name or "", dialect) == dialect

    return include_object
