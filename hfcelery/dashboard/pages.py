"""The HTML pages: routing, actions, overview, one job, recurring jobs, servers, queues."""

# HTML is built in f-strings here; breaking its lines would make it harder to read.
# ruff: noqa: E501

from __future__ import annotations

import json
import pprint
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from cron_descriptor import get_description

from hfcelery.dashboard.actions import act_on_filter, act_on_jobs, act_on_recurring
from hfcelery.dashboard.api import (
    checked_text,
    parse_filter,
    queue_rows,
    server_rows,
    store_unavailable,
)
from hfcelery.dashboard.core import Request, Response, redirect
from hfcelery.dashboard.layout import Page, duration, e, stamp
from hfcelery.dashboard.lists import jobs
from hfcelery.errors import (
    HfceleryError,
    InvalidArgumentError,
    JobNotFoundError,
    StoreDataError,
    StoreUnavailableError,
)
from hfcelery.states import State

if TYPE_CHECKING:
    from hfcelery.dashboard.core import Dashboard


def handle(dashboard: Dashboard, request: Request, path: str, token: str) -> Response:
    page = Page(dashboard, request, token)
    parts = [p for p in path.strip("/").split("/") if p]
    try:
        if request.method == "POST":
            return _post(page, parts)
        if not parts:
            return overview(page)
        if parts[0] == "jobs" and len(parts) <= 2:
            return jobs(page, parts[1] if len(parts) == 2 else None)
        if parts == ["retries"]:
            return jobs(page, None, retries=True)
        if parts[0] == "job" and len(parts) >= 2:
            # The rest of the path as it is: an id may end in a slash or hold empty segments.
            return job(page, checked_text(path.lstrip("/")[len("job/") :], "job id"))
        if parts == ["recurring"]:
            return recurring(page)
        if parts == ["servers"]:
            return servers(page)
        if parts == ["queues"]:
            return queues(page)
    except JobNotFoundError as exc:
        return page.layout("Not found", "", f"<h1>Not found</h1><p>{e(exc)}</p>", 404)
    # The store refusing data can only be refusing the request's own (an id, a filter, a cursor).
    except (InvalidArgumentError, StoreDataError) as exc:
        return page.layout("Bad request", "", f"<h1>Bad request</h1><p>{e(exc)}</p>", 400)
    except StoreUnavailableError as exc:
        reason = store_unavailable(request, exc)
        body = (
            f"<h1>Store unavailable</h1><p>{e(reason)}</p>"
            "<p>The pages show the jobs again once the store answers: reload in a moment.</p>"
        )
        return page.layout("Store unavailable", "", body, 503)
    return page.layout("Not found", "", "<h1>Not found</h1>", 404)


def _back(page: Page, default: str) -> str:
    back = page.r.field("back") or ""
    # Only a path inside the pages, never another site: browsers read a path that starts with
    # a slash and a backslash (or two slashes) as another host, and skip tabs and newlines.
    inside = back[len(page.root) + 1 :]
    if (
        not back.startswith(page.root + "/")
        or back.startswith("//")
        or inside.startswith(("/", "\\"))
        or any(c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in back)
    ):
        back = page.url(default)
    # A header carries Latin-1 only: anything else in the path goes percent-encoded.
    return quote(back, safe="/?&=%#:;,+@!$'()*[]~")


def _with_outcome(page: Page, url: str, message: str) -> str:
    base, _, query = url.partition("?")
    kept = [p for p in query.split("&") if p and not p.startswith(("outcome=", "seal="))]
    kept.append("outcome=" + quote(message))
    kept.append("seal=" + page.seal(message))
    return base + "?" + "&".join(kept)


def _post(page: Page, parts: list[str]) -> Response:
    r = page.r
    try:
        if parts == ["actions", "jobs"]:
            action = r.field("action") or ""
            ids = r.form.get("id", [])
            if r.field("scope") == "filter":
                outcome = act_on_filter(
                    page.d, action, parse_filter(r.form), after=r.field("after")
                )
            elif ids:
                outcome = act_on_jobs(page.d, action, ids)
            else:
                raise InvalidArgumentError("select at least one job")
            message = outcome.message()
        elif parts == ["actions", "job"]:
            message = act_on_jobs(page.d, r.field("action") or "", [r.field("id") or ""]).message()
        elif parts == ["actions", "recurring"]:
            o = act_on_recurring(page.d, r.field("action") or "", r.field("id") or "")
            message = o.detail or ""
        else:
            return page.layout("Not found", "", "<h1>Not found</h1>", 404)
    except HfceleryError as exc:
        message = f"Failed: {exc}"
    return redirect(_with_outcome(page, _back(page, "/"), message))


# -- overview ----------------------------------------------------------------------------------


_CUMULATIVE = (State.SUCCEEDED, State.DELETED)


