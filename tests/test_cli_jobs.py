"""``celery -A proj hf jobs|recurring|servers|stats|cleanup``, run as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery

import hfcelery
from hfcelery import BackgroundJobClient, Cron, RecurringJobManager, State, call
from hfcelery.extension import Extension
from tests import jobs
from tests.conftest import ROOT


@pytest.fixture
def seeded(tmp_path: Path, redis_url: str) -> Iterator[tuple[Extension, str]]:
    """A SQLite store with jobs in it, and its URL for the command line."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    app = Celery("cli-test", broker=redis_url, set_as_current=False)
    # A queue of its own: messages the commands send (requeue, trigger) must not reach the
    # workers other tests start on the shared broker.
    app.conf.task_default_queue = f"cli-test-{uuid.uuid4().hex[:8]}"
    extension = hfcelery.init_app(app, store_url=url)
    yield extension, url
    extension.store.dispose()


def hf(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.app", "hf", *args],
        cwd=ROOT,
        env={**os.environ, "HF_TEST_STORE_URL": url},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def schedule(extension: Extension, the_call: object) -> str:
    return BackgroundJobClient(extension.app).schedule(the_call, timedelta(hours=1))


def test_jobs_list_filters_and_fits_80_columns(seeded: tuple[Extension, str]) -> None:
    extension, url = seeded
    ids = {schedule(extension, call(jobs.multiply, i, 2)) for i in range(3)}
    schedule(extension, call(jobs.record, "x"))
    listed = hf(url, "jobs", "list", "--function", "tests.jobs:multiply")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert {line.split()[0] for line in lines[1:]} == ids
    assert all(len(line) <= 80 for line in lines)
    # A long name keeps its end, which tells functions of one module apart.
    assert {line.split()[2] for line in lines[1:]} == {"…sts.jobs:multiply"}
    as_json = json.loads(hf(url, "jobs", "list", "--state", "scheduled", "--json").stdout)
    assert len(as_json["items"]) == 4
    assert {item["job"]["state"] for item in as_json["items"]} == {"Scheduled"}
    recent = hf(url, "jobs", "list", "--since", "10m", "--search", '"x"', "--json").stdout
    assert [item["job"]["function"] for item in json.loads(recent)["items"]] == [
        "tests.jobs:record"
    ]


def test_jobs_show_prints_the_timeline(seeded: tuple[Extension, str]) -> None:
    extension, url = seeded
    job_id = schedule(extension, call(jobs.multiply, 6, 7))
    shown = hf(url, "jobs", "show", job_id)
    assert shown.returncode == 0, shown.stderr
    assert "tests.jobs:multiply(6, 7)" in shown.stdout
    assert "Scheduled" in shown.stdout and "enqueue_at" in shown.stdout
    details = json.loads(hf(url, "jobs", "show", job_id, "--json").stdout)
    assert details["job"]["id"] == job_id


def test_bulk_delete_asks_counts_and_acts_on_every_match(seeded: tuple[Extension, str]) -> None:
    extension, url = seeded
    doomed = [schedule(extension, call(jobs.multiply, i, 2)) for i in range(5)]
    kept = schedule(extension, call(jobs.record, "keep"))
    args = ("jobs", "delete", "--state", "Scheduled", "--function", "tests.jobs:multiply")
    refused = hf(url, *args, stdin="n\n")
    assert refused.returncode != 0
    assert "Delete 5 job(s)?" in refused.stdout
    assert all(extension.store.job(i).state is State.SCHEDULED for i in doomed)  # type: ignore[union-attr]
    done = hf(url, *args, "--yes")
    assert done.returncode == 0, done.stderr
    assert "Deleted 5 of 5 job(s)" in done.stdout
    assert all(extension.store.job(i).state is State.DELETED for i in doomed)  # type: ignore[union-attr]
    assert extension.store.job(kept).state is State.SCHEDULED  # type: ignore[union-attr]
    # Without --state, only the jobs a delete can change count: the Deleted ones do not.
    again = hf(url, "jobs", "delete", "--function", "tests.jobs:multiply", "--yes")
    assert again.returncode == 0, again.stderr
    assert "no jobs match" in again.stdout, again.stdout
    everything = hf(url, "jobs", "delete", "--function", "tests.jobs:*", stdin="n\n")
    assert "Delete 1 job(s)?" in everything.stdout, everything.stdout  # the kept one alone


def test_requeue_by_id_reports_each_and_fails_when_one_did_not_apply(
    seeded: tuple[Extension, str],
) -> None:
    extension, url = seeded
    job_id = schedule(extension, call(jobs.multiply, 1, 2))
    ran = hf(url, "jobs", "requeue", job_id, "no-such-job")
    assert ran.returncode == 1
    assert "no-such-job: not changed" in ran.stdout
    assert "Requeued 1 of 2 job(s)" in ran.stdout
    assert extension.store.job(job_id).state is State.ENQUEUED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "show", "no-such-job"),
        ("jobs", "list", "--state", "sleeping"),
        ("jobs", "list", "--since", "yesterday-ish"),
        ("jobs", "list", "--since", "99999999d"),
        ("jobs", "list", "--since", "9999-12-31T23:59:59-14:00"),
        ("dashboard", "--port", "99999"),
        ("dashboard", "--basic-auth", "nocolon"),
        ("dashboard", "--authorization", "no_such_module_here:allow"),
        ("dashboard", "--authorization", "os.path:sep"),
        ("dashboard", "--address", "192.0.2.1", "--port", "0"),  # not an address of this machine
        ("jobs", "delete"),
        ("recurring", "trigger", "no-such-recurring"),
    ],
)
def test_errors_are_one_line_with_a_non_zero_exit(
    seeded: tuple[Extension, str], args: tuple[str, ...]
) -> None:
    _, url = seeded
    ran = hf(url, *args)
    assert ran.returncode != 0
    assert "Traceback" not in ran.stderr
    assert len([line for line in ran.stderr.splitlines() if line.startswith("Error")]) == 1


