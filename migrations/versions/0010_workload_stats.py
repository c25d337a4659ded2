"""Workload statistics: one row per workload per closed block, the block statistics of the
workload's aligned sum over its pods, taken at compaction (``recorder.store.workload_stats``),
and a row per (cluster, namespace, block) whose workloads' statistics were taken.
Blocks compacted before this revision have none: kind=workload answers them from samples, as
before, while those are kept.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _statistics() -> list[sa.Column[object]]:
    columns: list[sa.Column[object]] = [
        sa.Column("first_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("interval_ms", sa.Integer(), nullable=False),
    ]
    for resource in ("cpu", "memory"):
        columns += [
            sa.Column(f"{resource}_sum", sa.BigInteger(), nullable=False),
            sa.Column(f"{resource}_sumsq", sa.LargeBinary(), nullable=True),
            sa.Column(f"{resource}_min", sa.BigInteger(), nullable=False),
            sa.Column(f"{resource}_max", sa.BigInteger(), nullable=False),
            sa.Column(f"{resource}_last", sa.BigInteger(), nullable=False),
            sa.Column(f"{resource}_sketch", sa.LargeBinary(), nullable=False),
        ]
    return columns


def upgrade() -> None:
    op.create_table(
        "workload_stats",
        sa.Column("cluster", sa.String(63), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("workload_kind", sa.String(63), nullable=False),
        sa.Column("workload_name", sa.String(253), nullable=False),
        sa.Column("block_start_ms", sa.BigInteger(), nullable=False),
        *_statistics(),
        sa.PrimaryKeyConstraint(
            "cluster",
            "namespace",
            "workload_kind",
            "workload_name",
            "block_start_ms",
            name="pk_workload_stats",
        ),
    )
    op.create_index("ix_workload_stats_block_start_ms", "workload_stats", ["block_start_ms"])
    op.create_table(
        "workload_blocks",
        sa.Column("cluster", sa.String(63), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("block_start_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "cluster", "namespace", "block_start_ms", name="pk_workload_blocks"
        ),
    )
    op.create_index("ix_workload_blocks_block_start_ms", "workload_blocks", ["block_start_ms"])


def downgrade() -> None:
    op.drop_index("ix_workload_blocks_block_start_ms", table_name="workload_blocks")
    op.drop_table("workload_blocks")
    op.drop_index("ix_workload_stats_block_start_ms", table_name="workload_stats")
    op.drop_table("workload_stats")
