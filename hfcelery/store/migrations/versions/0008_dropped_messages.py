"""Dropped messages: what a worker acknowledged without recording a job, and why.

Revision ID: 0008_dropped
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_dropped"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hfcelery_dropped_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("server_id", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hfcelery_dropped_messages"),
    )
    op.create_index(
        "ix_hfcelery_dropped_messages_created_at", "hfcelery_dropped_messages", ["created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_hfcelery_dropped_messages_created_at", "hfcelery_dropped_messages")
    op.drop_table("hfcelery_dropped_messages")
