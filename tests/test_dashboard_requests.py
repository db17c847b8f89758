"""What the pages and the JSON API make of awkward requests: other sites' cookies beside the
XSRF cookie, ids with a percent sign, filter values a PostgreSQL store cannot hold, deeply nested
bodies, and a store that cannot be reached. No worker: jobs are sent the plain Celery way (an
in-memory broker) and stay Enqueued."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
from celery import Celery

import hfcelery
from hfcelery import call
from hfcelery.dashboard import Dashboard, Request, asgi_app, wsgi_app
from hfcelery.dashboard.core import XSRF_COOKIE
from hfcelery.dashboard.tornado import make_app, mount_in_flower
from hfcelery.extension import extension_of
from hfcelery.monitoring import monitoring
from hfcelery.recurring import RecurringJobManager
from hfcelery.states import State
from tests import jobs
from tests.conftest import token

LOCAL = "127.0.0.1"
UNREACHABLE_STORE = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"


@pytest.fixture(scope="module")
def pg_app(postgres_url: str, redis_url: str) -> Iterator[Celery]:
    """An app on a PostgreSQL store of its own; messages go to an in-memory broker."""
    app = Celery("hftests-requests", broker="memory://", set_as_current=False)
    app.conf.redbeat_redis_url = redis_url
    app.conf.redbeat_key_prefix = f"hftests-requests-{token()}:"
    hfcelery.init_app(app, store_url=postgres_url, allowed_modules=["tests.jobs"])

    @app.task(name="tests.requests.add", shared=False)  # not in the other tests' apps
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    extension_of(app).store.dispose()


def send(app: Celery, task_id: str) -> str:
    """A job sent as a plain Celery task with the given task id."""
    app.tasks["tests.requests.add"].apply_async((1, 2), task_id=task_id)
    assert monitoring(app).job(task_id).state == State.ENQUEUED
    return task_id


def get(dashboard: Dashboard, path: str, query: str = "") -> Any:
    """``path`` as an adapter hands it over: decoded."""
    return dashboard.handle(Request("GET", path, query, {}, b"", LOCAL))


def post(
    dashboard: Dashboard, path: str, body: bytes = b"", content_type: str = "", **headers: str
) -> Any:
    all_headers = {"cookie": f"{XSRF_COOKIE}=tok", "x-hf-xsrf": "tok", **headers}
    if content_type:
        all_headers["content-type"] = content_type
    return dashboard.handle(Request("POST", path, "", all_headers, body, LOCAL))


# -- cookies -----------------------------------------------------------------------------------

OTHER_COOKIES = ['prefs={"a":1}', "flag", 'x="unterminated', "msg=hello world"]


@pytest.mark.parametrize("other", OTHER_COOKIES)
def test_the_xsrf_cookie_is_read_beside_cookies_a_strict_parser_refuses(other: str) -> None:
    request = Request("GET", "/", headers={"cookie": f"{other}; {XSRF_COOKIE}=tok; after=1"})
    assert request.cookies[XSRF_COOKIE] == "tok"
    assert request.cookies["after"] == "1"


@pytest.mark.parametrize("other", OTHER_COOKIES)
def test_an_unrelated_unparsable_cookie_does_not_disable_actions(
    pg_app: Celery, other: str
) -> None:
    dashboard = Dashboard(pg_app)
    job_id = send(pg_app, f"cookie-{token()}")
    cookie = f"{other}; {XSRF_COOKIE}=tok"
    wrong = post(dashboard, f"/api/v1/jobs/{job_id}/requeue", cookie=cookie, **{"x-hf-xsrf": "x"})
    assert wrong.status == 403  # still checked
    response = post(dashboard, f"/api/v1/jobs/{job_id}/delete", cookie=cookie)
    assert response.status == 200, response.body
    assert json.loads(response.body)["applied"] is True
    assert monitoring(pg_app).job(job_id).state == State.DELETED
    # The token was read, so no new one is handed out (which would break the open pages' forms).
    page = dashboard.handle(Request("GET", "/", "", {"cookie": cookie}, b"", LOCAL))
    assert page.status == 200 and page.header("Set-Cookie") is None


# -- ids are decoded once --------------------------------------------------------------------


async def _serve_tornado(app: Celery, mount: str, work: Any) -> None:
    """Serve the pages standalone (``mount`` "") or inside Flower (at ``/hf``) meanwhile."""
    flower = None
    if mount:
        from flower.app import Flower

        flower = Flower(capp=app, io_loop=tornado.ioloop.IOLoop.current())
        mount_in_flower(flower, app)
    sockets = tornado.netutil.bind_sockets(0, LOCAL)
    port = sockets[0].getsockname()[1]
    server = tornado.httpserver.HTTPServer(flower or make_app(Dashboard(app)))
    server.add_sockets(sockets)
    try:
        async with httpx.AsyncClient(base_url=f"http://{LOCAL}:{port}{mount}") as client:
            await work(client)
    finally:
        server.stop()
        await server.close_all_connections()
        if flower is not None:
            flower.executor.shutdown()


@pytest.mark.parametrize("mount", ["", "/hf"], ids=["standalone", "flower"])
def test_ids_with_a_percent_sign_through_tornado(pg_app: Celery, mount: str) -> None:
    """``job%41x`` is ``/job%2541x`` in a URL; decoding it twice would reach ``jobAx``."""
    suffix = token()[:12]
    job_id = send(pg_app, f"job%41x-{suffix}")
    decoy = send(pg_app, f"jobAx-{suffix}")  # what a second decoding would address
    recurring_id = f"sale-50%41-{suffix}"
    manager = RecurringJobManager(pg_app)
    manager.add_or_update(recurring_id, call(jobs.record, suffix), "0 0 31 2 *")
    manager.add_or_update(f"sale-50A-{suffix}", call(jobs.record, suffix), "0 0 31 2 *")
    encoded = quote(job_id, safe="")
    assert encoded == f"job%2541x-{suffix}"

    async def work(client: httpx.AsyncClient) -> None:
        page = await client.get(f"/job/{encoded}")
        assert page.status_code == 200, page.text
        assert f"<code>{job_id}</code>" in page.text
        # The page's live updates read the API at the id encoded once.
        assert f'data-job-api="{mount}/api/v1/jobs/{encoded}"' in page.text
        detail = await client.get(f"/api/v1/jobs/{encoded}")
        assert detail.status_code == 200, detail.text
        assert detail.json()["id"] == job_id
        xsrf = {"X-HF-XSRF": client.cookies[XSRF_COOKIE]}
        deleted = await client.post(f"/api/v1/jobs/{encoded}/delete", headers=xsrf)
        assert deleted.json() == {"action": "delete", "id": job_id, "applied": True}
        paused = await client.post(
            f"/api/v1/recurring/{quote(recurring_id, safe='')}/pause", headers=xsrf
        )
        assert paused.status_code == 200, paused.text
        assert paused.json()["message"] == f"Paused {recurring_id}"

    try:
        asyncio.run(_serve_tornado(pg_app, mount, work))
        api = monitoring(pg_app)
        assert api.job(job_id).state == State.DELETED
        assert api.job(decoy).state == State.ENQUEUED
        assert api.recurring_job(recurring_id).paused
        assert not api.recurring_job(f"sale-50A-{suffix}").paused
    finally:
        manager.remove_if_exists(recurring_id)
        manager.remove_if_exists(f"sale-50A-{suffix}")


@pytest.mark.parametrize("mount", ["", "/hf"], ids=["standalone", "flower"])
def test_ids_with_slashes_and_dot_segments_through_tornado(pg_app: Celery, mount: str) -> None:
    """A Celery task id may hold ``/``: links encode it (``%2F``), so that a browser does not
    resolve ``..`` in it, and the page takes the rest of the path as it is (a trailing slash
    too)."""
    suffix = token()[:12]
    # Decoys first: what dropping the trailing slash, or resolving "..", would reach.
    decoys = [send(pg_app, f"trail-{suffix}"), send(pg_app, f"x-{suffix}")]
    ids = [send(pg_app, f"trail-{suffix}/"), send(pg_app, f"dot/../x-{suffix}"), *decoys]

    async def work(client: httpx.AsyncClient) -> None:
        for job_id in ids:
            encoded = quote(job_id, safe="")
            page = await client.get(f"/job/{encoded}")
            assert page.status_code == 200, (job_id, page.text[-300:])
            assert f"<code>{job_id}</code>" in page.text
            assert f'data-job-api="{mount}/api/v1/jobs/{encoded}"' in page.text
            detail = await client.get(f"/api/v1/jobs/{encoded}")
            assert detail.status_code == 200 and detail.json()["id"] == job_id, detail.text

    asyncio.run(_serve_tornado(pg_app, mount, work))


def test_wsgi_paths_are_decoded_as_utf_8(pg_app: Celery) -> None:
    """PEP 3333 hands PATH_INFO over as bytes decoded as Latin-1 (as wsgiref does)."""
    job_id = send(pg_app, f"größe-{token()[:12]}")
    statuses: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET", "QUERY_STRING": "", "REMOTE_ADDR": LOCAL, "SCRIPT_NAME": "",
        "PATH_INFO": f"/api/v1/jobs/{job_id}".encode().decode("latin-1"),
        "wsgi.input": io.BytesIO(),
    }  # fmt: skip
    body = b"".join(wsgi_app(pg_app)(environ, lambda status, _: statuses.append(status)))
    assert statuses == ["200 OK"], body
    assert json.loads(body)["id"] == job_id


def _delete_form(job_ids: list[str], size: int) -> bytes:
    """A form deleting ``job_ids`` padded past ``size`` bytes with ids of no job, the real
    ones first: a body cut short would still name them."""
    form = "action=delete&" + "&".join(f"id={job_id}" for job_id in job_ids)
    padding = "&id=" + "n" * 60
    return (form + padding * (size // len(padding) + 1)).encode()


def test_a_body_over_the_limit_is_refused_whole_by_the_asgi_and_wsgi_apps(pg_app: Celery) -> None:
    """Not cut to the limit and acted on in part: 413, and nothing deleted."""
    from hfcelery.dashboard.web import MAX_BODY_BYTES

    first, second = send(pg_app, f"big-{token()}"), send(pg_app, f"big-{token()}")
    headers = {
        "cookie": f"{XSRF_COOKIE}=tok",
        "x-hf-xsrf": "tok",
        "content-type": "application/x-www-form-urlencoded",
    }

    async def over_asgi() -> httpx.Response:
        local = httpx.ASGITransport(app=asgi_app(pg_app), client=(LOCAL, 1234))
        async with httpx.AsyncClient(transport=local, base_url="http://t") as client:
            body = _delete_form([first], MAX_BODY_BYTES)
            return await client.post("/actions/jobs", content=body, headers=headers)

    assert asyncio.run(over_asgi()).status_code == 413
    statuses: list[str] = []
    body = _delete_form([second], MAX_BODY_BYTES)
    environ = {
        "REQUEST_METHOD": "POST", "QUERY_STRING": "", "REMOTE_ADDR": LOCAL, "SCRIPT_NAME": "",
        "PATH_INFO": "/actions/jobs", "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": headers["content-type"], "HTTP_COOKIE": headers["cookie"],
        "HTTP_X_HF_XSRF": "tok", "wsgi.input": io.BytesIO(body),
    }  # fmt: skip
    b"".join(wsgi_app(pg_app)(environ, lambda status, _: statuses.append(status)))
    assert statuses == ["413 Request Entity Too Large"]
    api = monitoring(pg_app)
    assert [api.job(j).state for j in (first, second)] == [State.ENQUEUED, State.ENQUEUED]
    # Under the limit, the same form acts.
    small = _delete_form([first], 1000)
    response = post(Dashboard(pg_app), "/actions/jobs", small, headers["content-type"])
    assert response.status == 303 and api.job(first).state is State.DELETED


# -- bad filter values -------------------------------------------------------------------------

#: A page cursor (as the store writes them) whose job id holds a NUL.
NUL_CURSOR = base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|a\x00b").decode()
BAD_PAGES = [
    ("/job/a\x00b", ""),
    ("/jobs", "function=%00"),
    ("/jobs", "text=%00"),
    ("/jobs", "queue=%00"),
    ("/jobs/failed", "after=" + quote(NUL_CURSOR)),
    ("/jobs", "since=9999-12-31T23:59:59-14:00"),
    ("/retries", "until=0001-01-01T00:00:00%2B14:00"),
]
BAD_API = [
    ("/api/v1/jobs/a\x00b", ""),
    ("/api/v1/jobs", "until=0001-01-01T00:00:00%2B14:00"),
    ("/api/v1/jobs", "since=9999-12-31T23:59:59-14:00"),
    ("/api/v1/jobs/count", "text=%00"),
    ("/api/v1/retries", "after=" + quote(NUL_CURSOR)),
    ("/api/v1/jobs", "queue=%00&state=failed"),
]


@pytest.mark.parametrize(("path", "query"), BAD_PAGES)
def test_filter_values_the_store_cannot_hold_are_a_bad_request_on_pages(
    pg_app: Celery, path: str, query: str
) -> None:
    response = get(Dashboard(pg_app), path, query)
    assert response.status == 400, response.body
    assert b"<h1>Bad request</h1>" in response.body


@pytest.mark.parametrize(("path", "query"), BAD_API)
def test_filter_values_the_store_cannot_hold_are_a_bad_request_on_the_api(
    pg_app: Celery, path: str, query: str
) -> None:
    response = get(Dashboard(pg_app), path, query)
    assert response.status == 400, response.body
    error = json.loads(response.body)["error"]
    assert "NUL" in error or "out of range" in error, error


def test_nul_in_an_action_on_a_filter_is_a_bad_request(pg_app: Celery) -> None:
    body = b"action=delete&text=%00"
    form = "application/x-www-form-urlencoded"
    response = post(Dashboard(pg_app), "/api/v1/jobs/bulk", body, form)
    assert response.status == 400
    assert "NUL" in json.loads(response.body)["error"]


# -- what jobs hold ------------------------------------------------------------------------


def test_a_job_whose_arguments_hold_a_lone_surrogate_is_shown(pg_app: Celery) -> None:
    """Python text the client accepts and the store keeps (escaped in JSON), which UTF-8 cannot
    encode: the page shows U+FFFD in its place, the API escapes it as JSON does."""
    client = hfcelery.BackgroundJobClient(pg_app)
    in_value = client.enqueue(call(jobs.echo, "x\ud800y"))
    in_name = client.enqueue(call(jobs.keywords, **{"value\udfff": 1}))
    dashboard = Dashboard(pg_app)
    for job_id, text in ((in_value, "x\ud800y"), (in_name, "value\udfff")):
        page = get(dashboard, f"/job/{job_id}")
        assert page.status == 200, page.body
        page.body.decode()  # UTF-8 throughout
        shown = "\ufffd".encode() in page.body or b"\\ud" in page.body.lower()
        assert shown, page.body  # in its place, or escaped in the JSON of the arguments
        detail = get(dashboard, f"/api/v1/jobs/{job_id}")
        assert detail.status == 200, detail.body
        assert text in json.dumps(json.loads(detail.body), ensure_ascii=False)
    listing = get(dashboard, "/api/v1/jobs", "state=enqueued")
    assert listing.status == 200, listing.body


def test_an_action_s_way_back_with_other_than_latin_1_is_percent_encoded(pg_app: Celery) -> None:
    """A redirect's Location header carries Latin-1 only: the path back goes percent-encoded
    (the action applied, and the browser sent where it asked)."""
    job_id = send(pg_app, f"back-{token()}")
    back = "/jobs/enqueued?text=Zürich €"
    body = f"action=delete&id={job_id}&back={quote(back)}".encode()
    response = post(Dashboard(pg_app), "/actions/jobs", body, "application/x-www-form-urlencoded")
    assert response.status == 303, response.body
    location = response.header("location") or ""
    location.encode("latin-1")  # a header value Tornado and ASGI servers send
    assert location.startswith("/jobs/enqueued?text=Z%C3%BCrich%20%E2%82%AC"), location
    assert monitoring(pg_app).job(job_id).state is State.DELETED


# -- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/actions/jobs", "/api/v1/jobs/bulk"])
@pytest.mark.parametrize("with_header", [True, False])
def test_a_deeply_nested_or_broken_json_body_is_a_bad_request(
    pg_app: Celery, path: str, with_header: bool
) -> None:
    dashboard = Dashboard(pg_app)
    headers = {} if with_header else {"x-hf-xsrf": ""}
    for body in (b"[" * 200_000 + b"]" * 200_000, b'{"action": ', b'["delete"]'):
        response = post(dashboard, path, body, "application/json", **headers)
        assert response.status == 400, (body[:20], response.body)
        assert b"JSON object" in response.body


def test_a_json_body_is_parsed_once(pg_app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    from hfcelery.dashboard import core

    calls: list[bytes] = []
    loads = core.json.loads

    def counting(text: bytes) -> Any:
        calls.append(text)
        return loads(text)

    monkeypatch.setattr(core.json, "loads", counting)
    ids = [send(pg_app, f"json-{token()}") for _ in range(2)]
    body = json.dumps({"action": "delete", "id": ids, "_xsrf": "tok"}).encode()
    response = post(Dashboard(pg_app), "/api/v1/jobs/bulk", body, "application/json")
    assert calls == [body]  # by the XSRF check, and not again for each field
    assert json.loads(response.body)["applied"] == 2


# -- the store unreachable ---------------------------------------------------------------------


@pytest.fixture
def offline_app() -> Iterator[Celery]:
    """An app whose PostgreSQL store refuses every connection."""
    app = Celery("hftests-offline-pages", broker="memory://", set_as_current=False)
    hfcelery.init_app(app, store_url=UNREACHABLE_STORE)
    yield app
    extension_of(app).store.dispose()


def test_pages_and_api_answer_503_while_the_store_is_unreachable(
    offline_app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    dashboard = Dashboard(offline_app)
    pages = [
        "/", "/jobs/failed", "/jobs", "/retries", "/job/x", "/recurring", "/servers", "/queues",
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        for path in pages:
            response = get(dashboard, path)
            assert response.status == 503, (path, response.body)
            body = response.body.decode()
            assert "<h1>Store unavailable</h1>" in body
            assert "the store is unavailable: " in body and "Traceback" not in body
        for path in ("/api/v1/stats", "/api/v1/jobs", "/api/v1/jobs/x", "/api/v1/queues"):
            response = get(dashboard, path)
            assert response.status == 503, (path, response.body)
            assert json.loads(response.body)["error"].startswith("the store is unavailable: ")
    warnings = [r for r in caplog.records if r.name.startswith("hfcelery.dashboard")]
    assert len(warnings) == len(pages) + 4
    for record in warnings:
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert "\n" not in record.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "options",
    [{"basic_auth": ("nocolon",)}, {"basic_auth": "user:password"}, {"authorization": "yes"}],
)
def test_options_that_would_let_nobody_in_are_refused(options: dict[str, Any]) -> None:
    """A browser sends basic auth as user:password: a pair without a colon (or one string read
    as its characters) would answer 401 to everyone."""
    from hfcelery.dashboard import DashboardOptions
    from hfcelery.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        DashboardOptions(**options)
    assert DashboardOptions(basic_auth=("admin:", ":secret", "a:b:c")).basic_auth


@pytest.mark.parametrize(
    ("client", "local"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 client as a dual-stack server (bound to ::) sees it
        ("::ffff:10.1.2.3", False),
        ("10.1.2.3", False),
        ("fe80::1%eth0", False),
        ("not an address", False),
        (None, False),
    ],
)
def test_loopback_clients_are_recognised_as_every_server_reports_them(
    client: str | None, local: bool
) -> None:
    from hfcelery.dashboard.core import is_loopback

    assert is_loopback(client) is local


def test_only_an_action_s_own_outcome_is_shown_on_the_page_it_returns_to(pg_app: Celery) -> None:
    """A link from elsewhere with ``?outcome=`` would show a text of its choosing on the pages:
    the message shows only with the seal the action made with this browser's XSRF token."""
    dashboard = Dashboard(pg_app)
    job_id = send(pg_app, f"seal-{token()}")
    form = f"action=delete&id={job_id}&back={quote('/jobs/deleted')}".encode()
    response = post(dashboard, "/actions/jobs", form, "application/x-www-form-urlencoded")
    location = response.header("location") or ""
    path, _, query = location.partition("?")
    assert "seal=" in query, location

    def shown(query: str, xsrf: str = "tok") -> str:
        request = Request("GET", path, query, {"cookie": f"{XSRF_COOKIE}={xsrf}"}, b"", LOCAL)
        page = dashboard.handle(request).body.decode()
        marker = '<div class="flash" role="status">'
        return page.split(marker, 1)[1].split("</div>")[0] if marker in page else ""

    assert shown(query) == "Deleted 1 of 1 job(s)"
    assert shown(query, xsrf="another-browser") == ""
    crafted = "outcome=" + quote("Your session expired: log in at evil.example")
    assert "evil" not in shown(crafted)
    assert "evil" not in shown(crafted + "&seal=%C3%A9")  # a seal beyond ASCII: no 500
    assert "evil" not in shown(crafted + "&seal=" + query.split("seal=")[1])


