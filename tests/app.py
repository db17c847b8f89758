"""The Celery app the acceptance tests run real workers of.

Broker, store and queue come from the environment the tests set for each worker subprocess.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery, Task
from celery.worker.request import Request

import hfcelery

app = Celery("hftests", broker=os.environ.get("HF_TEST_BROKER_URL", "redis://127.0.0.1:6379/11"))
app.conf.task_default_queue = os.environ.get("HF_TEST_QUEUE", "hftests")
app.conf.broker_connection_retry_on_startup = True
# Celery's result backend, for the tests of what a project sees through it (none by default).
app.conf.result_backend = os.environ.get("HF_TEST_RESULT_BACKEND") or None
# Beat: RedBeat keys of this test session only, a fast loop and a short lock for fail-over tests.
app.conf.redbeat_redis_url = app.conf.broker_url
app.conf.redbeat_key_prefix = os.environ.get("HF_TEST_REDBEAT_PREFIX", "hftests:")
app.conf.beat_max_loop_interval = 1
app.conf.redbeat_lock_timeout = int(os.environ.get("HF_TEST_LOCK_TIMEOUT", "4"))
# Fault tests: a short Redis visibility timeout, Celery's soft shutdown.
if os.environ.get("HF_TEST_VISIBILITY_TIMEOUT"):
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ["HF_TEST_VISIBILITY_TIMEOUT"]),
        # Look for overdue messages every second (kombu's default: every 100 s).
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }
if os.environ.get("HF_TEST_SOFT_SHUTDOWN"):
    app.conf.worker_soft_shutdown_timeout = float(os.environ["HF_TEST_SOFT_SHUTDOWN"])
hfcelery.init_app(
    app,
    default=True,  # the facades use this app even when a test has initialised others
    store_url=os.environ.get("HF_TEST_STORE_URL", "sqlite:///hftests.db"),
    allowed_modules=["tests.jobs"],
    heartbeat_interval_seconds=float(os.environ.get("HF_TEST_HEARTBEAT", "1")),
    server_timeout_seconds=float(os.environ.get("HF_TEST_SERVER_TIMEOUT", "5")),
    publish_grace_seconds=float(os.environ.get("HF_TEST_PUBLISH_GRACE", "2")),
    republish_after_seconds=float(os.environ.get("HF_TEST_REPUBLISH_AFTER", "60")),
    succeeded_retention_seconds=float(os.environ.get("HF_TEST_RETENTION", "86400")),
    deleted_retention_seconds=float(os.environ.get("HF_TEST_RETENTION", "86400")),
    cleanup_interval_seconds=float(os.environ.get("HF_TEST_CLEANUP_INTERVAL", "30")),
    poll_interval_seconds=0.5,
    schedule_poll_interval_seconds=0.5,
)


def _side_effects() -> redis.Redis:
    return redis.Redis.from_url(os.environ["HF_TEST_SIDE_EFFECTS_URL"])


@app.task(name="tests.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tests.record")
def record(token: str, value: str = "ran") -> str:
    """Leave a trace in Redis, so tests can count how often a job really ran."""
    _side_effects().rpush(f"hftests:{token}", value)
    return value


@app.task(name="tests.boom")
def boom(message: str) -> None:
    raise ValueError(message)


@app.task(name="tests.sleepy", time_limit=1)
def sleepy(seconds: float) -> None:
    """Killed by its hard time limit when ``seconds`` > 1."""
    import time

    time.sleep(seconds)


@app.task(name="tests.retry_once", bind=True)
def retry_once(self, token: str) -> int:  # type: ignore[no-untyped-def]
    """Ask Celery for a retry the first time (``self.retry``), succeed the second."""
    n = int(_side_effects().incr(f"hftests:{token}"))
    if n == 1:
        raise self.retry(countdown=1)
    return n


@app.task(name="tests.replacer", bind=True)
def replacer(self, token: str, depth: int) -> None:  # type: ignore[no-untyped-def]
    """Replace itself ``depth`` times, then with ``record``."""
    _side_effects().rpush(f"hftests:{token}", f"replacer-{depth}")
    if depth > 1:
        raise self.replace(replacer.s(token, depth - 1))
    raise self.replace(record.s(token, "replaced"))


@app.task(name="tests.reject_once", bind=True)
def reject_once(self, token: str) -> str:  # type: ignore[no-untyped-def]
    """Reject with requeue the first time; run when the broker hands the message back."""
    from celery.exceptions import Reject

    if not (self.request.delivery_info or {}).get("redelivered"):
        _side_effects().rpush(f"hftests:{token}", "rejected")
        raise Reject("not yet", requeue=True)
    _side_effects().rpush(f"hftests:{token}", "ran")
    return "ran"


@app.task(name="tests.ignore_me")
def ignore_me() -> None:
    from celery.exceptions import Ignore

    raise Ignore()


class ProjectRequest(Request):  # type: ignore[misc]
    """A project's own Request class: its hooks must keep running under hfcelery."""

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        _side_effects().set(f"hftests:request-accepted:{self.id}", 1)
        super().on_accepted(pid, time_accepted)


class ProjectTask(Task):  # type: ignore[misc]
    """A base class derived from celery.Task (not app.Task), with its own hooks."""

    Request = ProjectRequest

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        _side_effects().rpush(f"hftests:{args[0]}", "project-before-start")


@app.task(name="tests.project_task", base=ProjectTask)
def project_task(token: str) -> str:
    _side_effects().rpush(f"hftests:{token}", "ran")
    return "ran"


@app.task(name="tests.replace_with_group", bind=True)
def replace_with_group(self, token: str) -> None:  # type: ignore[no-untyped-def]
    """Replace itself with a group (Celery finishes this id with ``celery.accumulate``)."""
    from celery import group

    raise self.replace(group(record.s(token, "a"), record.s(token, "b")))


class TraceFilter(hfcelery.JobFilter):
    """Server and apply-state filter on a Celery task (its class's ``hfcelery_filters``)."""

    def on_performing(self, context: hfcelery.PerformingContext) -> None:
        _side_effects().rpush(f"hftests:{context.args[0]}", "performing")

    def on_performed(self, context: hfcelery.PerformedContext) -> None:
        outcome = (
            f"error:{type(context.exception).__name__}" if context.exception else context.result
        )
        _side_effects().rpush(f"hftests:{context.args[0]}", f"performed:{outcome}")


class CancelFilter(hfcelery.JobFilter):
    def on_performing(self, context: hfcelery.PerformingContext) -> None:
        if context.args[1] == "cancel":
            context.canceled = True


class FilteredTask(Task):  # type: ignore[misc]
    hfcelery_filters = [TraceFilter()]


@app.task(name="tests.filtered", base=FilteredTask)
@hfcelery.job_filter(CancelFilter())
def filtered(token: str, what: str) -> str:
    _side_effects().rpush(f"hftests:{token}", "ran")
    if what == "fail":
        raise ValueError("filtered task failed")
    return what
