"""The job lists: per state, retries, search; bulk actions on the selection or the filter."""

# HTML is built in f-strings here; breaking its lines would make it harder to read.
# ruff: noqa: E501

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

from hfcelery.dashboard.api import (
    PAGE_SIZES,
    page_size,
    parse_filter,
    parse_state_name,
    server_rows,
)
from hfcelery.dashboard.core import XSRF_FIELD, Request, Response
from hfcelery.dashboard.layout import Page, ago, duration, duration_seconds, e, stamp
from hfcelery.records import JobFilter, JobRow, JobRowPage
from hfcelery.states import State

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


def _cells(
    page: Page, state: State | None, row: JobRow, live_servers: frozenset[str] = frozenset()
) -> list[str]:
    j, data = row.job, row.data
    if state == State.ENQUEUED:
        return [e(j.queue), stamp(j.state_changed_at)]
    if state == State.SCHEDULED:
        return [stamp(j.due_at), stamp(j.state_changed_at)]
    if state == State.AWAITING:
        links = " ".join(
            f'<a href="{e(page.url("/job/" + quote(p, safe="")))}">{e(p[:8])}</a>'
            for p in row.parent_ids
        )
        return [links, stamp(j.created_at)]
    if state == State.PROCESSING:
        gone = ""
        if j.server_id not in live_servers:  # as Hangfire's Processing page warns
            gone = (
                ' <span class="badge" title="Its server is not among the live servers: '
                "the job is requeued once that server has been silent for the server timeout; "
                'it can be requeued or deleted now.">server gone</span>'
            )
        return [
            e(j.server_id or "") + gone,
            e(data.get("worker_id", "")),
            e(ago(j.state_changed_at).removesuffix(" ago")),
        ]
    if state == State.SUCCEEDED:
        result = data.get("result")
        shown = "" if result is None else json.dumps(result, default=str, ensure_ascii=False)[:200]
        return [
            e(duration(duration_seconds(data))),
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
    live: frozenset[str] = frozenset()
    if shown_state is State.PROCESSING:
        live = frozenset(s["id"] for s in server_rows(page.d) if not s["looks_dead"])
    rows = []
    for row in result.items:
        j = row.job
        name = j.display_name or j.function
        check = (
            ""
            if page.d.options.read_only
            else f'<td><input type="checkbox" name="id" value="{e(j.id)}" form="bulk"></td>'
        )
        cells = "".join(f"<td>{c}</td>" for c in _cells(page, shown_state, row, live))
        rows.append(
            f'<tr>{check}<td><a href="{e(page.url("/job/" + quote(j.id, safe="")))}">'
            f"<code>{e(j.id[:8])}</code></a></td><td>{e(name)}"
            f"{f' <small>retry {j.retry_count}</small>' if j.retry_count else ''}</td>{cells}</tr>"
        )
    head_check = (
        ""
        if page.d.options.read_only
        else '<th><input type="checkbox" class="select-all" title="Select every job of this page"'
        ' aria-label="Select every job of this page"></th>'
    )
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
    return {k: v[-1] for k, v in r.query.items() if k not in ("outcome", "seal")}


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
