"""Upstream engines: which engine runs an account's tasks, which engine each task and
session ran on, and what each task did upstream (Kling's ids, its charge).

Revision ID: 0005
Revises: 0003 (the lead re-chains it after 0004 at merge)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the service's default engine (LIPDUB_DEFAULT_ENGINE) at submission time.
    with op.batch_alter_table("accounts") as b:
        b.add_column(sa.Column("engine", sa.String(16), nullable=True))
    # NULL: the local engine (every task and session made before this revision).
    with op.batch_alter_table("tasks") as b:
        b.add_column(sa.Column("engine", sa.String(16), nullable=True))
    with op.batch_alter_table("sessions") as b:
        b.add_column(sa.Column("engine", sa.String(16), nullable=True))
    op.create_table(
        "upstream_tasks",
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("engine", sa.String(16), nullable=False),
        sa.Column("upstream_task_id", sa.String(64), nullable=True),
        sa.Column("upstream_session_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("response_json", sa.Text, nullable=True),
        sa.Column("charge", sa.String(32), nullable=True),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.Column("update_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("upstream_tasks")
    for table in ("sessions", "tasks", "accounts"):
        with op.batch_alter_table(table) as b:
            b.drop_column("engine")
