"""Hourly statistics, job progress and log lines, indexes for the pages' lists.

Revision ID: 0010_statistics
Revises: 0009_claims
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_statistics"
down_revision = "0009_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hfcelery_statistics",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "hour", name="pk_hfcelery_statistics"),
    )
    op.create_table(
        "hfcelery_job_progress",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=True),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_hfcelery_job_progress"),
    )
    # Lists across every state and per queue, newest change first (keyset paging).
    op.create_index(
        "ix_hfcelery_jobs_state_changed_at_id", "hfcelery_jobs", ["state_changed_at", "id"]
    )
    op.create_index(
        "ix_hfcelery_jobs_queue_state_state_changed_at_id",
        "hfcelery_jobs",
        ["queue", "state", "state_changed_at", "id"],
    )
    op.create_index(
        "ix_hfcelery_jobs_function_state_changed_at_id",
        "hfcelery_jobs",
        ["function", "state_changed_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_hfcelery_jobs_function_state_changed_at_id", "hfcelery_jobs")
    op.drop_index("ix_hfcelery_jobs_queue_state_state_changed_at_id", "hfcelery_jobs")
    op.drop_index("ix_hfcelery_jobs_state_changed_at_id", "hfcelery_jobs")
    op.drop_table("hfcelery_job_progress")
    op.drop_table("hfcelery_statistics")
