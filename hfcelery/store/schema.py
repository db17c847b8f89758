"""Creating and upgrading the store's schema with the Alembic migrations shipped in the package."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError as AlembicError
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError

from hfcelery.errors import (
    SchemaOutOfDateError,
    SchemaTooNewError,
    StoreError,
    StoreUnavailableError,
)

logger = logging.getLogger(__name__)

#: Alembic's version table for hfcelery, apart from any the user's own migrations keep.
VERSION_TABLE = "hfcelery_alembic_version"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The schema version this hfcelery needs."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema version the store is at, or None for an empty database."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(VERSION_TABLE):
                return None
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    except DBAPIError as exc:
        raise _unavailable(exc) from exc


def _known(current: str | None) -> str | None:
    """``current``, a revision this hfcelery knows (or None); raises SchemaTooNewError for one
    only a newer hfcelery has."""
    if current is None:
        return None
    try:
        found = ScriptDirectory.from_config(_alembic_config()).get_revision(current)
    except AlembicError:
        found = None
    if found is None:
        raise SchemaTooNewError(current, head_revision())
    return current


def _unavailable(exc: DBAPIError) -> StoreUnavailableError:
    """The store could not be reached or read: one line (the driver's first)."""
    lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    return StoreUnavailableError(f"the store is unavailable: {lines[0] if lines else exc}")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the store's schema (creating it if needed)."""
    _known(current_revision(engine))
    config = _alembic_config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    except OperationalError as exc:  # not reached, or the connection lost
        raise _unavailable(exc) from exc
    except DBAPIError as exc:
        raise StoreError(f"migrating the hfcelery store failed: {exc}") from exc
    logger.info("hfcelery store schema is at %s", current_revision(engine))


def upgrade_sql(engine: Engine) -> str:
    """The SQL that :func:`upgrade` would run on this store, from its current schema to head
    (for a DBA to review and apply), without running it. Not for SQLite, which migrates
    itself."""
    if engine.dialect.name == "sqlite":
        raise StoreError("a SQLite store migrates itself on first use; there is no SQL to print")
    current = _known(current_revision(engine))
    head = head_revision()
    if current == head:
        return ""
    config = _alembic_config()
    buffer = io.StringIO()
    config.output_buffer = buffer
    config.attributes["dialect_name"] = engine.dialect.name
    command.upgrade(config, f"{current}:{head}" if current else head, sql=True)
    return buffer.getvalue()


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the store's schema to ``revision`` (``base`` removes it)."""
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def ensure(engine: Engine, *, auto_upgrade: bool) -> None:
    """Check the schema is at head; upgrade it first when ``auto_upgrade`` (the SQLite default).

    Two processes may upgrade a new SQLite file at once; the loser's error is ignored when the
    schema ends up at head anyway.
    """
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    _known(current)
    if not auto_upgrade:
        raise SchemaOutOfDateError(current, head)
    try:
        upgrade(engine)
    except StoreError:
        if current_revision(engine) != head:
            raise
