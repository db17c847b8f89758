"""``celery -A proj hf jobs|recurring|servers|stats|cleanup``: jobs from a shell.

Everything reads through :func:`hfcelery.monitoring` and acts through the management API, as
the pages do. ``--json`` prints machine-readable output; tables fit an 80-column terminal.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

import click

from hfcelery.client import BackgroundJobClient
from hfcelery.extension import extension_of
from hfcelery.monitoring import Monitoring, monitoring
from hfcelery.records import JobFilter
from hfcelery.recurring import RecurringJobManager
from hfcelery.states import State

F = TypeVar("F", bound=Callable[..., Any])

#: Jobs acted on per round trip when a command acts on every match of a filter.
BATCH_SIZE = 200
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _app(ctx: click.Context) -> Any:
    return ctx.find_root().obj.app


def _api(ctx: click.Context) -> Monitoring:
    return monitoring(_app(ctx))


def _plain(value: Any) -> Any:
    """Records as JSON can carry them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(_plain(value), indent=2, sort_keys=True))


def _since(value: str | None) -> datetime | None:
    """``--since``: a duration back from now (``90s``, ``30m``, ``2h``, ``7d``) or a time."""
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if match:
        try:
            return datetime.now(UTC) - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
        except OverflowError:
            raise click.BadParameter(
                f"{value} goes back past year 1", param_hint="--since"
            ) from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "use a duration (30m, 2h, 7d) or an ISO time", param_hint="--since"
        ) from None
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    try:
        when.astimezone(UTC)  # the store compares in UTC: 9999-12-31T23:59-14:00 has no UTC time
    except OverflowError:
        raise click.BadParameter(f"{value} is out of range in UTC", param_hint="--since") from None
    return when


def _age(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (datetime.now(UTC) - when).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds:.0f}s"
    elif seconds < 3600:
        text = f"{seconds / 60:.0f}m"
    elif seconds < 86400:
        text = f"{seconds / 3600:.1f}h"
    else:
        text = f"{seconds / 86400:.1f}d"
    return f"in {text}" if future else f"{text} ago"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cut_start(text: str, width: int) -> str:
    """A function's name keeps its end (``…tasks:add``): its start is the shared package."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def _table(
    rows: list[tuple[str, ...]], widths: tuple[int, ...], keep_end: tuple[int, ...] = ()
) -> None:
    """Rows in columns of ``widths``; the columns in ``keep_end`` are cut at their start."""
    for row in rows:
        cells = (
            (_cut_start if i in keep_end else _cut)(cell, w).ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        click.echo("  ".join(cells))


def job_filter_options(command: F) -> F:
    """The options that choose jobs: state, queue, function, argument text, time."""
    for option in reversed(
        [
            click.option("--state", help="Enqueued, Scheduled, Failed, ... (any case)."),
            click.option("--queue", help="Only jobs of this queue."),
            click.option("--function", help="Function or task name; 'reports.*' for a prefix."),
            click.option("--search", help="Text the job's arguments contain."),
            click.option("--since", help="Changed within this long (30m, 2h, 7d) or since a time."),
        ]
    ):
        command = option(command)
    return command


def _where(
    state: str | None,
    queue: str | None,
    function: str | None,
    search: str | None,
    since: str | None,
) -> JobFilter:
    from hfcelery.states import parse_state

    return JobFilter(
        state=None if state is None else parse_state(state),
        queue=queue,
        function=function,
        text=search,
        since=_since(since),
    )


# -- jobs --------------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """Jobs: list, show, requeue, delete."""


@jobs.command("list")
@job_filter_options
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--after", help="The cursor a previous page printed, for the next page.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_jobs(
    ctx: click.Context,
    state: str | None,
    queue: str | None,
    function: str | None,
    search: str | None,
    since: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """List jobs, most recently changed first."""
    page = _api(ctx).search(_where(state, queue, function, search, since), limit=limit, after=after)
    if as_json:
        _echo_json({"items": page.items, "next_cursor": page.next_cursor})
        return
    if not page.items:
        click.echo("no jobs match")
        return
    _table([("ID", "STATE", "FUNCTION", "CHANGED")], (36, 10, 18, 9))
    _table(
        [
            (
                row.job.id,
                row.job.state.value,
                row.job.display_name or row.job.function,
                _age(row.job.state_changed_at),
            )
            for row in page.items
        ],
        (36, 10, 18, 9),
        keep_end=(2,),
    )
    if page.next_cursor:
        click.echo(f"more: --after {page.next_cursor}")


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show_job(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show a job: its call and its state history as a timeline."""
    api = _api(ctx)
    job = api.job(job_id)
    if as_json:
        _echo_json({"job": job, "progress": api.progress(job_id)})
        return
    arguments = ", ".join(
        [json.dumps(a, default=str) for a in job.args]
        + [f"{k}={json.dumps(v, default=str)}" for k, v in job.kwargs.items()]
    )
    click.echo(f"{job.display_name or job.function}({_cut(arguments, 200)})")
    click.echo(f"id {job.id}  queue {job.queue}  state {job.state.value}")
    if job.parent_ids:
        click.echo(f"waits for {', '.join(job.parent_ids)}")
    if job.continuation_ids:
        click.echo(f"continued by {', '.join(job.continuation_ids)}")
    if job.recurring_id:
        click.echo(f"from recurring job {job.recurring_id}")
    previous: datetime | None = None
    for entry in job.history:
        gap = (
            "" if previous is None else f" (+{(entry.created_at - previous).total_seconds():.3f}s)"
        )
        previous = entry.created_at
        click.echo(f"{entry.created_at:%Y-%m-%d %H:%M:%S} {entry.state.value}{gap}")
        if entry.reason:
            click.echo(f"    {_cut(entry.reason, 200)}")
        for key, value in entry.data.items():
            if key == "exception_details":
                continue
            click.echo(f"    {key}: {_cut(json.dumps(value, default=str), 160)}")
    details = job.history[-1].data.get("exception_details") if job.history else None
    if details:
        click.echo(str(details).rstrip())


