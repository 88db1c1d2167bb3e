"""Limits over every API process: request-rate windows and leased download slots.

Revision ID: 0006
Revises: 0003
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
        "rate_windows",
        sa.Column("account", sa.String(128), primary_key=True),
        sa.Column("hits", sa.Text, nullable=False),
    )
    op.create_table(
        "download_slots",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_download_slots_account", "download_slots", ["account"])


def downgrade() -> None:
    op.drop_index("ix_download_slots_account", table_name="download_slots")
    op.drop_table("download_slots")
    op.drop_table("rate_windows")
