"""The pages in a real browser (headless Debian chromium through Playwright), standalone and
inside Flower, against jobs run by a real worker. Screenshots of every page are saved under the
test's output folder."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from hfcelery import BackgroundJob, RecurringJob, State, call
from hfcelery.monitoring import Monitoring
from tests import jobs
from tests.conftest import ROOT, WorkerProcess, token, wait_for, wait_state

pytestmark = pytest.mark.acceptance

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
XSS = "<script>window.__xss = 1</script>"


def ensure_chromium() -> None:
    """Install Debian's chromium when it is missing (the browser tests need it)."""
    if Path(CHROMIUM).exists():
        return
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        subprocess.run(command, check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(command: list[str], url: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"server exited:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)
        except urllib.error.HTTPError:
            return True  # answering, with 401/403: up
        except OSError:
            return False
        return True

    wait_for(up, timeout=60, interval=0.2, what=f"{url} to answer")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def pages_url(test_env: dict[str, str], tmp_path_factory: Any) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "celery", "-A", "tests.app", "hf", "dashboard",
        "--address", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    process = serve(command, url + "/", test_env, tmp_path_factory.mktemp("pages") / "log")
    yield url
    stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())
    yield tab
    assert tab.evaluate("window.__xss") is None
    context.close()


@pytest.fixture(scope="module")
def seeded(worker: WorkerProcess, api: Monitoring) -> dict[str, str]:
    failed = BackgroundJob.enqueue(call(jobs.fail, XSS))
    done = BackgroundJob.enqueue(call(jobs.report_progress, XSS))
    BackgroundJob.enqueue(call(jobs.record, XSS), queue="nobody-listens")
    wait_state(api, failed)
    wait_state(api, done)
    return {"failed": failed, "succeeded": done}


PAGES = [
    "/", "/jobs", "/jobs/enqueued", "/jobs/scheduled", "/jobs/awaiting", "/jobs/processing",
    "/jobs/succeeded", "/jobs/failed", "/jobs/deleted", "/retries", "/recurring", "/servers",
    "/queues",
]  # fmt: skip


def test_every_page_opens_and_is_screenshotted(
    page: Any, pages_url: str, seeded: dict[str, str], tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    for path in [*PAGES, f"/job/{seeded['failed']}", f"/job/{seeded['succeeded']}"]:
        response = page.goto(pages_url + path)
        assert response.status == 200, path
        name = path.strip("/").replace("/", "_") or "overview"
        page.screenshot(path=str(shots / f"{name[:60]}.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 800})  # a phone
    page.goto(pages_url + "/jobs/failed")
    page.screenshot(path=str(shots / "phone_failed.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1
    assert len(list(shots.iterdir())) == len(PAGES) + 3


def test_requeue_a_failed_job_from_its_page(
    page: Any, pages_url: str, api: Monitoring, worker: WorkerProcess
) -> None:
    job_id = BackgroundJob.enqueue(call(jobs.report_progress, "once", token()))
    assert wait_state(api, job_id).state == State.FAILED
    page.goto(f"{pages_url}/job/{job_id}")
    page.click("button:has-text('Requeue')")
    assert "Requeued 1 of 1" in page.inner_text(".flash")
    page.wait_for_selector("#job-state:has-text('Succeeded')", timeout=30_000)
    assert wait_state(api, job_id).state == State.SUCCEEDED


def test_bulk_delete_a_filtered_set(page: Any, pages_url: str, api: Monitoring) -> None:
    marker = token()
    ids = [
        BackgroundJob.enqueue(call(jobs.record, marker), queue="nobody-listens") for _ in range(4)
    ]
    other = BackgroundJob.enqueue(call(jobs.record, token()), queue="nobody-listens")
    page.goto(f"{pages_url}/jobs/enqueued?text={marker}")
    page.check("input[name='scope']")
    page.click("#bulk button[value='delete']")
    page.wait_for_selector(".progress-text[data-finished='1']", timeout=30_000)
    assert {api.job(i).state for i in ids} == {State.DELETED}
    assert api.job(other).state == State.ENQUEUED


def test_the_header_box_selects_every_job_of_the_page(
    page: Any, pages_url: str, api: Monitoring
) -> None:
    marker = token()
    ids = [
        BackgroundJob.enqueue(call(jobs.record, marker), queue="nobody-listens") for _ in range(3)
    ]
    page.goto(f"{pages_url}/jobs/enqueued?text={marker}")
    page.check("input.select-all")
    assert (
        page.eval_on_selector_all("input[name='id']", "boxes => boxes.map(box => box.checked)")
        == [True] * 3
    )
    page.click("#bulk button[value='delete']")
    assert "Deleted 3 of 3" in page.inner_text(".flash")
    assert {api.job(i).state for i in ids} == {State.DELETED}


def test_a_refused_bulk_action_says_so_without_a_script_error(
    page: Any, pages_url: str, api: Monitoring
) -> None:
    """The pages' XSRF cookie gone (expired, cleared in another tab): the server refuses the
    batch, and the page says so instead of failing silently with a script error."""
    marker = token()
    job_id = BackgroundJob.enqueue(call(jobs.record, marker), queue="nobody-listens")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{pages_url}/jobs/enqueued?text={marker}")
    page.context.clear_cookies()
    page.check("input[name='scope']")
    page.click("#bulk button[value='delete']")
    page.wait_for_selector(".progress-text[data-failed='1']", timeout=30_000)
    assert "XSRF" in page.inner_text(".progress-text")
    assert errors == []
    assert api.job(job_id).state == State.ENQUEUED


def test_a_running_job_s_page_follows_its_progress(
    page: Any, pages_url: str, test_app: Any
) -> None:
    """The bar and the percentage beside it, while the job runs (here a run the test holds in
    the store, on a server of its own)."""
    from hfcelery.extension import extension_of
    from tests.test_store import claim, server

    store = extension_of(test_app).store
    holder = f"progress-{token()[:8]}"
    store.register_server(server(holder))
    job_id = BackgroundJob.enqueue(call(jobs.record, token()), queue="nobody-listens")
    assert claim(store, job_id, server_id=holder) is not None
    store.record_progress(job_id, fraction=0.25)
    page.goto(f"{pages_url}/job/{job_id}")
    assert page.inner_text("#progress .percent") == "25%"
    store.record_progress(job_id, fraction=0.75)
    page.wait_for_selector("#progress .percent:text-is('75%')", timeout=15_000)
    assert page.eval_on_selector("#progress progress", "bar => bar.value") == 0.75
    assert BackgroundJob.delete(job_id)


def test_trigger_a_recurring_job(page: Any, pages_url: str, api: Monitoring) -> None:
    rid = f"browser-{token()[:8]}"
    RecurringJob.add_or_update(rid, call(jobs.record, token()), "0 0 31 2 *")
    try:
        page.goto(f"{pages_url}/recurring")
        page.click(f"tr[id='{rid}'] button:has-text('Trigger now')")
        assert "Triggered" in page.inner_text(".flash")
        job_id = api.recurring_job(rid).last_job_id
        assert job_id is not None
        assert wait_state(api, job_id).state == State.SUCCEEDED
    finally:
        RecurringJob.remove_if_exists(rid)


def test_live_counter_moves(page: Any, pages_url: str, api: Monitoring) -> None:
    page.goto(pages_url + "/")
    counter = page.locator("[data-state='Succeeded']")
    wait_for(lambda: counter.inner_text().isdigit(), what="the counter")
    before = int(counter.inner_text())
    job_id = BackgroundJob.enqueue(call(jobs.record, token()))
    wait_state(api, job_id)
    # Polled from here: the pages' CSP (rightly) forbids Playwright's string evaluation.
    wait_for(lambda: int(counter.inner_text()) > before, timeout=30, what="the counter to move")


def test_pages_inside_flower(
    test_env: dict[str, str], tmp_path: Path, seeded: dict[str, str], browser: Any
) -> None:
    if shutil.which("celery", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("celery is not installed next to the test interpreter")
    port = free_port()
    command = [
        sys.executable, "-m", "celery", "-A", "tests.app", "hf", "flower",
        f"--port={port}", "--address=127.0.0.1", "--url_prefix=flw", "--basic_auth=ops:pw",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}/flw"
    process = serve(command, base + "/hf/", test_env, tmp_path / "flower.log")
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/hf/", timeout=5)
        assert refused.value.code == 401
        context = browser.new_context(http_credentials={"username": "ops", "password": "pw"})
        tab = context.new_page()
        assert tab.goto(base + "/hf/").status == 200
        tab.goto(f"{base}/hf/job/{seeded['failed']}")
        link = tab.locator("a:has-text('Celery task in Flower')")
        assert link.get_attribute("href") == f"/flw/task/{seeded['failed']}"
        assert tab.locator("nav a:has-text('Flower')").get_attribute("href") == "/flw/"
        tab.screenshot(path=str(tmp_path / "flower_job.png"), full_page=True)
        assert tab.goto(base + "/").status == 200  # Flower itself still answers
        assert tab.locator("a:has-text('Jobs (hfcelery)')").get_attribute("href") == "/flw/hf/"
        context.close()
    finally:
        stop(process)


def test_flower_task_page_links_back_to_the_job() -> None:
    """Flower shows a task only after it saw the task's events; its template gets the link."""
    import flower.urls

    from hfcelery.dashboard.tornado import add_flower_links

    class FlowerApp:
        settings: ClassVar[dict[str, Any]] = {
            "template_path": flower.urls.settings["template_path"]
        }

    add_flower_links(FlowerApp, "/flw/hf")
    loader = FlowerApp.settings["template_loader"]
    task = loader.load("task.html").code
    assert "Job in hfcelery" in task and "/flw/hf/job/" in task and "url_escape(task.uuid)" in task
    assert 'href="/flw/hf/">Jobs (hfcelery)' in loader.load("navbar.html").code
