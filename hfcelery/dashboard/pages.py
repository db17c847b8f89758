"""The HTML pages. Every value from a job, a recurring job or a server goes through ``e()``."""

# HTML is built in f-strings here; breaking its lines would make it harder to read.
# ruff: noqa: E501

from __future__ import annotations

import json
import pprint
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from cron_descriptor import get_description

from hfcelery.dashboard.actions import act_on_filter, act_on_jobs, act_on_recurring
from hfcelery.dashboard.api import (
    PAGE_SIZES,
    page_size,
    parse_filter,
    parse_state_name,
    queue_rows,
    server_rows,
)
from hfcelery.dashboard.core import XSRF_FIELD, Request, Response, html_response, redirect
from hfcelery.errors import HfceleryError, InvalidArgumentError, JobNotFoundError
from hfcelery.records import JobFilter, JobRow, JobRowPage
from hfcelery.states import State

if TYPE_CHECKING:
    from hfcelery.dashboard.core import Dashboard


def e(value: object) -> str:
    return escape(str(value), quote=True)


def ago(when: datetime | None) -> str:
    if when is None:
        return ""
    seconds = (datetime.now(UTC) - when).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or unit == "s":
            text = f"{int(seconds // size)} {unit}"
            break
    return f"in {text}" if future else f"{text} ago"


def stamp(when: datetime | None) -> str:
    if when is None:
        return "—"
    iso = when.astimezone(UTC).isoformat()
    return f'<time datetime="{e(iso)}" title="{e(iso)}">{e(ago(when))}</time>'


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _seconds(data: dict[str, Any]) -> float | None:
    """A Succeeded state's duration: recorded in milliseconds (``duration`` in seconds)."""
    for key, scale in (("duration_ms", 1000.0), ("duration", 1.0)):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value / scale
    return None


class Page:
    """Builds one page: the layout around a body, links relative to the mount point."""

    def __init__(self, dashboard: Dashboard, request: Request, token: str) -> None:
        self.d = dashboard
        self.r = request
        self.token = token
        self.root = request.root.rstrip("/")

    def url(self, path: str, **query: object) -> str:
        q = {k: v for k, v in query.items() if v not in (None, "", False)}
        return self.root + path + ("?" + urlencode(q) if q else "")

    def form(self, action: str, fields: dict[str, str], label: str, css: str = "") -> str:
        if self.d.options.read_only:
            return ""
        hidden = "".join(
            f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in fields.items()
        )
        return (
            f'<form method="post" action="{e(self.url(action))}" class="inline">'
            f'<input type="hidden" name="{XSRF_FIELD}" value="{e(self.token)}">{hidden}'
            f'<button type="submit" class="btn {css}">{e(label)}</button></form>'
        )

    def layout(self, title: str, active: str, body: str, status: int = 200) -> Response:
        nav = [
            ("/", "Dashboard"),
            ("/jobs/enqueued", "Jobs"),
            ("/retries", "Retries"),
            ("/recurring", "Recurring jobs"),
            ("/servers", "Servers"),
            ("/queues", "Queues"),
        ]
        links = "".join(
            f'<a href="{e(self.url(p))}" class="{"active" if p == active else ""}">{e(t)}</a>'
            for p, t in nav
        )
        if self.d.options.flower_url:
            links += f'<a href="{e(self.d.options.flower_url)}">Flower</a>'
        notice = self.r.arg("outcome")
        flash = f'<div class="flash" role="status">{e(notice)}</div>' if notice else ""
        ro = '<span class="badge">read-only</span>' if self.d.options.read_only else ""
        text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · {e(self.d.options.title)}</title>
