"""Initial schema: series dictionary, pod labels, sample head, compacted chunks.

On PostgreSQL the head is partitioned by time (RANGE on ts_ms) with a DEFAULT partition; the
per-block partitions are created by the writer as blocks begin and dropped by compaction.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("node", sa.String(253), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("pod", sa.String(253), nullable=False),
        sa.Column("container", sa.String(253), nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.UniqueConstraint(
            "kind",
            "node",
            "namespace",
            "pod",
            "container",
            name="uq_series_kind_node_namespace_pod_container",
        ),
    )
    op.create_table(
        "pod_labels",
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("pod", sa.String(253), nullable=False),
        sa.Column("labels_json", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "pod", name="pk_pod_labels"),
    )
    op.create_table(
        "samples_head",
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("window_ms", sa.Integer(), nullable=False),
        sa.Column("cpu_nanocores", sa.BigInteger(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        postgresql_partition_by="RANGE (ts_ms)",
    )
    op.create_index("ix_samples_head_ts_ms", "samples_head", ["ts_ms"])
    if op.get_context().dialect.name == "postgresql":
        op.execute("CREATE TABLE samples_head_default PARTITION OF samples_head DEFAULT")
    op.create_table(
        "chunks",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("block_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("first_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("interval_ms", sa.Integer(), nullable=False),
        sa.Column("cpu_sum", sa.BigInteger(), nullable=False),
        sa.Column("cpu_min", sa.BigInteger(), nullable=False),
        sa.Column("cpu_max", sa.BigInteger(), nullable=False),
        sa.Column("cpu_last", sa.BigInteger(), nullable=False),
        sa.Column("memory_sum", sa.BigInteger(), nullable=False),
        sa.Column("memory_min", sa.BigInteger(), nullable=False),
        sa.Column("memory_max", sa.BigInteger(), nullable=False),
        sa.Column("memory_last", sa.BigInteger(), nullable=False),
        sa.Column("cpu_sketch", sa.LargeBinary(), nullable=False),
        sa.Column("memory_sketch", sa.LargeBinary(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("series_id", "block_start_ms", name="pk_chunks"),
    )
    op.create_index("ix_chunks_block_start_ms", "chunks", ["block_start_ms"])
    op.create_table(
        "rollups",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("day_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("first_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("interval_ms", sa.Integer(), nullable=False),
        sa.Column("cpu_sum", sa.BigInteger(), nullable=False),
        sa.Column("cpu_min", sa.BigInteger(), nullable=False),
        sa.Column("cpu_max", sa.BigInteger(), nullable=False),
        sa.Column("cpu_last", sa.BigInteger(), nullable=False),
        sa.Column("memory_sum", sa.BigInteger(), nullable=False),
        sa.Column("memory_min", sa.BigInteger(), nullable=False),
        sa.Column("memory_max", sa.BigInteger(), nullable=False),
        sa.Column("memory_last", sa.BigInteger(), nullable=False),
        sa.Column("cpu_sketch", sa.LargeBinary(), nullable=False),
        sa.Column("memory_sketch", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "day_start_ms", name="pk_rollups"),
    )
    op.create_index("ix_rollups_day_start_ms", "rollups", ["day_start_ms"])


def downgrade() -> None:
    op.drop_index("ix_rollups_day_start_ms", table_name="rollups")
    op.drop_table("rollups")
    op.drop_index("ix_chunks_block_start_ms", table_name="chunks")
    op.drop_table("chunks")
    op.drop_index("ix_samples_head_ts_ms", table_name="samples_head")
    op.drop_table("samples_head")
    op.drop_table("pod_labels")
    op.drop_table("series")
