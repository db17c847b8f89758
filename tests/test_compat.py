"""Existing Celery projects keep working: what Celery sends again on purpose runs again.

``Task.replace()``, a re-used task id and ``Reject(requeue=True)`` behave as without hfcelery,
and the job's history shows the re-send; a broker's redelivery of the same message is still
skipped once the job finished.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
import redis

from hfcelery import State
from hfcelery.monitoring import Monitoring
from hfcelery.store.jobs import RESENT_REASON
from tests.conftest import WorkerProcess, history, token, wait_for, wait_state

pytestmark = pytest.mark.acceptance


def traces(side_effects: redis.Redis, tok: str) -> list[str]:
    return list(side_effects.lrange(f"hftests:{tok}", 0, -1))


def test_a_re_used_task_id_runs_again(
    worker: WorkerProcess,
    api: Monitoring,
    side_effects: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.app import record

    tok, task_id = token(), str(uuid.uuid4())
    record.apply_async((tok, "first"), task_id=task_id)
    wait_for(lambda: traces(side_effects, tok) == ["first"], what="the first send to run")
    assert wait_state(api, task_id).state is State.SUCCEEDED
    with caplog.at_level(logging.INFO, logger="hfcelery"):
        record.apply_async((tok, "second"), task_id=task_id)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    wait_for(lambda: traces(side_effects, tok) == ["first", "second"], what="the re-send to run")
    job = wait_state(api, task_id)
    assert job.state is State.SUCCEEDED and job.args == [tok, "second"]
    assert history(job) == [State.ENQUEUED, State.PROCESSING, State.SUCCEEDED] * 2
    assert job.history[3].reason == RESENT_REASON


@pytest.mark.parametrize("depth", [1, 3])
def test_task_replace_completes_at_any_depth(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis, depth: int
) -> None:
    from tests.app import replacer

    tok = token()
    result = replacer.delay(tok, depth)
    expected = [f"replacer-{d}" for d in range(depth, 0, -1)] + ["replaced"]
    wait_for(lambda: traces(side_effects, tok) == expected, what="the replacements to run")
    job = wait_state(api, result.id, (State.SUCCEEDED,))
    assert job.args == [tok, "replaced"]
    assert [h.reason for h in job.history].count(RESENT_REASON) == depth


def test_reject_with_requeue_redelivers_and_succeeds(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    from tests.app import reject_once

    tok = token()
    result = reject_once.delay(tok)
    wait_for(lambda: traces(side_effects, tok) == ["rejected", "ran"], what="the redelivery")
    job = wait_state(api, result.id, (State.SUCCEEDED,))
    assert history(job)[:3] == [State.ENQUEUED, State.PROCESSING, State.ENQUEUED]
    assert "Rejected by the task" in (job.history[2].reason or "")


def test_ignore_ends_the_job_instead_of_leaving_it_processing(
    worker: WorkerProcess, api: Monitoring
) -> None:
    from tests.app import ignore_me

    job = wait_state(api, ignore_me.delay().id)
    assert job.state is State.DELETED
    assert job.history[-1].reason == "Ignored by the task (celery.exceptions.Ignore)"


def test_a_project_task_class_keeps_its_before_start_and_request(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    """A base class derived from celery.Task, with its own before_start and Request class."""
    from tests.app import project_task

    tok = token()
    result = project_task.delay(tok)
    expected = ["project-before-start", "ran"]
    wait_for(lambda: traces(side_effects, tok) == expected, what="the project's before_start")
    wait_for(
        lambda: side_effects.exists(f"hftests:request-accepted:{result.id}"),
        what="the project's Request class to see the task accepted",
    )
    job = wait_state(api, result.id)  # tracked to its final state
    assert job.state is State.SUCCEEDED
    assert history(job) == [State.ENQUEUED, State.PROCESSING, State.SUCCEEDED]


def test_a_send_that_raises_because_the_broker_is_away_does_not_run_later(
    postgres_url: str,
) -> None:
    """apply_async raises (the broker cannot be reached): as without hfcelery, the task was not
    sent and never runs. Its job, written before the message was to leave, is recorded Failed
    with the error, not published later by a worker."""
    from celery import Celery
    from kombu.exceptions import OperationalError

    import hfcelery
    from hfcelery.extension import extension_of

    app = Celery("hfaway", broker="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.broker_connection_retry_on_startup = False
    hfcelery.init_app(app, store_url=postgres_url)

    @app.task(name="tests.compat_away", shared=False)  # not in the other tests' apps
    def away() -> None:
        """Never runs."""

    store = extension_of(app).store
    try:
        task_id = str(uuid.uuid4())
        with pytest.raises(OperationalError):
            away.apply_async(task_id=task_id, retry_policy={"max_retries": 1})
        job = store.job(task_id)
        assert job is not None and job.state is State.FAILED
        assert "could not be sent" in (job.history[-1].reason or "")
        assert task_id not in [d.id for d in store.unpublished_jobs(timedelta(0), 100)]
    finally:
        store.dispose()
