"""Jobs, state history, servers and locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hfcelery_jobs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("function", sa.String(255), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("kwargs", sa.Text(), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("state_changed_at", _ts(), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("server_id", sa.String(255), nullable=True),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("due_at", _ts(), nullable=True),
        sa.Column("expire_at", _ts(), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hfcelery_jobs"),
    )
    op.create_index(
        "ix_hfcelery_jobs_state_state_changed_at_id",
        "hfcelery_jobs",
        ["state", "state_changed_at", "id"],
    )
    op.create_index(
        "ix_hfcelery_jobs_due_at",
        "hfcelery_jobs",
        ["due_at"],
        postgresql_where=sa.text("due_at IS NOT NULL"),
        sqlite_where=sa.text("due_at IS NOT NULL"),
    )
    op.create_index(
        "ix_hfcelery_jobs_expire_at",
        "hfcelery_jobs",
        ["expire_at"],
        postgresql_where=sa.text("expire_at IS NOT NULL"),
        sqlite_where=sa.text("expire_at IS NOT NULL"),
    )
    op.create_index(
        "ix_hfcelery_jobs_server_id",
        "hfcelery_jobs",
        ["server_id"],
        postgresql_where=sa.text("server_id IS NOT NULL"),
        sqlite_where=sa.text("server_id IS NOT NULL"),
    )
    op.create_table(
        "hfcelery_job_states",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hfcelery_job_states"),
    )
    op.create_index("ix_hfcelery_job_states_job_id", "hfcelery_job_states", ["job_id"])
    op.create_table(
        "hfcelery_servers",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", sa.Text(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("heartbeat_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hfcelery_servers"),
    )
    op.create_index("ix_hfcelery_servers_heartbeat_at", "hfcelery_servers", ["heartbeat_at"])
    op.create_table(
        "hfcelery_locks",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_hfcelery_locks"),
    )


def downgrade() -> None:
    op.drop_table("hfcelery_locks")
    op.drop_table("hfcelery_servers")
    op.drop_table("hfcelery_job_states")
    op.drop_table("hfcelery_jobs")