def _act(
    ctx: click.Context,
    verb: tuple[str, str],
    transition: str,
    act: Callable[[BackgroundJobClient, str], bool],
    job_ids: tuple[str, ...],
    where: JobFilter,
    yes: bool,
) -> None:
    infinitive, name = verb
    client = BackgroundJobClient(_app(ctx))
    filtered = where != JobFilter()
    if job_ids and filtered:
        raise click.UsageError("give job ids or filter options, not both")
    if job_ids:
        applied = [job_id for job_id in job_ids if act(client, job_id)]
        for job_id in job_ids:
            if job_id not in applied:
                click.echo(f"{job_id}: not changed (no such job, or its state does not allow it)")
        click.echo(f"{name} {len(applied)} of {len(job_ids)} job(s)")
        if len(applied) < len(job_ids):
            sys.exit(1)
        return
    if not filtered:
        raise click.UsageError("give job ids, or filter options (--state, --function, ...)")
    api = _api(ctx)
    # Only the jobs the action can change: a second delete of a queue finds nothing to do.
    where = where.changeable_by(transition)
    total = api.count(where)
    if total == 0:
        click.echo("no jobs match")
        return
    if not yes:
        click.confirm(f"{infinitive} {total} job(s)?", abort=True)
    done = 0
    after: str | None = None
    with click.progressbar(length=total, label=name, file=sys.stderr) as bar:
        while True:
            page = api.search(where, limit=BATCH_SIZE, after=after)
            done += sum(act(client, row.job.id) for row in page.items)
            bar.update(len(page.items))
            after = page.next_cursor
            if after is None:
                break
    click.echo(f"{name} {done} of {total} job(s)")


def _job_action(
    name: str, verb: tuple[str, str], act: Callable[[BackgroundJobClient, str], bool]
) -> None:
    """Register ``jobs <name>``: act on the given job ids, or on every match of the filter
    (the store's transition of the same name, see ``hfcelery.states``)."""

    @jobs.command(name, help=f"{verb[0]} the given jobs, or every job matching the filter.")
    @click.argument("job_ids", nargs=-1)
    @job_filter_options
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @click.pass_context
    def command(
        ctx: click.Context,
        job_ids: tuple[str, ...],
        state: str | None,
        queue: str | None,
        function: str | None,
        search: str | None,
        since: str | None,
        yes: bool,
    ) -> None:
        where = _where(state, queue, function, search, since)
        _act(ctx, verb, name, act, job_ids, where, yes)


_job_action("requeue", ("Requeue", "Requeued"), lambda client, job_id: client.requeue(job_id))
_job_action("delete", ("Delete", "Deleted"), lambda client, job_id: client.delete(job_id))


