"""Hardening: uploads as rows, revocable keys, callback destinations, per-account counts.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lipdub.media.fetch import origin

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("account", sa.String(128), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_uploads_account", "uploads", ["account", "create_ms"])
    op.create_index("ix_uploads_expires", "uploads", ["deleted", "expires_ms"])
    with op.batch_alter_table("api_keys") as b:
        b.add_column(sa.Column("revoked_ms", sa.BigInteger, nullable=True))
    with op.batch_alter_table("deliveries") as b:
        b.add_column(sa.Column("dest", sa.String(300), nullable=True))
    op.create_index("ix_tasks_account_state", "tasks", ["account", "state"])
    # Deliveries queued before this revision learn their destination (scheme://host:port).
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, url FROM deliveries WHERE dest IS NULL")).all()
    for delivery_id, url in rows:
        conn.execute(
            sa.text("UPDATE deliveries SET dest = :d WHERE id = :i"),
            {"d": origin(url), "i": delivery_id},
        )


def downgrade() -> None:
    op.drop_index("ix_tasks_account_state", "tasks")
    with op.batch_alter_table("deliveries") as b:
        b.drop_column("dest")
    with op.batch_alter_table("api_keys") as b:
        b.drop_column("revoked_ms")
    op.drop_table("uploads")