def test_recurring_commands(seeded: tuple[Extension, str]) -> None:
    extension, url = seeded
    RecurringJobManager(extension.app).add_or_update(
        "nightly", call(jobs.multiply, 2, 3), Cron.daily(3), tz="Europe/Berlin"
    )
    listed = hf(url, "recurring", "list")
    assert listed.returncode == 0, listed.stderr
    assert "nightly" in listed.stdout and "0 3 * * *" in listed.stdout
    assert all(len(line) <= 80 for line in listed.stdout.splitlines())
    assert hf(url, "recurring", "pause", "nightly").returncode == 0
    assert json.loads(hf(url, "recurring", "list", "--json").stdout)[0]["paused"] is True
    assert hf(url, "recurring", "resume", "nightly").returncode == 0
    triggered = hf(url, "recurring", "trigger", "nightly")
    assert triggered.returncode == 0, triggered.stderr
    job_id = triggered.stdout.strip().split()[-1]
    assert extension.store.job(job_id) is not None
    assert hf(url, "recurring", "remove", "nightly").returncode == 0
    assert extension.store.recurring_jobs() == []


def test_servers_stats_and_cleanup(seeded: tuple[Extension, str]) -> None:
    extension, url = seeded
    schedule(extension, call(jobs.multiply, 1, 2))
    stats = json.loads(hf(url, "stats", "--json").stdout)
    assert stats["states"]["Scheduled"] == 1
    assert json.loads(hf(url, "servers", "--json").stdout) == []
    cleaned = hf(url, "cleanup")
    assert cleaned.returncode == 0 and "removed 0 job(s)" in cleaned.stdout


def test_pages_on_a_port_already_taken_are_a_one_line_error(
    seeded: tuple[Extension, str],
) -> None:
    import socket

    _, url = seeded
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = hf(url, "dashboard", "--port", str(port))
    assert ran.returncode != 0
    assert "Traceback" not in ran.stderr, ran.stderr
    assert f"cannot serve the pages on 127.0.0.1:{port}" in ran.stderr, ran.stderr
