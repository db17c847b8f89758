"""The state-report pages over HTTP: every page and action, allowed and refused, escaping,
the JSON API, and the ASGI and WSGI adapters. Jobs run on a real worker."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from hfcelery import BackgroundJob, JobContinuationOptions, RecurringJob, State, call
from hfcelery.dashboard import Dashboard, DashboardOptions, Request, asgi_app, wsgi_app
from hfcelery.dashboard.core import XSRF_COOKIE
from hfcelery.monitoring import Monitoring
from tests import jobs
from tests.conftest import WorkerProcess, token, wait_for, wait_state

pytestmark = pytest.mark.acceptance

XSS = "<script>alert(1)</script>"
LOCAL = "127.0.0.1"


def get(dashboard: Dashboard, path: str, *, client: str = LOCAL, **headers: str) -> Any:
    path, _, query = path.partition("?")
    return dashboard.handle(Request("GET", path, query, headers, b"", client))


def post(
    dashboard: Dashboard,
    path: str,
    fields: dict[str, Any],
    *,
    xsrf: str | None = "tok",
    client: str = LOCAL,
) -> Any:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if xsrf is not None:
        headers["cookie"] = f"{XSRF_COOKIE}={xsrf}"
        fields = {"_xsrf": xsrf, **fields}
    body = urlencode(fields, doseq=True).encode()
    return dashboard.handle(Request("POST", path, "", headers, body, client))


@pytest.fixture(scope="module")
def seeded(worker: WorkerProcess, api: Monitoring, test_app: Any) -> Iterator[dict[str, str]]:
    """Jobs in every state, each carrying ``<script>`` in its arguments or outcome."""
    failed = BackgroundJob.enqueue(call(jobs.fail, XSS))
    succeeded = BackgroundJob.enqueue(call(jobs.report_progress, XSS))
    scheduled = BackgroundJob.schedule(call(jobs.record, XSS), timedelta(days=1))
    awaiting = BackgroundJob.continue_job_with(
        scheduled, call(jobs.record, token()), options=JobContinuationOptions.ON_ANY_FINISHED_STATE
    )
    enqueued = BackgroundJob.enqueue(call(jobs.record, XSS), queue="nobody-listens")
    deleted = BackgroundJob.enqueue(call(jobs.record, token()), queue="nobody-listens")
    BackgroundJob.delete(deleted)
    recurring_id = f"rec-{XSS}"
    RecurringJob.add_or_update(recurring_id, call(jobs.record, token()), "0 0 31 2 *")
    wait_state(api, failed)
    wait_state(api, succeeded)
    yield {
        "failed": failed, "succeeded": succeeded, "scheduled": scheduled, "awaiting": awaiting,
        "enqueued": enqueued, "deleted": deleted, "recurring": recurring_id,
    }  # fmt: skip
    RecurringJob.remove_if_exists(recurring_id)


@pytest.fixture
def dashboard(test_app: Any) -> Dashboard:
    return Dashboard(test_app)


PAGES = [
    "/", "/jobs", "/jobs/enqueued", "/jobs/scheduled", "/jobs/awaiting", "/jobs/processing",
    "/jobs/succeeded", "/jobs/failed", "/jobs/deleted", "/retries", "/recurring", "/servers",
    "/queues", "/jobs/enqueued?queue=nobody-listens", "/jobs?text=script&limit=10",
]  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_escaped_with_security_headers(
    dashboard: Dashboard, seeded: dict[str, str], path: str
) -> None:
    response = get(dashboard, path)
    assert response.status == 200, response.body
    body = response.body.decode()
    assert "<script>alert" not in body
    assert response.header("Content-Security-Policy")
    assert response.header("X-Frame-Options") == "DENY"
    assert response.header("Cache-Control") == "no-store"


def test_job_pages_show_call_history_traceback_progress_and_log(
    dashboard: Dashboard, seeded: dict[str, str]
) -> None:
    failed = get(dashboard, f"/job/{seeded['failed']}").body.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in failed
    assert "RuntimeError" in failed and "Traceback" in failed
    assert "<script>alert" not in failed
    done = get(dashboard, f"/job/{seeded['succeeded']}").body.decode()
    assert '<progress max="1" value="1.0">' in done
    assert "&lt;script&gt;" in done and "<script>alert" not in done
    awaiting = get(dashboard, f"/job/{seeded['awaiting']}").body.decode()
    assert seeded["scheduled"] in awaiting  # link to its parent
    assert get(dashboard, "/job/no-such-job").status == 404


def test_lists_show_what_each_state_needs(dashboard: Dashboard, seeded: dict[str, str]) -> None:
    failed = get(dashboard, "/jobs/failed").body.decode()
    assert "RuntimeError" in failed and seeded["failed"] in failed
    awaiting = get(dashboard, "/jobs/awaiting").body.decode()
    assert seeded["scheduled"][:8] in awaiting
    queue = get(dashboard, "/queues").body.decode()
    assert "nobody-listens" in queue
    recurring = get(dashboard, "/recurring").body.decode()
    assert "&lt;script&gt;" in recurring and "At 12:00 AM" in recurring


def test_store_password_is_never_shown(test_app: Any) -> None:
    from hfcelery.extension import extension_of

    url = extension_of(test_app).store.url
    body = get(Dashboard(test_app), "/").body.decode()
    if url.password:
        assert str(url.password) not in body
    assert "store " in body


def test_requeue_a_failed_job_by_post_reaches_succeeded(
    dashboard: Dashboard, api: Monitoring, worker: WorkerProcess
) -> None:
    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.report_progress, "flaky", tok))
    assert wait_state(api, job_id).state == State.FAILED
    response = post(dashboard, "/actions/job", {"id": job_id, "action": "requeue"})
    assert response.status == 303
    assert "outcome=" in (response.header("Location") or "")
    assert wait_state(api, job_id).state == State.SUCCEEDED


def test_actions_are_refused_without_xsrf_from_remote_and_read_only(
    test_app: Any, seeded: dict[str, str], api: Monitoring
) -> None:
    target = {"id": seeded["enqueued"], "action": "delete"}
    open_pages = Dashboard(test_app)
    assert post(open_pages, "/actions/job", target, xsrf=None).status == 403
    mismatched = post(open_pages, "/actions/job", {**target, "_xsrf": "other"}, xsrf="tok")
    assert mismatched.status == 403
    assert post(open_pages, "/actions/job", target, client="10.1.2.3").status == 403
    assert get(open_pages, "/", client="10.1.2.3").status == 403
    read_only = Dashboard(test_app, DashboardOptions(read_only=True))
    assert post(read_only, "/actions/job", target).status == 403
    for path in (f"/job/{seeded['failed']}", "/jobs/failed", "/recurring", "/retries"):
        page = get(read_only, path)
        assert page.status == 200
        assert 'method="post"' not in page.body.decode()
        assert 'name="action"' not in page.body.decode()
        assert 'type="checkbox"' not in page.body.decode()
    assert api.job(seeded["enqueued"]).state == State.ENQUEUED


def test_authorization_callable_and_basic_auth(test_app: Any) -> None:
    deny = Dashboard(test_app, DashboardOptions(authorization=lambda r: False))
    assert get(deny, "/").status == 403
    allow_remote = Dashboard(
        test_app, DashboardOptions(authorization=lambda r: r.headers.get("x-user") == "ops")
    )
    assert get(allow_remote, "/", client="10.1.2.3", **{"x-user": "ops"}).status == 200
    assert get(allow_remote, "/", client="10.1.2.3").status == 403
    basic = Dashboard(test_app, DashboardOptions(basic_auth=("ops:secret",)))
    refused = get(basic, "/api/v1/stats", client="10.1.2.3")
    assert refused.status == 401 and refused.header("WWW-Authenticate")
    good = base64.b64encode(b"ops:secret").decode()
    assert (
        get(basic, "/api/v1/stats", client="10.1.2.3", authorization=f"Basic {good}").status == 200
    )
    bad = base64.b64encode(b"ops:nope").decode()
    assert get(basic, "/", client="10.1.2.3", authorization=f"Basic {bad}").status == 401


def test_json_api_lists_counts_and_acts_on_a_filter(
    dashboard: Dashboard, api: Monitoring, seeded: dict[str, str]
) -> None:
    stats = json.loads(get(dashboard, "/api/v1/stats").body)
    assert stats["states"]["Failed"] >= 1
    marker = token()
    ids = [
        BackgroundJob.enqueue(call(jobs.record, marker), queue="nobody-listens") for _ in range(5)
    ]
    found = json.loads(get(dashboard, f"/api/v1/jobs?text={marker}&limit=2").body)
    assert len(found["items"]) == 2 and found["next_cursor"]
    count = json.loads(get(dashboard, f"/api/v1/jobs/count?text={marker}").body)
    assert count == {"count": 5}
    outcome = json.loads(
        post(dashboard, "/api/v1/jobs/bulk", {"action": "delete", "text": marker}).body
    )
    assert outcome["applied"] == 5 and outcome["next_cursor"] is None
    assert {api.job(i).state for i in ids} == {State.DELETED}
    assert get(dashboard, "/api/v1/jobs?state=nonsense").status == 400
    queues = {q["queue"]: q for q in json.loads(get(dashboard, "/api/v1/queues").body)}
    assert queues["nobody-listens"]["enqueued"] >= 1
    assert queues["nobody-listens"]["broker"] >= 1  # the messages wait in Redis
    later = BackgroundJob.schedule(
        call(jobs.record, token()), timedelta(hours=1), queue="nobody-listens"
    )
    now = json.loads(post(dashboard, f"/api/v1/jobs/{later}/enqueue-now", {}).body)
    assert now["applied"] is True and api.job(later).state == State.ENQUEUED
    again = json.loads(post(dashboard, f"/api/v1/jobs/{later}/enqueue-now", {}).body)
    assert again["applied"] is False
    servers = json.loads(get(dashboard, "/api/v1/servers").body)
    assert servers and all(s["looks_dead"] is False for s in servers)
    detail = json.loads(get(dashboard, f"/api/v1/jobs/{seeded['succeeded']}").body)
    assert detail["progress"]["log"] == [XSS]


def test_bulk_action_on_selected_jobs_by_form(dashboard: Dashboard, api: Monitoring) -> None:
    ids = [
        BackgroundJob.enqueue(call(jobs.record, token()), queue="nobody-listens") for _ in range(3)
    ]
    response = post(
        dashboard, "/actions/jobs", {"action": "delete", "id": ids[:2], "back": "/jobs"}
    )
    assert response.status == 303
    assert [api.job(i).state for i in ids] == [State.DELETED, State.DELETED, State.ENQUEUED]


@pytest.mark.parametrize(
    "back",
    ["/\\evil.example/", "//evil.example/", "/\t/evil.example/", "https://evil.example/", "/\\\\x"],
)
def test_an_action_never_sends_the_browser_to_another_site(dashboard: Dashboard, back: str) -> None:
    job = BackgroundJob.enqueue(call(jobs.record, token()), queue="nobody-listens")
    response = post(dashboard, "/actions/jobs", {"action": "delete", "id": [job], "back": back})
    assert response.status == 303
    location = response.header("location") or ""
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    assert "evil" not in location and "\t" not in location, location


def test_recurring_actions(dashboard: Dashboard, api: Monitoring, seeded: dict[str, str]) -> None:
    rid = seeded["recurring"]
    for action in ("pause", "resume", "trigger"):
        response = post(dashboard, "/actions/recurring", {"id": rid, "action": action})
        assert response.status == 303, action
    assert api.recurring_job(rid).last_job_id is not None
    api_outcome = json.loads(post(dashboard, f"/api/v1/recurring/{rid}/pause", {}).body)
    assert api_outcome["applied"] == 1 and api.recurring_job(rid).paused


def test_asgi_app_serves_pages_and_refuses_remote(test_app: Any, seeded: dict[str, str]) -> None:
    async def run() -> None:
        local = httpx.ASGITransport(app=asgi_app(test_app), client=(LOCAL, 1234))
        async with httpx.AsyncClient(transport=local, base_url="http://t") as client:
            page = await client.get("/jobs/failed")
            assert page.status_code == 200 and "RuntimeError" in page.text
            assert (await client.post("/actions/job", data={"id": "x"})).status_code == 403
        mounted = httpx.ASGITransport(
            app=asgi_app(test_app), client=(LOCAL, 1234), root_path="/admin/jobs"
        )
        async with httpx.AsyncClient(transport=mounted, base_url="http://t") as client:
            page = await client.get("/admin/jobs/queues")
            assert page.status_code == 200
            assert 'href="/admin/jobs/jobs/enqueued?queue=' in page.text
            assert "Path=/admin/jobs/" in page.headers["set-cookie"]
        remote = httpx.ASGITransport(app=asgi_app(test_app), client=("10.0.0.9", 1234))
        async with httpx.AsyncClient(transport=remote, base_url="http://t") as client:
            assert (await client.get("/")).status_code == 403
        allowed = httpx.ASGITransport(
            app=asgi_app(test_app, authorization=lambda r: True), client=("10.0.0.9", 1)
        )
        async with httpx.AsyncClient(transport=allowed, base_url="http://t") as client:
            assert (await client.get("/api/v1/stats")).status_code == 200

    asyncio.run(run())


def test_wsgi_app_serves_pages(test_app: Any, seeded: dict[str, str]) -> None:
    statuses: list[str] = []
    app = wsgi_app(test_app)
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/servers", "QUERY_STRING": "",
        "REMOTE_ADDR": LOCAL, "SCRIPT_NAME": "/admin/jobs", "wsgi.input": io.BytesIO(),
    }  # fmt: skip
    body = b"".join(app(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["200 OK"]
    assert b'href="/admin/jobs/queues"' in body


def test_workers_roll_history_up_into_hourly_counters(
    api: Monitoring, seeded: dict[str, str], worker: WorkerProcess, test_app: Any
) -> None:
    """The maintenance loop of the real worker fills the counters the history graphs read."""

    def counted() -> bool:
        hours = api.hourly_statistics(2)
        return sum(c.get("succeeded", 0) for _, c in hours) >= 1 and any(
            c.get("failed", 0) for _, c in hours
        )

    wait_for(counted, timeout=90, interval=1, what="the worker to roll up statistics")
    history = json.loads(get(Dashboard(test_app), "/api/v1/history?hours=24").body)
    assert len(history["points"]) == 24
    assert sum(p["succeeded"] for p in history["points"]) >= 1
