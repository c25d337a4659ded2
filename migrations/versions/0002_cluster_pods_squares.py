"""Every series belongs to a cluster; pods get series of their own; statistics keep sums of
squares.

- ``series.cluster`` and ``pod_labels.cluster`` (existing rows: ``default``) join the identity:
  the unique key of ``series`` and the primary key of ``pod_labels``.
- ``chunks`` and ``rollups`` get ``cpu_sumsq`` and ``memory_sumsq`` (exact, as big-endian
  bytes: they outgrow 64 bits). Chunks that still have their samples get them computed here;
  day rollups get the sum of their chunks' where every chunk of the day has one. Blocks whose
  samples have already expired keep NULL (``agg=stddev`` says so for them).
- Each pod gets a statistics series (kind ``pod``) with one chunk per block: the statistics of
  the sum of its containers at each instant, computed here for every block whose containers
  still have their samples (compaction makes them from now on).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from alembic import op

from recorder.stats import dedup
from recorder.stats.block import BlockStats, squares_to_bytes
from recorder.stats.codec import decode_samples

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PAGE = 1_000


def upgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.add_column(
            sa.Column("cluster", sa.String(63), nullable=False, server_default="default")
        )
        batch.drop_constraint("uq_series_kind_node_namespace_pod_container", type_="unique")
        batch.create_unique_constraint(
            "uq_series_cluster_kind_node_namespace_pod_container",
            ["cluster", "kind", "node", "namespace", "pod", "container"],
        )
    with op.batch_alter_table("pod_labels") as batch:
        batch.add_column(
            sa.Column("cluster", sa.String(63), nullable=False, server_default="default")
        )
        batch.drop_constraint("pk_pod_labels", type_="primary")
        batch.create_primary_key("pk_pod_labels", ["cluster", "namespace", "pod"])
    for table in ("chunks", "rollups"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("cpu_sumsq", sa.LargeBinary(), nullable=True))
            batch.add_column(sa.Column("memory_sumsq", sa.LargeBinary(), nullable=True))
    # The server defaults only filled existing rows: new rows always name their cluster.
    with op.batch_alter_table("series") as batch:
        batch.alter_column("cluster", server_default=None)
    with op.batch_alter_table("pod_labels") as batch:
        batch.alter_column("cluster", server_default=None)
    conn = op.get_bind()
    _chunk_squares(conn)
    _rollup_squares(conn)
    _pod_chunks(conn)


def _pages(conn: sa.Connection, sql: str) -> Iterator[Any]:
    """Rows of ``sql`` (ordered by a key it pages on), one page at a time."""
    offset = 0
    while True:
        rows = conn.execute(sa.text(f"{sql} LIMIT {_PAGE} OFFSET {offset}")).all()
        if not rows:
            return
        yield from rows
        offset += len(rows)


def _chunk_squares(conn: sa.Connection) -> None:
    update = sa.text(
        "UPDATE chunks SET cpu_sumsq = :cpu, memory_sumsq = :memory "
        "WHERE series_id = :sid AND block_start_ms = :block"
    )
    batch: list[dict[str, Any]] = []
    for sid, block, payload in _pages(
        conn,
        "SELECT series_id, block_start_ms, payload FROM chunks WHERE payload IS NOT NULL "
        "ORDER BY series_id, block_start_ms",
    ):
        samples = decode_samples(payload)
        batch.append(
            {
                "sid": sid,
                "block": block,
                "cpu": squares_to_bytes(sum(v * v for v in samples.cpu_nanocores)),
                "memory": squares_to_bytes(sum(v * v for v in samples.memory_bytes)),
            }
        )
        if len(batch) >= _PAGE:
            conn.execute(update, batch)
            batch = []
    if batch:
        conn.execute(update, batch)


def _rollup_squares(conn: sa.Connection) -> None:
    update = sa.text(
        "UPDATE rollups SET cpu_sumsq = :cpu, memory_sumsq = :memory "
        "WHERE series_id = :sid AND day_start_ms = :day"
    )
    for sid, day, count in conn.execute(
        sa.text("SELECT series_id, day_start_ms, count FROM rollups")
    ).all():
        parts = conn.execute(
            sa.text(
                "SELECT count, cpu_sumsq, memory_sumsq FROM chunks WHERE series_id = :sid "
                "AND block_start_ms >= :day AND block_start_ms < :end"
            ),
            {"sid": sid, "day": day, "end": day + 86_400_000},
        ).all()
        if sum(p[0] for p in parts) != count or any(p[1] is None for p in parts):
            continue
        cpu = sum(int.from_bytes(p[1], "big") for p in parts)
        memory = sum(int.from_bytes(p[2], "big") for p in parts)
        conn.execute(
            update,
            {
                "sid": sid,
                "day": day,
                "cpu": squares_to_bytes(cpu),
                "memory": squares_to_bytes(memory),
            },
        )


def _pod_chunks(conn: sa.Connection) -> None:
    rows = _pages(
        conn,
        "SELECT c.block_start_ms, s.cluster, s.namespace, s.pod, c.payload "
        "FROM chunks c JOIN series s ON s.id = c.series_id "
        "WHERE s.kind = 'container' AND c.payload IS NOT NULL "
        "ORDER BY c.block_start_ms, s.cluster, s.namespace, s.pod, c.series_id",
    )
    for (block, cluster, namespace, pod), group in groupby(rows, key=lambda r: tuple(r[:4])):
        stats = BlockStats.of(dedup.sum_runs(decode_samples(r[4]) for r in group))
        sid = _pod_series(conn, cluster, namespace, pod, stats.first_ms)
        conn.execute(
            sa.text("DELETE FROM chunks WHERE series_id = :sid AND block_start_ms = :block"),
            {"sid": sid, "block": block},
        )
        values = {"series_id": sid, "block_start_ms": block, **stats.to_columns(), "payload": None}
        names = ", ".join(values)
        conn.execute(
            sa.text(f"INSERT INTO chunks ({names}) VALUES ({', '.join(':' + n for n in values)})"),
            values,
        )
        conn.execute(
            sa.text(
                "UPDATE series SET last_seen_ms = :last WHERE id = :sid AND last_seen_ms < :last"
            ),
            {"sid": sid, "last": stats.last_ms},
        )


def _pod_series(conn: sa.Connection, cluster: str, namespace: str, pod: str, first_ms: int) -> int:
    key = {"cluster": cluster, "namespace": namespace, "pod": pod}
    find = sa.text(
        "SELECT id FROM series WHERE kind = 'pod' AND cluster = :cluster "
        "AND namespace = :namespace AND pod = :pod"
    )
    found = conn.execute(find, key).scalar()
    if found is None:
        conn.execute(
            sa.text(
                "INSERT INTO series (cluster, kind, node, namespace, pod, container, "
                "first_seen_ms, last_seen_ms) "
                "VALUES (:cluster, 'pod', '', :namespace, :pod, '', :first, :first)"
            ),
            {**key, "first": first_ms},
        )
        found = conn.execute(find, key).scalar_one()
    return int(found)


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(
        sa.text("DELETE FROM chunks WHERE series_id IN (SELECT id FROM series WHERE kind = 'pod')")
    )
    conn.execute(
        sa.text("DELETE FROM rollups WHERE series_id IN (SELECT id FROM series WHERE kind = 'pod')")
    )
    conn.execute(sa.text("DELETE FROM series WHERE kind = 'pod'"))
    for table in ("chunks", "rollups"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("memory_sumsq")
            batch.drop_column("cpu_sumsq")
    with op.batch_alter_table("pod_labels") as batch:
        batch.drop_constraint("pk_pod_labels", type_="primary")
        batch.create_primary_key("pk_pod_labels", ["namespace", "pod"])
        batch.drop_column("cluster")
    with op.batch_alter_table("series") as batch:
        batch.drop_constraint("uq_series_cluster_kind_node_namespace_pod_container", type_="unique")
        batch.create_unique_constraint(
            "uq_series_kind_node_namespace_pod_container",
            ["kind", "node", "namespace", "pod", "container"],
        )
        batch.drop_column("cluster")
