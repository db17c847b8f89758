"""Job parameters (set by filters and jobs) and continuations' next state and exception.

Revision ID: 0012_filters
Revises: 0011_sent_stamp
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_filters"
down_revision = "0011_sent_stamp"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hfcelery_job_parameters",
        sa.Column(
            "job_id",
            sa.String(64),
            sa.ForeignKey("hfcelery_jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    with op.batch_alter_table("hfcelery_continuations") as batch:
        batch.add_column(
            sa.Column("pass_exception", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("next_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("next_delay_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hfcelery_continuations") as batch:
        batch.drop_column("next_delay_seconds")
        batch.drop_column("next_state")
        batch.drop_column("pass_exception")
    op.drop_table("hfcelery_job_parameters")
