"""``celery -A proj hf ...``: hfcelery's commands inside the Celery command line."""

from __future__ import annotations

from typing import Any

import click

from hfcelery.extension import extension_of


@click.group(name="hf")
@click.pass_context
def hf(ctx: click.Context) -> None:
    """hfcelery: job store and jobs."""


def _extension(ctx: click.Context) -> Any:
    return extension_of(ctx.obj.app)


@hf.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade the job store's schema to this version's."""
    store = _extension(ctx).store
    before = store.schema_revision()
    head = store.migrate()
    if before == head:
        click.echo(f"hfcelery store is up to date (schema {head})")
    else:
        click.echo(f"hfcelery store migrated from {before or 'empty'} to schema {head}")
