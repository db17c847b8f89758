"""Continuations keep each parent's position: a join passes results in the order given.

Existing rows get position 0, so a continuation added before this still passes its parents'
results in the order of their ids, as it did (the order it was given was not kept).

Revision ID: 0013_positions
Revises: 0012_filters
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_positions"
down_revision = "0012_filters"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hfcelery_continuations") as batch:
        batch.add_column(sa.Column("position", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("hfcelery_continuations") as batch:
        batch.drop_column("position")