def test_text_beyond_ascii_in_a_job_s_data_is_shown_as_it_is(pg_app: Celery) -> None:
    """State data and parameters that are not text are shown as JSON, with their letters as
    they are (not ``\\u65e5``)."""
    job_id = hfcelery.BackgroundJobClient(pg_app).enqueue(call(jobs.echo, "x"))
    extension_of(pg_app).store.set_job_parameter(job_id, "région", {"city": "Zürich 日本"})
    page = get(Dashboard(pg_app), f"/job/{job_id}").body.decode()
    assert "Zürich 日本" in page and "\\u00fc" not in page


def test_the_retries_api_filters_as_the_retries_page(pg_app: Celery) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.test_store import claim, server

    store = extension_of(pg_app).store
    store.register_server(server("s-retries"))
    client = hfcelery.BackgroundJobClient(pg_app)
    retried = {}
    for name, the_call in (("echo", call(jobs.echo, 1)), ("multiply", call(jobs.multiply, 1, 2))):
        job_id = client.enqueue(the_call)
        taken = claim(store, job_id, server_id="s-retries")
        assert taken is not None
        assert store.retry(
            job_id, server_id="s-retries", worker_id=None,
            due_at=datetime.now(UTC) + timedelta(hours=1), failed_reason="boom",
            failed_data={}, reason="Retry attempt 1 of 2: boom", claim=taken.number,
        )  # fmt: skip
        retried[name] = job_id
    dashboard = Dashboard(pg_app)
    for name, job_id in retried.items():
        answer = get(dashboard, "/api/v1/retries", f"function=tests.jobs:{name}")
        assert [row["job"]["id"] for row in json.loads(answer.body)["items"]] == [job_id]
        page = get(dashboard, "/retries", f"function=tests.jobs:{name}").body.decode()
        assert job_id in page and retried["echo" if name != "echo" else "multiply"] not in page


