"""The JSON API under ``/api/v1``: the pages' data and actions, for scripts and live updates.

GET  /stats                      counts per state, cumulative succeeded/failed/deleted
GET  /history?hours=24|days=7    counters per hour or per day
GET  /jobs?state=&queue=&function=&since=&until=&text=&limit=&after=
GET  /jobs/count?<same filter>   how many jobs match
GET  /jobs/<id>                  one job with history, progress and log lines
GET  /retries, /queues, /servers, /recurring
POST /jobs/<id>/requeue|delete|enqueue-now
POST /jobs/bulk                  action=..., either id=... (repeated) or the filter (+ after)
POST /recurring/<id>/trigger|pause|resume|remove
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from hfcelery.dashboard.actions import (
    JOB_ACTIONS,
    RECURRING_ACTIONS,
    act_on_filter,
    act_on_job,
    act_on_jobs,
    act_on_recurring,
)
from hfcelery.dashboard.core import Request, Response, json_response
from hfcelery.errors import (
    HfceleryError,
    InvalidArgumentError,
    JobNotFoundError,
    StoreDataError,
    StoreUnavailableError,
)
from hfcelery.errors import RecurringJobNotFoundError as RecurringMissing
from hfcelery.extension import extension_of
from hfcelery.records import JobFilter
from hfcelery.states import State

if TYPE_CHECKING:
    from hfcelery.dashboard.core import Dashboard

logger = logging.getLogger("hfcelery.dashboard")
DEFAULT_PAGE_SIZE = 20
PAGE_SIZES = (10, 20, 50, 100, 500)
#: A server whose heartbeat is older than this many heartbeat intervals looks dead.
DEAD_AFTER_HEARTBEATS = 3


def plain(value: Any) -> Any:
    """Records, enums and datetimes as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _when(text: str | None, name: str) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidArgumentError(f"{name} must be an ISO date and time") from exc
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    try:
        when.astimezone(UTC)  # the store compares in UTC: 9999-12-31T23:59-14:00 has no UTC time
    except OverflowError as exc:
        raise InvalidArgumentError(f"{name} is out of range once converted to UTC") from exc
    return when


def checked_text(value: str, name: str) -> str:
    """A value from a request, refused if PostgreSQL's text cannot hold it (a NUL)."""
    if "\x00" in value:
        raise InvalidArgumentError(f"{name} must not contain a NUL character")
    return value


def parse_filter(values: Mapping[str, list[str]], state: str | None = None) -> JobFilter:
    """A filter from query (or form) fields; empty fields mean "any"."""

    def one(name: str) -> str | None:
        found = values.get(name)
        text = found[-1].strip() if found else ""
        return checked_text(text, name) if text else None

    state_text = state or one("state")
    return JobFilter(
        state=parse_state_name(state_text) if state_text else None,
        function=one("function"),
        queue=one("queue"),
        since=_when(one("since"), "since"),
        until=_when(one("until"), "until"),
        text=one("text"),
        retries=(one("retries") or "").lower() in ("1", "true"),
    )


def parse_state_name(text: str) -> State:
    for state in State:
        if state.value.lower() == text.lower():
            return state
    raise InvalidArgumentError(f"unknown state {text!r}")


def page_size(request: Request) -> int:
    text = request.arg("limit") or request.arg("size")
    if text is None:
        return DEFAULT_PAGE_SIZE
    try:
        size = int(text)
    except ValueError as exc:
        raise InvalidArgumentError("limit must be a number") from exc
    return size


def server_rows(dashboard: Dashboard) -> list[dict[str, Any]]:
    """Servers with a ``looks_dead`` flag (heartbeat older than a few intervals)."""
    interval = extension_of(dashboard.app).config.heartbeat_interval_seconds
    now = datetime.now(UTC)
    rows = []
    for server in dashboard.monitoring.servers():
        age = (now - server.heartbeat_at).total_seconds()
        rows.append({**plain(server), "looks_dead": age > interval * DEAD_AFTER_HEARTBEATS})
    return rows


def queue_rows(dashboard: Dashboard) -> list[dict[str, Any]]:
    """Each queue: Enqueued jobs in the store next to the messages in the broker."""
    counts = dashboard.monitoring.queues()
    names = set(counts)
    for server in dashboard.monitoring.servers():
        names.update(server.queues)
    ordered = sorted(names)
    lengths = dashboard.monitoring.broker_queue_lengths(ordered)
    return [{"queue": q, "enqueued": counts.get(q, 0), "broker": lengths[q]} for q in ordered]


