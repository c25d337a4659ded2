"""Cluster identity: the ``clusters`` table keeps, beside each cluster's name, the UID of its
``kube-system`` namespace, so one name cannot hold two clusters' histories.

Only a table is made here: a recorder fills it when it starts and can read the UID (in-cluster),
so history before the upgrade has no row until its recorder starts again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("cluster", sa.String(63), nullable=False),
        sa.Column("kube_system_uid", sa.String(128), nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("cluster", name="pk_clusters"),
    )


def downgrade() -> None:
    op.drop_table("clusters")
