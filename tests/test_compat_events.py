"""What a project sees through Celery under hfcelery: final states in the result backend and in
the events Flower and ``celery events`` read, for every task, including the messages hfcelery
skips (a redelivery of a finished job, a message of a deleted job) and a job that keeps killing
its worker process.

The worker of this module sends events (``-E``) and stores results in Redis, as a project with
Flower and a result backend runs it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import select

from hfcelery import BackgroundJob, State, call
from hfcelery.calls import STAMP_HEADER
from hfcelery.errors import LostWorkerLimitError
from hfcelery.monitoring import Monitoring
from hfcelery.store.models import Job
from tests import jobs
from tests.conftest import StartWorker, WorkerProcess, token, wait_for, wait_state
from tests.forge import Forger

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def worker(start_worker: StartWorker, redis_url: str) -> WorkerProcess:
    return start_worker(args=("-E",), env={"HF_TEST_RESULT_BACKEND": redis_url})


@pytest.fixture(scope="module")
def backend(test_app: Any, redis_url: str) -> Iterator[Any]:
    """The worker's result backend, read as the project reads it."""
    from celery.backends.redis import RedisBackend

    reader = RedisBackend(app=test_app, url=redis_url)
    yield reader
    reader.client.close()


@pytest.fixture(scope="module")
def forge(test_app: Any, test_env: dict[str, str]) -> Forger:
    return Forger(test_app, test_env["HF_TEST_QUEUE"])


class Events:
    """The task events of the worker, captured as Flower captures them (a receiver on the
    broker's event exchange), from when it starts."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received: list[dict[str, Any]] = []
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.received.append})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> Events:
        self.thread.start()
        wait_for(lambda: self.receiver is not None, what="the event receiver")
        time.sleep(1)  # subscribed on the broker before anything is sent
        return self

    def __exit__(self, *exc: object) -> None:
        self.receiver.should_stop = True
        self.thread.join(timeout=5)

    def of(self, task_id: str) -> list[str]:
        return [e["type"] for e in list(self.received) if e.get("uuid") == task_id]

    def wait(self, task_id: str, kind: str, timeout: float = 30) -> dict[str, Any]:
        def seen() -> dict[str, Any] | None:
            matching = [
                e for e in list(self.received) if e.get("uuid") == task_id and e["type"] == kind
            ]
            return matching[-1] if matching else None

        event: dict[str, Any] = wait_for(seen, timeout=timeout, what=f"{kind} of {task_id}")
        return event


def traces(side_effects: redis.Redis, tok: str) -> list[str]:
    return list(side_effects.lrange(f"hftests:{tok}", 0, -1))


def stored_result(side_effects: redis.Redis, task_id: str) -> dict[str, Any]:
    """The result backend's raw record of a task (what any Celery client decodes)."""
    raw = side_effects.get(f"celery-task-meta-{task_id}")
    return dict(json.loads(raw)) if raw else {}


def sent_stamp(test_app: Any, job_id: str) -> str | None:
    from hfcelery.extension import extension_of

    with extension_of(test_app).store.engine.connect() as conn:
        return conn.execute(select(Job.sent_stamp).where(Job.id == job_id)).scalar_one()


def result_of(backend: Any, task_id: str) -> Any:
    from celery.result import AsyncResult

    return AsyncResult(task_id, app=backend.app, backend=backend)


def test_a_redelivered_message_of_a_succeeded_task_reports_its_success_without_running(
    worker: WorkerProcess,
    api: Monitoring,
    test_app: Any,
    backend: Any,
    forge: Forger,
    side_effects: redis.Redis,
) -> None:
    from tests.app import record

    tok = token()
    task_id = record.delay(tok, "once").id
    assert result_of(backend, task_id).get(timeout=30) == "once"
    assert wait_state(api, task_id).state is State.SUCCEEDED
    stamp = sent_stamp(test_app, task_id)
    assert stamp
    with Events(test_app) as events:  # a Flower started after the first run
        # The broker hands the same message out again (its visibility timeout ran out, say).
        forge.send("tests.record", [tok, "once"], task_id=task_id, **{STAMP_HEADER: stamp})
        succeeded = events.wait(task_id, "task-succeeded")
    assert succeeded["result"] == "'once'"
    assert events.of(task_id)[0] == "task-received"
    assert "task-failed" not in events.of(task_id)
    assert traces(side_effects, tok) == ["once"]  # not run again
    assert result_of(backend, task_id).get(timeout=5) == "once"
    assert wait_state(api, task_id).state is State.SUCCEEDED
    assert forge.queued() == 0  # acknowledged, not handed back


def test_a_message_of_a_deleted_job_is_reported_revoked(
    worker: WorkerProcess,
    api: Monitoring,
    test_app: Any,
    backend: Any,
    forge: Forger,
    side_effects: redis.Redis,
) -> None:
    from celery.exceptions import TaskRevokedError

    tok = token()
    job_id = BackgroundJob.schedule(call(jobs.record, tok), timedelta(hours=1))
    assert BackgroundJob.delete(job_id)
    with Events(test_app) as events:
        # The message of a job that was deleted after it was sent.
        forge.perform("tests.jobs:record", tok, task_id=job_id)
        events.wait(job_id, "task-revoked")
    assert traces(side_effects, tok) == []
    assert stored_result(side_effects, job_id)["status"] == "REVOKED"
    with pytest.raises(TaskRevokedError):
        result_of(backend, job_id).get(timeout=5)
    assert wait_state(api, job_id).state is State.DELETED
    assert forge.queued() == 0


def test_a_job_that_keeps_killing_its_process_fails_in_celery_too(
    worker: WorkerProcess,
    api: Monitoring,
    test_app: Any,
    backend: Any,
    side_effects: redis.Redis,
) -> None:
    """Plain Celery reports WorkerLostError; hfcelery redelivers the message (acks-late) and,
    after hfcelery_max_lost_worker_processes losses, reports the job FAILURE for good."""
    from hfcelery.config import DEFAULT_MAX_LOST_WORKER_PROCESSES

    tok = token()
    with Events(test_app) as events:
        job_id = BackgroundJob.enqueue(call(jobs.die_always, tok))
        failed = events.wait(job_id, "task-failed", timeout=90)
    assert "LostWorkerLimitError" in failed["exception"]
    job = wait_state(api, job_id, (State.FAILED,))
    assert "given up after" in (job.history[-1].reason or "")
    meta = stored_result(side_effects, job_id)
    assert meta["status"] == "FAILURE"
    assert meta["result"]["exc_type"] == "LostWorkerLimitError"
    with pytest.raises(LostWorkerLimitError) as raised:
        result_of(backend, job_id).get(timeout=5)
    assert raised.value.job_id == job_id
    assert raised.value.losses == DEFAULT_MAX_LOST_WORKER_PROCESSES
    time.sleep(2)  # acknowledged: not delivered again
    assert int(side_effects.get(f"hftests:{tok}") or 0) == DEFAULT_MAX_LOST_WORKER_PROCESSES


def test_a_task_replaced_by_a_group_ends_as_celery_says(
    worker: WorkerProcess, api: Monitoring, backend: Any, side_effects: redis.Redis
) -> None:
    from hfcelery.worker.execution import REPLACED_REASON
    from tests.app import replace_with_group

    tok = token()
    task_id = replace_with_group.delay(tok).id
    assert result_of(backend, task_id).get(timeout=30) == ["a", "b"]
    assert sorted(traces(side_effects, tok)) == ["a", "b"]
    job = wait_state(api, task_id)
    assert job.state is State.SUCCEEDED
    assert job.history[-1].reason == REPLACED_REASON