<link rel="stylesheet" href="{e(self.url("/static/uPlot.min.css"))}">
<link rel="stylesheet" href="{e(self.url("/static/app.css"))}">
</head><body data-root="{e(self.root)}" data-xsrf="{e(self.token)}">
<header><a class="brand" href="{e(self.url("/"))}">{e(self.d.options.title)}</a>{ro}
<nav>{links}</nav></header>
<main>{flash}{body}</main>
<footer>hfcelery · store {e(_safe_url(self.d))}</footer>
<script src="{e(self.url("/static/uPlot.iife.min.js"))}"></script>
<script src="{e(self.url("/static/app.js"))}"></script>
</body></html>"""
        return html_response(text, status)


def _safe_url(dashboard: Dashboard) -> str:
    from hfcelery.extension import extension_of

    return extension_of(dashboard.app).store.url.render_as_string(hide_password=True)


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
            return job(page, "/".join(parts[1:]))
        if parts == ["recurring"]:
            return recurring(page)
        if parts == ["servers"]:
            return servers(page)
        if parts == ["queues"]:
            return queues(page)
    except JobNotFoundError as exc:
        return page.layout("Not found", "", f"<h1>Not found</h1><p>{e(exc)}</p>", 404)
    except InvalidArgumentError as exc:
        return page.layout("Bad request", "", f"<h1>Bad request</h1><p>{e(exc)}</p>", 400)
    return page.layout("Not found", "", "<h1>Not found</h1>", 404)


def _back(page: Page, default: str) -> str:
    back = page.r.field("back") or ""
    # Only a path inside the pages, never another site.
    if not back.startswith(page.root + "/") or back.startswith("//"):
        back = page.url(default)
    return back


def _with_outcome(url: str, message: str) -> str:
    base, _, query = url.partition("?")
    kept = [p for p in query.split("&") if p and not p.startswith("outcome=")]
    kept.append("outcome=" + quote(message))
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
    return redirect(_with_outcome(_back(page, "/"), message))


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


# -- lists -------------------------------------------------------------------------------------

_STATE_COLUMNS: dict[State | None, tuple[str, ...]] = {
    State.ENQUEUED: ("Queue", "Enqueued"),
    State.SCHEDULED: ("Due", "Scheduled"),
    State.AWAITING: ("Parents", "Created"),
    State.PROCESSING: ("Server", "Worker", "Running for"),
    State.SUCCEEDED: ("Duration", "Result", "Succeeded"),
    State.FAILED: ("Exception", "Failed"),
    State.DELETED: ("Deleted",),
    None: ("State", "Queue", "Changed"),
}


def _cells(page: Page, state: State | None, row: JobRow) -> list[str]:
    j, data = row.job, row.data
    if state == State.ENQUEUED:
        return [e(j.queue), stamp(j.state_changed_at)]
    if state == State.SCHEDULED:
        return [stamp(j.due_at), stamp(j.state_changed_at)]
    if state == State.AWAITING:
        links = " ".join(
            f'<a href="{e(page.url("/job/" + quote(p)))}">{e(p[:8])}</a>' for p in row.parent_ids
        )
        return [links, stamp(j.created_at)]
    if state == State.PROCESSING:
        return [
            e(j.server_id or ""),
            e(data.get("worker_id", "")),
            e(ago(j.state_changed_at).removesuffix(" ago")),
        ]
    if state == State.SUCCEEDED:
        result = data.get("result")
        shown = "" if result is None else json.dumps(result, default=str)[:200]
        return [
            e(duration(_seconds(data))),
            f"<code>{e(shown)}</code>",
            stamp(j.state_changed_at),
        ]
    if state == State.FAILED:
        kind = data.get("exception_type", "")
        message = str(data.get("exception_message", row.reason or ""))[:300]
        return [f"<b>{e(kind)}</b> {e(message)}", stamp(j.state_changed_at)]
    if state == State.DELETED:
        return [stamp(j.state_changed_at)]
    return [
        f'<span class="state state-{e(j.state.value.lower())}">{e(j.state.value)}</span>',
        e(j.queue),
        stamp(j.state_changed_at),
    ]


def _sidebar(page: Page, current: str) -> str:
    # The counts come from the (shared, briefly cached) stats: counting a large store on every
    # list page would cost more than the list itself.
    counts, _ = page.d.counts()
    items = []
    for state in State:
        slug = state.value.lower()
        cls = "active" if slug == current else ""
        items.append(
            f'<a class="{cls}" href="{e(page.url("/jobs/" + slug))}">{e(state.value)}'
            f'<span class="count" data-state="{e(state.value)}">{counts[state]}</span></a>'
        )
    cls = "active" if current == "all" else ""
    items.append(f'<a class="{cls}" href="{e(page.url("/jobs"))}">Search all</a>')
    return f'<aside class="side">{"".join(items)}</aside>'


def jobs(page: Page, state_slug: str | None, *, retries: bool = False) -> Response:
    r = page.r
    state = parse_state_name(state_slug) if state_slug else None
    where = parse_filter(r.query, state.value if state else None)
    if retries:
        where = JobFilter(**{**_fields(where), "retries": True, "state": None})
    size = page_size(r)
    result: JobRowPage = page.d.monitoring.search(where, limit=size, after=r.arg("after"))
    columns = _STATE_COLUMNS[State.SCHEDULED if retries else state]
    shown_state = State.SCHEDULED if retries else state
    base = "/retries" if retries else "/jobs" + (f"/{state_slug}" if state_slug else "")
    here = page.url(base) + ("?" + r.query_string if r.query_string else "")
    rows = []
    for row in result.items:
        j = row.job
        name = j.display_name or j.function
        check = (
            ""
            if page.d.options.read_only
            else f'<td><input type="checkbox" name="id" value="{e(j.id)}" form="bulk"></td>'
        )
        cells = "".join(f"<td>{c}</td>" for c in _cells(page, shown_state, row))
        rows.append(
            f'<tr>{check}<td><a href="{e(page.url("/job/" + quote(j.id)))}">'
            f"<code>{e(j.id[:8])}</code></a></td><td>{e(name)}"
            f"{f' <small>retry {j.retry_count}</small>' if j.retry_count else ''}</td>{cells}</tr>"
        )
    head_check = "" if page.d.options.read_only else "<th></th>"
    head = "".join(f"<th>{e(c)}</th>" for c in ("Id", "Job", *columns))
    table = (
        f'<div class="table"><table><thead><tr>{head_check}{head}</tr></thead><tbody>'
        + ("".join(rows) or '<tr><td colspan="9" class="empty">No jobs.</td></tr>')
        + "</tbody></table></div>"
    )
    nxt = (
        f'<a class="btn" href="{e(page.url(base, **{**_query(r), "after": result.next_cursor}))}">Next page →</a>'
        if result.next_cursor
        else ""
    )
    first = (
        f'<a class="btn" href="{e(page.url(base, **{**_query(r), "after": None}))}">First page</a>'
        if r.arg("after")
        else ""
    )
    sizes = " ".join(
        f'<a class="{"active" if s == size else ""}" href="{e(page.url(base, **{**_query(r), "limit": s, "after": None}))}">{s}</a>'
        for s in PAGE_SIZES
    )
    title = "Retries" if retries else (state.value if state else "All jobs")
    body = f"""<div class="with-side">{_sidebar(page, "retries" if retries else (state_slug or "all"))}
