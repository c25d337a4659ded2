"""SQLite: the head without a time index. Its rows are appended in time order, so a time range
is a range of rowids, found through ``head_spans`` (a row per append: the rows' first and last
rowid, their least and greatest timestamp; ``recorder.store.head``). A B-tree entry per row
cost a 150,000-pod poll's insert about as much as the rows themselves (200,000 rows: 0.28 s
with the index, 0.14 s without). The head held now gets a span per 65,536 rows (by rowid),
made before the index is dropped. PostgreSQL keeps its partitions and BRIN index (0008).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_INDEX = "ix_samples_head_ts_ms"
_ROWS_PER_SPAN = 65_536
"""Head rows per span made for the head found at the upgrade (a third of a 150,000-pod poll)."""


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_table(
        "head_spans",
        sa.Column("first_row", sa.BigInteger(), nullable=False),
        sa.Column("last_row", sa.BigInteger(), nullable=False),
        sa.Column("min_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("max_ts_ms", sa.BigInteger(), nullable=False),
    )
    # Any grouping of the rows makes valid spans (each row lies in its group's rowid and time
    # range). By ranges of rowids: one pass over the table in its order, no sort; the head was
    # appended in time order, so each range holds about one stretch of time.
    bind = op.get_bind()
    low, high = bind.exec_driver_sql("SELECT min(rowid), max(rowid) FROM samples_head").one()
    if low is not None:
        for first in range(int(low), int(high) + 1, _ROWS_PER_SPAN):
            bind.exec_driver_sql(
                "INSERT INTO head_spans (first_row, last_row, min_ts_ms, max_ts_ms) "
                "SELECT min(rowid), max(rowid), min(ts_ms), max(ts_ms) FROM samples_head "
                "WHERE rowid BETWEEN ? AND ? HAVING count(*) > 0",
                (first, first + _ROWS_PER_SPAN - 1),
            )
    op.drop_index(_INDEX, table_name="samples_head")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_index(_INDEX, "samples_head", ["ts_ms"])
    op.drop_table("head_spans")
