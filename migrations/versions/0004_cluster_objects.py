"""Cluster objects: each pod's workload, container requests and limits and node capacity as
histories, and the current HorizontalPodAutoscalers (``recorder.store.objects`` writes them).

Only tables are made here: the worker fills them as it reads the core API (new in this
version), so history before the upgrade has no workload rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pod_workloads",
        sa.Column("cluster", sa.String(63), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("pod", sa.String(253), nullable=False),
        sa.Column("workload_kind", sa.String(63), nullable=False),
        sa.Column("workload_name", sa.String(253), nullable=False),
        sa.Column("qos_class", sa.String(16), nullable=True),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("cluster", "namespace", "pod", name="pk_pod_workloads"),
    )
    op.create_index(
        "ix_pod_workloads_cluster_namespace_workload_kind_workload_name",
        "pod_workloads",
        ["cluster", "namespace", "workload_kind", "workload_name"],
    )
    op.create_table(
        "container_resources",
        sa.Column("cluster", sa.String(63), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("pod", sa.String(253), nullable=False),
        sa.Column("container", sa.String(253), nullable=False),
        sa.Column("since_ms", sa.BigInteger(), nullable=False),
        sa.Column("cpu_request_nanocores", sa.BigInteger(), nullable=True),
        sa.Column("cpu_limit_nanocores", sa.BigInteger(), nullable=True),
        sa.Column("memory_request_bytes", sa.BigInteger(), nullable=True),
        sa.Column("memory_limit_bytes", sa.BigInteger(), nullable=True),
        sa.Column("restart_count", sa.Integer(), nullable=True),
        sa.Column("last_termination_reason", sa.String(63), nullable=True),
        sa.PrimaryKeyConstraint(
            "cluster", "namespace", "pod", "container", "since_ms", name="pk_container_resources"
        ),
    )
    op.create_table(
        "node_resources",
        sa.Column("cluster", sa.String(63), nullable=False),
        sa.Column("node", sa.String(253), nullable=False),
        sa.Column("since_ms", sa.BigInteger(), nullable=False),
        sa.Column("cpu_capacity_nanocores", sa.BigInteger(), nullable=True),
        sa.Column("memory_capacity_bytes", sa.BigInteger(), nullable=True),
        sa.Column("cpu_allocatable_nanocores", sa.BigInteger(), nullable=True),
        sa.Column("memory_allocatable_bytes", sa.BigInteger(), nullable=True),
        sa.Column("pods_allocatable", sa.Integer(), nullable=True),
        sa.Column("instance_type", sa.String(63), nullable=True),
        sa.Column("zone", sa.String(63), nullable=True),
        sa.Column("region", sa.String(63), nullable=True),
        sa.Column("arch", sa.String(63), nullable=True),
        sa.Column("os", sa.String(63), nullable=True),
        sa.PrimaryKeyConstraint("cluster", "node", "since_ms", name="pk_node_resources"),
    )
    op.create_table(
        "hpas",
        sa.Column("cluster", sa.String(63), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("target_kind", sa.String(63), nullable=False),
        sa.Column("target_name", sa.String(253), nullable=False),
        sa.Column("resources", sa.String(253), nullable=False),
        sa.Column("since_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("cluster", "namespace", "name", name="pk_hpas"),
    )


def downgrade() -> None:
    op.drop_table("hpas")
    op.drop_table("node_resources")
    op.drop_table("container_resources")
    op.drop_index(
        "ix_pod_workloads_cluster_namespace_workload_kind_workload_name",
        table_name="pod_workloads",
    )
    op.drop_table("pod_workloads")
