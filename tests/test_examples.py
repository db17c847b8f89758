"""The examples run: each against the real services, as a user would run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hfcelery.monitoring import Monitoring
from hfcelery.states import State
from hfcelery.store import Store
from tests.conftest import ROOT, WORKER_START_TIMEOUT_SECONDS

pytestmark = pytest.mark.acceptance

EXISTING = "examples.existing_celery_project"


@contextmanager
def celery_worker(
    app: str, env: dict[str, str], queue: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable, "-m", "celery", "-A", app, "worker", "-P", "prefork", "-c", "2",
        "-Q", queue, "-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
        while " ready." not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_workflow(env: dict[str, str]) -> dict[str, Any]:
    script = f"import json; from {EXISTING}.tasks import workflow; print(json.dumps(workflow()))"
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    result: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    return result


def test_existing_project_gives_the_same_results_with_hfcelery_and_is_tracked(
    redis_url: str, acceptance_store_url: str, tmp_path: Path
) -> None:
    queue = f"existing-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "EXISTING_PROJECT_QUEUE": queue,
        "HFCELERY_STORE_URL": acceptance_store_url,
    }
    plain_env = {**env, "EXISTING_PROJECT_WITHOUT_HFCELERY": "1"}
    with celery_worker(f"{EXISTING}.celery_app", plain_env, queue, tmp_path / "plain.log"):
        plain = run_workflow(plain_env)
    expected = {
        "add": 5,
        "retry": "fetched https://example.org/a after 2 retries",
        "chain": 35,
        "group": [0, 1, 4, 9, 16],
        "chord": 12,
    }
    assert plain == expected
    store = Store(acceptance_store_url)
    api = Monitoring(store)
    before = {state: api.state_counts().get(state, 0) for state in State}
    with celery_worker(f"{EXISTING}.celery_app", env, queue, tmp_path / "tracked.log"):
        tracked = run_workflow(env)
        assert tracked == plain
        # add, flaky_fetch, 3 chained, 5 grouped, 4 chord header + 1 body: 15 tasks, all done.
        deadline = time.monotonic() + 30
        while api.state_counts().get(State.SUCCEEDED, 0) - before[State.SUCCEEDED] < 15:
            assert time.monotonic() < deadline, api.state_counts()
            time.sleep(0.2)
    page = api.jobs(State.SUCCEEDED, limit=100)
    functions = {job.function for job in page.items}
    assert {f"{EXISTING}.tasks.{name}" for name in ("add", "multiply", "total", "flaky_fetch")} <= (
        functions
    )
    (fetch,) = [j for j in page.items if j.function.endswith("flaky_fetch")][:1]
    history = [h.state for h in api.job(fetch.id).history]
    assert history.count(State.SCHEDULED) == 2  # each self.retry() shows as Scheduled
    assert history[-1] is State.SUCCEEDED
    store.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """A web server subprocess on loopback; yields its base URL once it answers."""
    import httpx

    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def _web_example_env(redis_url: str, tmp_path: Path, queue: str) -> dict[str, str]:
    return {
        **os.environ,
        "CELERY_BROKER_URL": redis_url,
        "HFCELERY_STORE_URL": f"sqlite:///{tmp_path / 'example.db'}",
        "EXAMPLE_QUEUE": queue,
        "OPS_TOKEN": "example-token",
    }


def _job_runs_and_its_page_shows(
    base: str, order_url: str, page_headers: dict[str, str], env: dict[str, str]
) -> None:
    import httpx

    ordered = httpx.post(base + order_url, timeout=10)
    assert ordered.status_code == 200, ordered.text
    job_id, page = ordered.json()["job_id"], ordered.json()["page"]
    assert page.endswith(f"/job/{job_id}")
    assert httpx.get(base + page, timeout=10).status_code == 403  # not an operator
    api = Monitoring(Store(env["HFCELERY_STORE_URL"]))
    deadline = time.monotonic() + 60
    while api.job(job_id).state is not State.SUCCEEDED:
        assert time.monotonic() < deadline, api.job(job_id)
        time.sleep(0.2)
    shown = httpx.get(base + page, headers=page_headers, timeout=10)
    assert shown.status_code == 200
    assert job_id in shown.text and "Succeeded" in shown.text
    assert "report for eu" in shown.text


def test_fastapi_example_enqueues_and_links_to_the_job_page(redis_url: str, tmp_path: Path) -> None:
    queue = f"fastapi-{uuid.uuid4().hex[:8]}"
    env = _web_example_env(redis_url, tmp_path, queue)
    port = free_port()
    server = [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:api", "--port", str(port)]
    with (
        celery_worker("examples.fastapi_app.app", env, queue, tmp_path / "worker.log"),
        serving(server, env, port, tmp_path / "web.log") as base,
    ):
        _job_runs_and_its_page_shows(base, "/reports/eu", {"x-ops-token": "example-token"}, env)


@pytest.mark.parametrize("server", ["runserver", "wsgi"])
def test_django_example_enqueues_from_a_view_with_pages_at_jobs(
    redis_url: str, tmp_path: Path, server: str
) -> None:
    """Served by ``manage.py runserver`` as examples/README.md says (run by its path, from
    the repository's root), and by a WSGI server given ``proj.wsgi:application``."""
    queue = f"django-{uuid.uuid4().hex[:8]}"
    env = _web_example_env(redis_url, tmp_path, queue)
    port = free_port()
    if server == "runserver":
        manage = str(ROOT / "examples" / "django_project" / "manage.py")
        command = [sys.executable, manage, "runserver", f"127.0.0.1:{port}", "--noreload"]
    else:
        serve = (
            "from wsgiref.simple_server import make_server;"
            "from examples.django_project.proj.wsgi import application;"
            f"make_server('127.0.0.1', {port}, application).serve_forever()"
        )
        command = [sys.executable, "-c", serve]
    app = "examples.django_project.proj.celery"
    with (
        celery_worker(app, env, queue, tmp_path / "worker.log"),
        serving(command, env, port, tmp_path / "web.log") as base,
    ):
        _job_runs_and_its_page_shows(base, "/reports/eu/", {"x-staff-user": "ops"}, env)


def test_filters_project_stamps_tenants_vetoes_and_alerts(
    redis_url: str, acceptance_store_url: str, tmp_path: Path
) -> None:
    """The filters example (docs/filters.md): a client filter stamps the tenant and vetoes a
    suspended one, a server filter runs the job as its tenant, an apply-state filter alerts on
    Failed; with a real worker."""
    queue = f"filters-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CELERY_BROKER_URL": redis_url,
        "FILTERS_PROJECT_QUEUE": queue,
        "HFCELERY_STORE_URL": acceptance_store_url,
    }
    log = tmp_path / "worker.log"
    with celery_worker("examples.filters_project.app", env, queue, log):
        ran = subprocess.run(
            [sys.executable, "-m", "examples.filters_project"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-3000:]
        result = json.loads(ran.stdout.strip().splitlines()[-1])
        assert result["report"] == ["Succeeded", "2026-11 report of acme", {"tenant": "acme"}]
        state, reason = result["charge"]
        assert state == "Failed" and reason == "RuntimeError: card declined for 100"
        assert result["suspended"].startswith("vetoed: ")
        deadline = time.monotonic() + 10
        while "ALERT job" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
    assert "card declined for 100" in log.read_text(errors="replace")
