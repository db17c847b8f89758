"""Recurring jobs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.add_column(sa.Column("recurring_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(
            "ix_hfcelery_jobs_recurring_id_scheduled_for",
            ["recurring_id", "scheduled_for"],
            unique=True,
            postgresql_where=sa.text("recurring_id IS NOT NULL"),
            sqlite_where=sa.text("recurring_id IS NOT NULL"),
        )
    op.create_table(
        "hfcelery_recurring_jobs",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("function", sa.String(255), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("kwargs", sa.Text(), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("cron", sa.String(100), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("misfire", sa.String(16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_execution", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_job_id", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_hfcelery_recurring_jobs"),
    )


def downgrade() -> None:
    op.drop_table("hfcelery_recurring_jobs")
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.drop_index("ix_hfcelery_jobs_recurring_id_scheduled_for")
        batch.drop_column("scheduled_for")
        batch.drop_column("recurring_id")