def overview(page: Page) -> Response:
    counts, retries = page.d.counts()
    cards = "".join(
        f'<a class="card card-{state.value.lower()}" href="{e(page.url("/jobs/" + state.value.lower()))}">'
        f'<span class="n" data-state="{e(state.value)}">{counts[state]}</span>'
        f"<span>{e(state.value)}{' (all time)' if state in _CUMULATIVE else ''}</span></a>"
        for state in State
    )
    cards += (
        f'<a class="card" href="{e(page.url("/retries"))}"><span class="n" data-retries>'
        f"{retries}</span><span>Retries</span></a>"
    )
    body = f"""<h1>Dashboard</h1><div class="cards">{cards}</div>
<h2>Realtime graph</h2><p class="hint">Succeeded and failed jobs per second, updated every 2 s.</p>
<div id="realtime" class="chart" data-api="{e(page.url("/api/v1/stats"))}"></div>
<h2>History</h2><div class="tabs"><span>Last 24 hours</span></div>
<div id="history-day" class="chart" data-api="{e(page.url("/api/v1/history", hours=24))}"></div>
<div class="tabs"><span>Last 7 days</span></div>
<div id="history-week" class="chart" data-api="{e(page.url("/api/v1/history", days=7))}"></div>"""
    return page.layout("Dashboard", "/", body)


# -- one job -----------------------------------------------------------------------------------


def job(page: Page, job_id: str) -> Response:
    d = page.d.monitoring.job(job_id)
    progress = page.d.monitoring.progress(job_id)
    call_args = ", ".join(
        [pprint.pformat(a, width=80) for a in d.args]
        + [f"{k}={pprint.pformat(v, width=80)}" for k, v in d.kwargs.items()]
    )
    buttons = ""
    here = page.url("/job/" + quote(job_id, safe=""))
    for action, label in (("requeue", "Requeue"), ("delete", "Delete")):
        buttons += page.form("/actions/job", {"id": job_id, "action": action, "back": here}, label)
    if d.state == State.SCHEDULED:
        buttons += page.form(
            "/actions/job", {"id": job_id, "action": "enqueue-now", "back": here}, "Enqueue now"
        )
    links = []
    if page.d.options.flower_task_url:
        links.append(
            f'<a href="{e(page.d.options.flower_task_url + quote(job_id))}">Celery task in Flower</a>'
        )
    for p in d.parent_ids:
        links.append(
            f'Parent <a href="{e(page.url("/job/" + quote(p, safe="")))}"><code>{e(p)}</code></a>'
        )
    for c in d.continuation_ids:
        links.append(
            f'Continuation <a href="{e(page.url("/job/" + quote(c, safe="")))}"><code>{e(c)}</code></a>'
        )
    if d.recurring_id:
        links.append(
            f'From recurring job <a href="{e(page.url("/recurring"))}#{e(quote(d.recurring_id))}">{e(d.recurring_id)}</a>'
        )
    timeline = []
    previous: datetime | None = None
    for h in d.history:
        gap = (
            ""
            if previous is None
            else f'<span class="gap">+{e(duration((h.created_at - previous).total_seconds()))}</span>'
        )
        previous = h.created_at
        data = dict(h.data)
        tb = next((data.pop(k) for k in ("exception_details", "traceback") if k in data), None)
        rows = "".join(
            f"<dt>{e(k)}</dt><dd><code>{e(json.dumps(v, default=str, ensure_ascii=False) if not isinstance(v, str) else v)}</code></dd>"
            for k, v in data.items()
        )
        trace = f'<h3>Traceback</h3><pre class="trace">{e(tb)}</pre>' if tb else ""
        timeline.append(
            f'<li class="state-{e(h.state.value.lower())}"><div class="when">{stamp(h.created_at)} {gap}</div>'
            f"<b>{e(h.state.value)}</b> <span>{e(h.reason or '')}</span><dl>{rows}</dl>{trace}</li>"
        )
    timeline.reverse()
    prog = ""
    if progress is not None:
        fraction = progress.fraction
        bar = (
            f'<progress max="1" value="{fraction}"></progress> '
            f'<span class="percent">{fraction * 100:.0f}%</span>'
            if fraction is not None
            else ""
        )
        lines = "\n".join(progress.log)
        prog = f'<h2>Progress</h2><div id="progress">{bar}<pre class="log">{e(lines)}</pre></div>'
    params = ""
    if d.parameters:
        rows = "".join(
            f"<dt>{e(k)}</dt><dd><code>{e(json.dumps(v, default=str, ensure_ascii=False))}</code></dd>"
            for k, v in d.parameters.items()
        )
        params = f'<h2>Parameters</h2><dl class="parameters">{rows}</dl>'
    live = d.state in (State.PROCESSING, State.ENQUEUED, State.SCHEDULED, State.AWAITING)
    body = f"""<h1>{e(d.display_name or d.function)} <span class="state state-{e(d.state.value.lower())}" id="job-state">{e(d.state.value)}</span></h1>
<div class="job" data-job-api="{e(page.url("/api/v1/jobs/" + quote(job_id, safe="")))}" data-live="{"1" if live else "0"}" data-state="{e(d.state.value)}">
<p><code>{e(d.id)}</code> · queue <b>{e(d.queue)}</b> · created {stamp(d.created_at)}{f" · retries {d.retry_count}" if d.retry_count else ""}</p>
<div class="actions">{buttons}</div>
<h2>Call</h2><pre class="call">{e(d.function)}({e(call_args)})</pre>
{"<p>" + " · ".join(links) + "</p>" if links else ""}{params}{prog}
<h2>History</h2><ol class="timeline">{"".join(timeline)}</ol></div>"""
    return page.layout(d.display_name or d.function, "/jobs/enqueued", body)