<section><h1>{e(title)}</h1>{_filter_form(page, base, where)}{_bulk_bar(page, where, here)}
{table}<div class="pager">{first}{nxt}<span class="sizes">Page size: {sizes}</span></div></section></div>"""
    return page.layout(title, "/retries" if retries else "/jobs/enqueued", body)


def _fields(where: JobFilter) -> dict[str, Any]:
    return {f: getattr(where, f) for f in where.__slots__}


def _query(r: Request) -> dict[str, str]:
    return {k: v[-1] for k, v in r.query.items() if k != "outcome"}


def _filter_form(page: Page, base: str, where: JobFilter) -> str:
    def box(name: str, label: str, value: object, kind: str = "text") -> str:
        shown = (
            "" if value is None else (value.isoformat() if isinstance(value, datetime) else value)
        )
        return f'<label>{e(label)}<input type="{kind}" name="{name}" value="{e(shown)}"></label>'

    return (
        f'<form method="get" action="{e(page.url(base))}" class="filter">'
        + box("function", "Function", where.function)
        + box("queue", "Queue", where.queue)
        + box("text", "Argument text", where.text)
        + box("since", "Changed since", where.since)
        + box("until", "Changed before", where.until)
        + '<button class="btn" type="submit">Filter</button></form>'
    )


def _bulk_bar(page: Page, where: JobFilter, here: str) -> str:
    if page.d.options.read_only:
        return ""
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{e(v.value if isinstance(v, State) else v.isoformat() if isinstance(v, datetime) else v)}">'
        for k, v in _fields(where).items()
        if v not in (None, False, "")
    )
    count_url = page.url(
        "/api/v1/jobs/count",
        **{
            k: (v.value if isinstance(v, State) else v)
            for k, v in _fields(where).items()
            if v not in (None, False, "")
        },
    )
    buttons = "".join(
        f'<button class="btn" name="action" value="{a}">{label}</button>'
        for a, label in (
            ("requeue", "Requeue"),
            ("delete", "Delete"),
            ("enqueue-now", "Enqueue now"),
        )
    )
    return f"""<form id="bulk" method="post" action="{e(page.url("/actions/jobs"))}" class="bulk"
 data-count="{e(count_url)}" data-bulk-api="{e(page.url("/api/v1/jobs/bulk"))}">
