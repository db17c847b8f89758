"""Display names of jobs; tracked Celery tasks; terminate requests.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.add_column(sa.Column("display_name", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("tracked", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("terminate", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.alter_column("tracked", server_default=None)
        batch.alter_column("terminate", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.drop_column("terminate")
        batch.drop_column("tracked")
        batch.drop_column("display_name")
