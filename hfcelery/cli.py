"""``celery -A proj hf ...``: hfcelery's commands inside the Celery command line."""

from __future__ import annotations

from typing import Any

import click

from hfcelery.errors import HfceleryError
from hfcelery.extension import extension_of


class HfGroup(click.Group):
    """A command group whose hfcelery errors end as one line and a non-zero exit code, never
    a traceback (Celery's own command line conventions)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HfceleryError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(name="hf", cls=HfGroup)
@click.pass_context
def hf(ctx: click.Context) -> None:
    """hfcelery: job store and jobs."""


def _extension(ctx: click.Context) -> Any:
    return extension_of(ctx.obj.app)


@hf.command()
@click.option(
    "--sql", "print_sql", is_flag=True, help="Print the SQL instead of running it (PostgreSQL)."
)
@click.pass_context
def migrate(ctx: click.Context, print_sql: bool) -> None:
    """Create or upgrade the job store's schema to this version's."""
    store = _extension(ctx).store
    if print_sql:
        click.echo(store.migration_sql() or "-- the store is up to date", nl=False)
        return
    before = store.schema_revision()
    head = store.migrate()
    if before == head:
        click.echo(f"hfcelery store is up to date (schema {head})")
    else:
        click.echo(f"hfcelery store migrated from {before or 'empty'} to schema {head}")
