"""Alembic environment for the hfcelery store; run through ``hfcelery.store.schema``."""

from __future__ import annotations

from alembic import context

from hfcelery.store.models import Base
from hfcelery.store.schema import VERSION_TABLE

config = context.config
if context.is_offline_mode():  # ``celery hf migrate --sql``: print the DDL, run nothing
    context.configure(
        dialect_name=config.attributes["dialect_name"],
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        transaction_per_migration=True,
    )
else:
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
