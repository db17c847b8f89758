"""The pages' frame: layout, links, forms, and the helpers that escape and format values.

Every value from a job, a recurring job or a server goes through ``e()``.
"""

# HTML is built in f-strings here; breaking its lines would make it harder to read.

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from hfcelery.dashboard.core import XSRF_FIELD, Request, Response, html_response

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
        count = round(seconds / size)  # 2 d 23 h is "3 d", 59.6 s "1 min"
        if count >= 1 or unit == "s":
            text = f"{count} {unit}"
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


def duration_seconds(data: dict[str, Any]) -> float | None:
    """A Succeeded state's duration: recorded in milliseconds (``duration`` in seconds)."""
    for key, scale in (("duration_ms", 1000.0), ("duration", 1.0)):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value / scale
    return None


class Page:
    """Builds one page: the layout around a body, links relative to the mount point."""

    def seal(self, message: str) -> str:
        """What an action's redirect carries beside its outcome message: made with this
        browser's XSRF token, which another site cannot read, so a link from elsewhere cannot
        show a message of its choosing on the pages."""
        digest = hmac.new(self.token.encode(), message.encode("utf-8", "replace"), "sha256")
        return digest.hexdigest()[:32]

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
        seal = (self.r.arg("seal") or "").encode()
        if notice and not hmac.compare_digest(seal, self.seal(notice).encode()):
            notice = None  # not an action's own outcome: a crafted link shows no text of its own
        flash = f'<div class="flash" role="status">{e(notice)}</div>' if notice else ""
        ro = '<span class="badge">read-only</span>' if self.d.options.read_only else ""
        text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · {e(self.d.options.title)}</title>
<link rel="icon" href="data:,">
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