def test_an_action_on_a_filter_goes_only_to_the_jobs_it_can_change(pg_app: Celery) -> None:
    """A filter-wide delete passes over the jobs already Deleted (they were counted as
    requested and not changed); enqueue-now takes only Scheduled ones."""
    from datetime import timedelta

    client = hfcelery.BackgroundJobClient(pg_app)
    marker = f"bulk-{token()}"
    first, second = client.enqueue(call(jobs.echo, marker)), client.enqueue(call(jobs.echo, marker))
    later = client.schedule(call(jobs.echo, marker), timedelta(hours=1))
    assert client.delete(first)
    form = "application/x-www-form-urlencoded"

    def bulk(action: str) -> dict[str, Any]:
        body = f"action={action}&text={marker}".encode()
        answer = post(Dashboard(pg_app), "/api/v1/jobs/bulk", body, form)
        assert answer.status == 200, answer.body
        outcome: dict[str, Any] = json.loads(answer.body)
        return outcome

    assert (bulk("enqueue-now")["requested"], bulk("enqueue-now")["requested"]) == (1, 0)
    outcome = bulk("delete")
    assert (outcome["requested"], outcome["applied"]) == (2, 2)  # second and later
    assert bulk("delete")["requested"] == 0
    api = monitoring(pg_app)
    assert {api.job(j).state for j in (first, second, later)} == {State.DELETED}


def test_the_processing_list_marks_a_job_whose_server_is_gone(pg_app: Celery) -> None:
    """As Hangfire's Processing page: a job held by a server that is not among the live ones
    (its heartbeat is old) says so, until maintenance requeues it."""
    from datetime import UTC, datetime, timedelta

    from tests.test_store import claim, server, set_heartbeat

    store = extension_of(pg_app).store
    suffix = token()[:8]
    live, gone = f"live-{suffix}", f"gone-{suffix}"
    client = hfcelery.BackgroundJobClient(pg_app)
    held = {}
    for server_id in (live, gone):
        store.register_server(server(server_id))
        job_id = client.enqueue(call(jobs.echo, server_id))
        assert claim(store, job_id, server_id=server_id) is not None
        held[server_id] = job_id
    set_heartbeat(store, gone, datetime.now(UTC) - timedelta(minutes=5))
    page = get(Dashboard(pg_app), "/jobs/processing", "limit=500").body.decode()
    rows = {
        server_id: next(r for r in page.split("<tr>") if quote(held[server_id], safe="") in r)
        for server_id in (live, gone)
    }
    assert "server gone" in rows[gone]
    assert "server gone" not in rows[live]
    for job_id in held.values():
        assert client.delete(job_id)
