"""Alembic environment for the hfcelery store; run through ``hfcelery.store.schema``."""

from __future__ import annotations

from alembic import context

from hfcelery.store.models import Base
from hfcelery.store.schema import VERSION_TABLE

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
