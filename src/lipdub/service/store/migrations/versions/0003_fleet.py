"""Fleet: counters that keep /metrics cheap at any table size, and the fleet's settings.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The histogram's bucket bounds at the time of this revision (store.DURATION_BOUNDS_MS).
BOUNDS_MS = [1000, 5000, 15000, 30000, 60000, 120000, 300000, 600000, 1800000]


def upgrade() -> None:
    op.create_table(
        "task_stats",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("bucket", sa.Integer, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("sum_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "delivery_stats",
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO delivery_stats (state, n, attempts) SELECT state, count(*), "
        "coalesce(sum(attempts), 0) FROM deliveries WHERE state IN ('delivered', 'failed') "
        "GROUP BY state"
    )
    op.create_table(
        "fleet_config",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    # Finished tasks so far, counted once here; from now on each finish adds itself.
    dur = "(complete_ms - create_ms)"
    bucket = "CASE " + " ".join(
        f"WHEN {dur} <= {b} THEN {i}" for i, b in enumerate(BOUNDS_MS)
    ) + f" ELSE {len(BOUNDS_MS)} END"
    op.execute(
        f"INSERT INTO task_stats (model, state, bucket, n, sum_ms) "
        f"SELECT model, state, {bucket}, count(*), sum({dur}) FROM tasks "
        f"WHERE state IN ('completed', 'failed') AND complete_ms IS NOT NULL "
        f"GROUP BY model, state, {bucket}"
    )


def downgrade() -> None:
    op.drop_table("fleet_config")
    op.drop_table("delivery_stats")
    op.drop_table("task_stats")
