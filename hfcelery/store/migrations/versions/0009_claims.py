"""Claim numbers: a worker finishes only the claim it made.

Revision ID: 0009_claims
Revises: 0008_dropped
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_claims"
down_revision = "0008_dropped"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.add_column(sa.Column("claims", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("hfcelery_jobs") as batch:
        batch.drop_column("claims")