# -- recurring, servers, queues -----------------------------------------------------------------


def _describe(cron: str) -> str:
    try:
        return str(get_description(cron))
    except Exception:  # cron-descriptor does not read every form croniter accepts
        return ""


def recurring(page: Page) -> Response:
    rows = []
    back = page.url("/recurring")
    for r in page.d.monitoring.recurring_jobs():
        acts = page.form(
            "/actions/recurring", {"id": r.id, "action": "trigger", "back": back}, "Trigger now"
        )
        acts += page.form(
            "/actions/recurring",
            {"id": r.id, "action": "resume" if r.paused else "pause", "back": back},
            "Resume" if r.paused else "Pause",
        )
        acts += page.form(
            "/actions/recurring", {"id": r.id, "action": "remove", "back": back}, "Remove", "danger"
        )
        last = (
            f'<a href="{e(page.url("/job/" + quote(r.last_job_id, safe="")))}">{e(r.last_job_state.value if r.last_job_state else "?")}</a>'
            if r.last_job_id
            else ""
        )
        rows.append(
            f'<tr id="{e(quote(r.id))}"><td><b>{e(r.id)}</b>{" <span class=badge>paused</span>" if r.paused else ""}</td>'
            f"<td><code>{e(r.cron)}</code><br><small>{e(_describe(r.cron))}</small></td><td>{e(r.time_zone)}</td>"
            f"<td>{e(r.display_name or r.function)}</td><td>{stamp(r.next_execution)}</td><td>{stamp(r.last_execution)}</td>"
            f'<td>{last}</td><td class="err">{e(r.last_error or "")}</td><td>{acts}</td></tr>'
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "Id",
            "Cron",
            "Time zone",
            "Job",
            "Next run",
            "Last run",
            "Last job",
            "Last error",
            "",
        )
    )
    body = f'<h1>Recurring jobs</h1><div class="table"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows) or "<tr><td colspan=9 class=empty>No recurring jobs.</td></tr>"}</tbody></table></div>'
    return page.layout("Recurring jobs", "/recurring", body)


def servers(page: Page) -> Response:
    rows = "".join(
        f'<tr class="{"dead" if s["looks_dead"] else ""}"><td>{e(s["id"])}{" <span class=badge>looks dead</span>" if s["looks_dead"] else ""}</td>'
        f"<td>{e(', '.join(s['queues']))}</td><td>{e(s['concurrency'])}</td>"
        f"<td>{stamp(datetime.fromisoformat(s['started_at']))}</td><td>{stamp(datetime.fromisoformat(s['heartbeat_at']))}</td></tr>"
        for s in server_rows(page.d)
    )
    head = "".join(
        f"<th>{h}</th>" for h in ("Server", "Queues", "Concurrency", "Started", "Heartbeat")
    )
    body = f'<h1>Servers</h1><div class="table"><table><thead><tr>{head}</tr></thead><tbody>{rows or "<tr><td colspan=5 class=empty>No servers.</td></tr>"}</tbody></table></div>'
    return page.layout("Servers", "/servers", body)


def queues(page: Page) -> Response:
    rows = "".join(
        f'<tr><td><a href="{e(page.url("/jobs/enqueued", queue=q["queue"]))}">{e(q["queue"])}</a></td>'
        f"<td>{e(q['enqueued'])}</td><td>{e('?' if q['broker'] is None else q['broker'])}</td></tr>"
        for q in queue_rows(page.d)
    )
    head = "<th>Queue</th><th>Enqueued (store)</th><th>Messages (broker)</th>"
    body = f'<h1>Queues</h1><div class="table"><table><thead><tr>{head}</tr></thead><tbody>{rows or "<tr><td colspan=3 class=empty>No queues.</td></tr>"}</tbody></table></div>'
    return page.layout("Queues", "/queues", body)
