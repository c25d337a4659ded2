"""Namespace rollups: each day's rollups of one kind of series merged per cluster and
namespace (row and sample counts, CPU and memory sketches), for namespace summaries.

Only the table is made here: maintenance fills it, for each day it rolls up and, a few days
per round, newest first, for the days rolled up before this migration
(``recorder.store.rollups.build``). Until a day has its rows, summaries read its series'
rollups as before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "namespace_rollups",
        sa.Column("cluster", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("day_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("series", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("cpu_sketch", sa.LargeBinary(), nullable=False),
        sa.Column("memory_sketch", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "cluster", "kind", "namespace", "day_start_ms", name="pk_namespace_rollups"
        ),
    )
    op.create_index("ix_namespace_rollups_day_start_ms", "namespace_rollups", ["day_start_ms"])


def downgrade() -> None:
    op.drop_index("ix_namespace_rollups_day_start_ms", table_name="namespace_rollups")
    op.drop_table("namespace_rollups")