<input type="hidden" name="{XSRF_FIELD}" value="{e(page.token)}"><input type="hidden" name="back" value="{e(here)}">{hidden}
<span>Selected:</span>{buttons}
<label class="scope"><input type="checkbox" name="scope" value="filter"> every job matching the filter</label>
<span class="progress-text" aria-live="polite"></span></form>"""


# -- one job -----------------------------------------------------------------------------------


def job(page: Page, job_id: str) -> Response:
    d = page.d.monitoring.job(job_id)
    progress = page.d.monitoring.progress(job_id)
    call_args = ", ".join(
        [pprint.pformat(a, width=80) for a in d.args]
        + [f"{k}={pprint.pformat(v, width=80)}" for k, v in d.kwargs.items()]
    )
    buttons = ""
    here = page.url("/job/" + quote(job_id))
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
        links.append(f'Parent <a href="{e(page.url("/job/" + quote(p)))}"><code>{e(p)}</code></a>')
    for c in d.continuation_ids:
        links.append(
            f'Continuation <a href="{e(page.url("/job/" + quote(c)))}"><code>{e(c)}</code></a>'
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
            f"<dt>{e(k)}</dt><dd><code>{e(json.dumps(v, default=str) if not isinstance(v, str) else v)}</code></dd>"
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
            f'<progress max="1" value="{fraction}"></progress> {fraction * 100:.0f}%'
            if fraction is not None
            else ""
        )
        lines = "\n".join(progress.log)
        prog = f'<h2>Progress</h2><div id="progress">{bar}<pre class="log">{e(lines)}</pre></div>'
    live = d.state in (State.PROCESSING, State.ENQUEUED, State.SCHEDULED, State.AWAITING)
    body = f"""<h1>{e(d.display_name or d.function)} <span class="state state-{e(d.state.value.lower())}" id="job-state">{e(d.state.value)}</span></h1>
<div class="job" data-job-api="{e(page.url("/api/v1/jobs/" + quote(job_id)))}" data-live="{"1" if live else "0"}" data-state="{e(d.state.value)}">
<p><code>{e(d.id)}</code> · queue <b>{e(d.queue)}</b> · created {stamp(d.created_at)}{f" · retries {d.retry_count}" if d.retry_count else ""}</p>
<div class="actions">{buttons}</div>
<h2>Call</h2><pre class="call">{e(d.function)}({e(call_args)})</pre>
{"<p>" + " · ".join(links) + "</p>" if links else ""}{prog}
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
            f'<a href="{e(page.url("/job/" + quote(r.last_job_id)))}">{e(r.last_job_state.value if r.last_job_state else "?")}</a>'
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
