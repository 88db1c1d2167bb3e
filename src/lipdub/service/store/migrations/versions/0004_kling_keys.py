"""Kling's own API: access key / secret key pairs, and the API each task came through.

Revision ID: 0004
Revises: 0003
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
        "kling_keys",
        sa.Column("access_key", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(128), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("secret_check", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_kling_keys_account", "kling_keys", ["account"])
    # NULL: the reseller contract (every task before this revision came through it).
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("via", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("via")
    op.drop_index("ix_kling_keys_account", table_name="kling_keys")
    op.drop_table("kling_keys")