# -- recurring jobs ------------------------------------------------------------------------------


@click.group()
def recurring() -> None:
    """Recurring jobs: list, trigger, pause, resume, remove."""


@recurring.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_recurring(ctx: click.Context, as_json: bool) -> None:
    """List recurring jobs with their schedules and last runs."""
    records = _api(ctx).recurring_jobs()
    if as_json:
        _echo_json(records)
        return
    if not records:
        click.echo("no recurring jobs")
        return
    widths = (16, 14, 13, 9, 9, 6)
    _table([("ID", "CRON", "TIME ZONE", "NEXT", "LAST", "PAUSED")], widths)
    _table(
        [
            (
                r.id,
                r.cron,
                r.time_zone,
                _age(r.next_execution),
                _age(r.last_execution),
                "yes" if r.paused else "no",
            )
            for r in records
        ],
        widths,
    )


def _recurring_command(
    name: str, help_text: str, act: Callable[[RecurringJobManager, str], Any]
) -> None:
    @recurring.command(name, help=help_text)
    @click.argument("recurring_id")
    @click.pass_context
    def command(ctx: click.Context, recurring_id: str) -> None:
        result = act(RecurringJobManager(_app(ctx)), recurring_id)
        if result is False:
            raise click.ClickException(f"no recurring job {recurring_id!r}")
        click.echo(f"{name} {recurring_id}: {result if isinstance(result, str) else 'done'}")


_recurring_command(
    "trigger", "Run a recurring job now; prints the new job's id.", lambda m, i: m.trigger(i)
)
_recurring_command("pause", "Stop firing a recurring job until resumed.", lambda m, i: m.pause(i))
_recurring_command("resume", "Fire a paused recurring job again.", lambda m, i: m.resume(i))
_recurring_command(
    "remove", "Remove a recurring job (its jobs stay).", lambda m, i: m.remove_if_exists(i)
)


# -- servers, statistics, cleanup ----------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def servers(ctx: click.Context, as_json: bool) -> None:
    """The workers registered in the store, and whether they look alive."""
    records = _api(ctx).servers()
    timeout = extension_of(_app(ctx)).config.server_timeout_seconds
    now = datetime.now(UTC)
    alive = {s.id: (now - s.heartbeat_at).total_seconds() <= timeout for s in records}
    if as_json:
        _echo_json([{**_plain(s), "alive": alive[s.id]} for s in records])
        return
    if not records:
        click.echo("no servers")
        return
    widths = (34, 16, 5, 10, 5)
    _table([("SERVER", "QUEUES", "PROCS", "HEARTBEAT", "ALIVE")], widths)
    _table(
        [
            (s.id, ",".join(s.queues), str(s.concurrency), _age(s.heartbeat_at),
             "yes" if alive[s.id] else "NO")
            for s in records
        ],
        widths,
    )  # fmt: skip


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Jobs per state, cumulative totals and dropped messages."""
    api = _api(ctx)
    counts = {state.value: n for state, n in api.state_counts().items()}
    totals = api.statistics()
    dropped, _ = api.dropped_messages(1)
    if as_json:
        _echo_json({"states": counts, "totals": totals, "dropped_messages": dropped})
        return
    for state in State:
        click.echo(f"{state.value:<12}{counts.get(state.value, 0):>12}")
    for name, value in sorted(totals.items()):
        click.echo(f"{'total ' + name:<24}{value:>12}" if len(name) < 18 else f"{name} {value}")
    click.echo(f"{'dropped messages':<24}{dropped:>12}")


@click.command()
@click.pass_context
def cleanup(ctx: click.Context) -> None:
    """Remove expired jobs now (and Failed ones past their configured limits)."""
    extension = extension_of(_app(ctx))
    config, store = extension.config, extension.store
    seconds = config.failed_retention_seconds
    older_than = None if seconds is None else timedelta(seconds=seconds)
    removed = 0
    while True:
        batch = store.delete_expired(limit=config.maintenance_batch_size) + store.trim_failed(
            older_than=older_than, keep=config.max_failed_jobs, limit=config.maintenance_batch_size
        )
        removed += batch
        if batch < config.maintenance_batch_size:
            break
    click.echo(f"removed {removed} job(s)")


COMMANDS = (jobs, recurring, servers, stats, cleanup)
