"""Send stamps: a message Celery sends again on purpose runs; a redelivery does not.

Revision ID: 0011_sent_stamp
Revises: 0010_statistics
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_sent_stamp"
down_revision = "0010_statistics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.add_column(sa.Column("sent_stamp", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.drop_column("sent_stamp")
