"""``celery -A proj hf ...``: hfcelery's commands inside the Celery command line."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from hfcelery.cli_jobs import COMMANDS
from hfcelery.errors import ConfigurationError, HfceleryError
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


def _dashboard_options(
    read_only: bool, basic_auth: tuple[str, ...], authorization: str | None
) -> dict[str, Any]:
    options: dict[str, Any] = {"read_only": read_only, "basic_auth": tuple(basic_auth)}
    if authorization:
        from kombu.utils.imports import symbol_by_name

        try:
            found = symbol_by_name(authorization)  # type: ignore[no-untyped-call]
        except (ImportError, AttributeError, ValueError) as exc:
            raise click.BadParameter(
                f"cannot import {authorization!r}: {exc}", param_hint="--authorization"
            ) from None
        options["authorization"] = found
    return options


_READ_ONLY = click.option("--read-only", is_flag=True, help="Hide the buttons; refuse POST.")
_BASIC_AUTH = click.option(
    "--basic-auth", multiple=True, metavar="USER:PASSWORD", help="Require HTTP basic auth."
)
_AUTHORIZATION = click.option(
    "--authorization",
    metavar="MODULE:CALLABLE",
    help="A callable (request) -> bool deciding access (then remote clients may be served).",
)


@hf.command()
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", default=5556, show_default=True, type=click.IntRange(0, 65535))
@_READ_ONLY
@_BASIC_AUTH
@_AUTHORIZATION
@click.pass_context
def dashboard(
    ctx: click.Context,
    address: str,
    port: int,
    read_only: bool,
    basic_auth: tuple[str, ...],
    authorization: str | None,
) -> None:
    """Serve the state-report pages (standalone, on Tornado)."""
    import tornado.ioloop

    from hfcelery.dashboard import Dashboard, DashboardOptions
    from hfcelery.dashboard.tornado import make_app

    try:  # DashboardOptions checks its values (a basic-auth pair, the authorization)
        options = DashboardOptions(**_dashboard_options(read_only, basic_auth, authorization))
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        server = make_app(Dashboard(ctx.obj.app, options)).listen(port, address=address)
    except OSError as exc:  # the port taken, an address not on this machine
        raise click.ClickException(
            f"cannot serve the pages on {address}:{port}: {exc.strerror or exc}"
        ) from None
    bound = next(iter(server._sockets.values())).getsockname()[1]
    click.echo(f"hfcelery pages at http://{address}:{bound}/", err=False)
    with contextlib.suppress(KeyboardInterrupt):
        tornado.ioloop.IOLoop.current().start()


@hf.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("flower_argv", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def flower(ctx: click.Context, flower_argv: tuple[str, ...]) -> None:
    """Run Flower (any Flower option) with the pages under /hf/."""
    import flower.command as flower_command
    from flower.app import Flower

    from hfcelery.dashboard.tornado import mount_in_flower

    app = ctx.obj.app

    class FlowerWithPages(Flower):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            mount_in_flower(self, app)

    flower_command.Flower = FlowerWithPages
    ctx.invoke(flower_command.flower, tornado_argv=flower_argv)


for _command in COMMANDS:
    hf.add_command(_command)