def stats(dashboard: Dashboard) -> dict[str, Any]:
    counts, retries = dashboard.counts()
    return {
        "states": {state.value: n for state, n in counts.items()},
        "retries": retries,
        "totals": dashboard.monitoring.statistics(),
        "servers": len(dashboard.monitoring.servers()),
        "recurring": len(dashboard.monitoring.recurring_jobs()),
        "time": datetime.now(UTC).isoformat(),
    }


def history(dashboard: Dashboard, request: Request) -> dict[str, Any]:
    if request.arg("days"):
        days = int(request.arg("days") or 7)
        series = dashboard.monitoring.daily_statistics(days)
    else:
        series = dashboard.monitoring.hourly_statistics(int(request.arg("hours") or 24))
    return {
        "points": [
            {"time": when.isoformat(), **{k: counts.get(k, 0) for k in ("succeeded", "failed")}}
            for when, counts in series
        ]
    }


def handle(dashboard: Dashboard, request: Request, path: str) -> Response:
    try:
        return _route(dashboard, request, path)
    except (JobNotFoundError, RecurringMissing) as exc:
        return json_response({"error": str(exc)}, 404)
    # The store refusing data can only be refusing the request's own (an id, a filter).
    except (InvalidArgumentError, StoreDataError, ValueError) as exc:
        return json_response({"error": str(exc)}, 400)
    except StoreUnavailableError as exc:
        return json_response({"error": store_unavailable(request, exc)}, 503)
    except HfceleryError as exc:
        return json_response({"error": str(exc)}, 500)


def store_unavailable(request: Request, exc: StoreUnavailableError) -> str:
    """Log one line for a request the store could not serve (a traceback per request would
    say nothing more while it is down); return the reason, on one line."""
    reason = (str(exc).strip().splitlines() or ["the store is unavailable"])[0]
    logger.warning("hfcelery pages: %s %r answered 503: %s", request.method, request.path, reason)
    return reason


def _route(dashboard: Dashboard, request: Request, path: str) -> Response:
    # The adapter decoded the path already: decoding it again would turn an id's own percent
    # sign into another id (``job%41x`` into ``jobAx``).
    parts = path.strip("/").split("/") if path.strip("/") else []
    get = request.method in ("GET", "HEAD")
    m = dashboard.monitoring
    if get and parts == ["stats"]:
        return json_response(stats(dashboard))
    if get and parts == ["history"]:
        return json_response(history(dashboard, request))
    if get and parts == ["jobs"]:
        page = m.search(
            parse_filter(request.query), limit=page_size(request), after=request.arg("after")
        )
        return json_response(plain(page))
    if get and parts == ["jobs", "count"]:
        return json_response({"count": m.count(parse_filter(request.query))})
    if get and parts == ["retries"]:  # the retries, filtered as the Retries page is
        where = replace(parse_filter(request.query), retries=True, state=None)
        page = m.search(where, limit=page_size(request), after=request.arg("after"))
        return json_response(plain(page))
    if get and len(parts) >= 2 and parts[0] == "jobs":
        # The rest of the path as it is: an id may end in a slash or hold empty segments.
        job_id = checked_text(path.lstrip("/")[len("jobs/") :], "job id")
        details = m.job(job_id)
        progress = m.progress(job_id)
        return json_response({**plain(details), "progress": plain(progress)})
    if get and parts == ["queues"]:
        return json_response(queue_rows(dashboard))
    if get and parts == ["servers"]:
        return json_response(server_rows(dashboard))
    if get and parts == ["recurring"]:
        return json_response(plain(m.recurring_jobs()))
    if not get and parts == ["jobs", "bulk"]:
        action = request.field("action") or ""
        ids = request.form.get("id", [])
        if ids:
            outcome = act_on_jobs(dashboard, action, ids)
        else:
            where = parse_filter(request.form)
            outcome = act_on_filter(dashboard, action, where, after=request.field("after"))
        return json_response({**plain(outcome), "message": outcome.message()})
    # Ids may contain "/" (the path arrives decoded): the id is everything between.
    if not get and len(parts) >= 3 and parts[0] == "jobs" and parts[-1] in JOB_ACTIONS:
        job_id = "/".join(parts[1:-1])
        applied = act_on_job(dashboard, parts[-1], job_id)
        return json_response({"action": parts[-1], "id": job_id, "applied": applied})
    if not get and len(parts) >= 3 and parts[0] == "recurring" and parts[-1] in RECURRING_ACTIONS:
        outcome = act_on_recurring(dashboard, parts[-1], "/".join(parts[1:-1]))
        return json_response({**plain(outcome), "message": outcome.detail})
    return json_response({"error": "not found"}, 404 if get else 405 if parts else 404)
