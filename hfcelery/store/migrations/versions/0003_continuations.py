"""Continuations: jobs waiting for other jobs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.add_column(
            sa.Column("awaiting_parents", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("continuation_count", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.alter_column("awaiting_parents", server_default=None)
        batch.alter_column("continuation_count", server_default=None)
    op.create_table(
        "hfcelery_continuations",
        sa.Column("parent_id", sa.String(64), nullable=False),
        sa.Column("child_id", sa.String(64), nullable=False),
        sa.Column("options", sa.Integer(), nullable=False),
        sa.Column("pass_result", sa.String(8), nullable=True),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["hfcelery_jobs.id"],
            name="fk_hfcelery_continuations_parent_id_hfcelery_jobs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["hfcelery_jobs.id"],
            name="fk_hfcelery_continuations_child_id_hfcelery_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("parent_id", "child_id", name="pk_hfcelery_continuations"),
    )
    op.create_index("ix_hfcelery_continuations_child_id", "hfcelery_continuations", ["child_id"])


def downgrade() -> None:
    op.drop_table("hfcelery_continuations")
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.drop_column("continuation_count")
        batch.drop_column("awaiting_parents")
