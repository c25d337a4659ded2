"""Handed-over batches: what a deposed leader fetched and could not store, waiting for the
new leader of its cluster to write it (``recorder.store.handover``).

Only PostgreSQL replicas use it (SQLite has one writer); the table is made on both so the
schema is one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "handover",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cluster", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("replica", sa.String(63), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_handover"),
    )
    op.create_index("ix_handover_cluster_id", "handover", ["cluster", "id"])


def downgrade() -> None:
    op.drop_index("ix_handover_cluster_id", table_name="handover")
    op.drop_table("handover")
