"""Initial schema: accounts, api_keys, ledger, tasks, sessions, deliveries.

Revision ID: 0001
Revises:
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
        "accounts",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("balance_micros", sa.BigInteger, nullable=False),
        sa.Column("reserved_micros", sa.BigInteger, nullable=False),
        sa.Column("webhook_secret", sa.String(128), nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(128), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(128), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("reserved_after", sa.BigInteger, nullable=False),
        sa.Column("note", sa.String(256), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ledger_account", "ledger", ["account", "id"])
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(128), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("external_task_id", sa.String(256), nullable=True),
        sa.Column("param_json", sa.Text, nullable=False),
        sa.Column("job_json", sa.Text, nullable=False),
        sa.Column("result_json", sa.Text, nullable=True),
        sa.Column("fail_code", sa.String(64), nullable=True),
        sa.Column("fail_msg", sa.Text, nullable=True),
        sa.Column("price_micros", sa.BigInteger, nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until_ms", sa.BigInteger, nullable=True),
        sa.Column("callback_url", sa.Text, nullable=True),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=True),
        sa.Column("complete_ms", sa.BigInteger, nullable=True),
        sa.Column("purged", sa.Integer, nullable=False),
        sa.UniqueConstraint("account", "external_task_id", name="uq_tasks_account_external"),
    )
    op.create_index("ix_tasks_claim", "tasks", ["state", "create_ms"])
    op.create_index("ix_tasks_complete", "tasks", ["complete_ms"])
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(128), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("video_key", sa.String(256), nullable=False),
        sa.Column("dir_key", sa.String(256), nullable=False),
        sa.Column("duration_ms", sa.BigInteger, nullable=False),
        sa.Column("faces_json", sa.Text, nullable=False),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(64), nullable=False, unique=True),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_ms", sa.BigInteger, nullable=True),
        sa.Column("next_ms", sa.BigInteger, nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger, nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_ms", sa.BigInteger, nullable=True),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["state", "next_ms"])


def downgrade() -> None:
    for name in ("deliveries", "sessions", "tasks", "ledger", "api_keys", "accounts"):
        op.drop_table(name)
