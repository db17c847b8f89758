"""pytest plugin for running Celery's own integration suite (``make compat``).

Loaded into both runs with ``-p tests.compat.plugin``, so that they differ in one thing only:

* both runs point the suite's helper Redis connection (``t.integration.tasks.
  get_redis_connection``, which Celery hard-codes to database 0) at the database the run was
  given in ``HFCELERY_COMPAT_REDIS_URL``, so that the suite never writes to someone else's data;
* with ``HFCELERY_COMPAT_STORE_URL`` set, every app the suite creates gets
  ``hfcelery.init_app(app, store_url=...)`` right after it is made, as the one line a project
  adds after ``Celery(...)``. Nothing else is changed: the suite's settings, tasks and worker
  are Celery's.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


def _redirect_helper_redis(url: str) -> None:
    import redis
    import t.integration.tasks as suite_tasks

    def get_redis_connection() -> redis.StrictRedis:
        # As the suite's own helper (blocking reads, no socket timeout), on the run's database.
        return redis.StrictRedis.from_url(url, socket_timeout=None)

    suite_tasks.get_redis_connection = get_redis_connection


def _load_hfcelery_into_test_apps(store_url: str) -> None:
    import celery.contrib.testing.app as testing_app

    import hfcelery

    make_app = testing_app.TestApp

    def TestApp(*args: Any, **kwargs: Any) -> Any:
        app = make_app(*args, **kwargs)
        hfcelery.init_app(app, store_url=store_url)
        return app

    testing_app.TestApp = TestApp


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Before the suite's conftest runs: it copies ``get_redis_connection`` by name.
    redis_url = os.environ.get("HFCELERY_COMPAT_REDIS_URL")
    if redis_url:
        _redirect_helper_redis(redis_url)
    store_url = os.environ.get("HFCELERY_COMPAT_STORE_URL")
    if store_url:
        _load_hfcelery_into_test_apps(store_url)


class _OutcomeRecorder:
    """Each test's outcome (passed, failed, error, skipped, xfailed, xpassed) by node id,
    written as JSON to ``HFCELERY_COMPAT_REPORT`` when the session ends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.outcomes: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = self.outcomes.get(report.nodeid)
        if report.when == "call":
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            else:
                outcome = report.outcome
        elif report.failed:
            outcome = "error"
        elif report.skipped:
            outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        if outcome is not None and self.outcomes.get(report.nodeid) != "error":
            self.outcomes[report.nodeid] = outcome

    def pytest_sessionfinish(self) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(self.outcomes, f, indent=1, sort_keys=True)


def pytest_configure(config: pytest.Config) -> None:
    report = os.environ.get("HFCELERY_COMPAT_REPORT")
    if report:
        config.pluginmanager.register(_OutcomeRecorder(report), "hfcelery-compat-outcomes")
