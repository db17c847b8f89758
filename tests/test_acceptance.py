"""Jobs end to end: a real ``celery worker`` subprocess, the real Redis broker, the real store.

The store is PostgreSQL (or, outside CI without PostgreSQL, SQLite).
"""

from __future__ import annotations

import functools
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

import hfcelery
from hfcelery import BackgroundJob, BackgroundJobClient, State, call
from hfcelery.client import publish
from hfcelery.monitoring import Monitoring
from hfcelery.records import Dispatch
from tests import jobs
from tests.conftest import StartWorker, WorkerProcess, history, token, wait_for, wait_state

pytestmark = pytest.mark.acceptance


def runs(side_effects: redis.Redis, tok: str) -> list[str]:
    return list(side_effects.lrange(f"hftests:{tok}", 0, -1))


@pytest.mark.parametrize(
    ("make_call", "expected_function", "expected_result"),
    [
        (lambda: call(jobs.multiply, 6, 7), "tests.jobs:multiply", 42),
        (lambda: functools.partial(jobs.multiply, 2, y=5), "tests.jobs:multiply", 10),
        (lambda: jobs.no_arguments, "tests.jobs:no_arguments", "done"),
        (lambda: call(jobs.Reports.build, "q3"), "tests.jobs:Reports.build", "report q3"),
        (lambda: _add().s(1, 2), "tests.add", 3),
        (lambda: call(_add(), 20, y=22), "tests.add", 42),
    ],
    ids=["call", "partial", "zero-argument", "classmethod", "signature", "celery-task"],
)
def test_job_succeeds_with_its_state_history(
    worker: WorkerProcess,
    api: Monitoring,
    make_call: Any,
    expected_function: str,
    expected_result: Any,
) -> None:
    job_id = BackgroundJob.enqueue(make_call())
    job = wait_state(api, job_id)
    assert job.state is State.SUCCEEDED, job
    assert job.function == expected_function
    assert history(job) == [State.ENQUEUED, State.PROCESSING, State.SUCCEEDED]
    enqueued, processing, succeeded = job.history
    assert enqueued.data == {"queue": job.queue, "enqueued_at": job.created_at.isoformat()}
    assert processing.data["server_id"].startswith(worker.hostname)
    assert succeeded.data["result"] == expected_result
    assert succeeded.data["duration_ms"] >= 0 and succeeded.data["latency_ms"] >= 0
    assert succeeded.data["succeeded_at"] == succeeded.created_at.isoformat()
    assert job.expire_at is not None and job.server_id is None


def _add() -> Any:
    from tests.app import add

    return add


def test_failing_job_records_its_exception(worker: WorkerProcess, api: Monitoring) -> None:
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.fail, "disk on fire")))
    assert job.state is State.FAILED
    assert history(job) == [State.ENQUEUED, State.PROCESSING, State.FAILED]
    failed = job.history[-1]
    assert failed.reason == "RuntimeError: disk on fire"
    assert failed.data["exception_type"] == "builtins.RuntimeError"
    assert failed.data["exception_message"] == "disk on fire"
    assert "tests/jobs.py" in failed.data["exception_details"]
    assert job.expire_at is None  # failed jobs are kept until someone acts


def test_deleted_job_does_not_run(
    worker: WorkerProcess, api: Monitoring, test_app: Celery, side_effects: redis.Redis
) -> None:
    held = f"held-{token()}"  # a queue no worker consumes yet
    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.record, tok), queue=held)
    assert BackgroundJob.delete(job_id, expected_state=State.ENQUEUED)
    assert not BackgroundJob.delete(job_id)  # already deleted
    test_app.control.add_consumer(held, destination=[worker.hostname], reply=True)
    wait_for(lambda: f"skipped job {job_id}" in worker.log(), what="the worker to skip it")
    job = api.job(job_id)
    assert history(job) == [State.ENQUEUED, State.DELETED]
    assert runs(side_effects, tok) == []


def test_an_enqueued_job_whose_message_the_broker_lost_is_requeued_by_hand(
    worker: WorkerProcess, api: Monitoring, test_app: Celery, side_effects: redis.Redis
) -> None:
    """A plain Celery task's lost message is not sent again by itself: it stays Enqueued, and
    a requeue from Enqueued (as Hangfire allows) sends it again; it runs once."""
    held = f"held-{token()}"
    tok = token()
    job_id = test_app.send_task("tests.record", args=[tok, "ran"], queue=held).id
    assert api.job(job_id).state is State.ENQUEUED
    with test_app.connection_for_write() as conn:
        assert conn.default_channel.queue_purge(held) == 1  # the broker lost it
    assert BackgroundJob.requeue(job_id, expected_state=State.ENQUEUED)
    test_app.control.add_consumer(held, destination=[worker.hostname], reply=True)
    job = wait_state(api, job_id)
    assert history(job) == [State.ENQUEUED, State.ENQUEUED, State.PROCESSING, State.SUCCEEDED]
    assert job.history[1].reason == "Requeued by request"
    assert runs(side_effects, tok) == ["ran"]


def test_revoked_job_is_deleted_without_running(
    worker: WorkerProcess, api: Monitoring, test_app: Celery, side_effects: redis.Redis
) -> None:
    held = f"held-{token()}"
    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.record, tok), queue=held)
    test_app.control.revoke(job_id, destination=[worker.hostname], reply=True)
    test_app.control.add_consumer(held, destination=[worker.hostname], reply=True)
    job = wait_state(api, job_id)
    assert history(job) == [State.ENQUEUED, State.DELETED]
    assert job.history[-1].reason == "Revoked"
    assert runs(side_effects, tok) == []


def test_forbidden_module_is_rejected_and_the_worker_keeps_running(
    worker: WorkerProcess, api: Monitoring, test_app: Celery, tmp_path: Path
) -> None:
    target = tmp_path / "pwned"
    hostile = test_app.send_task("hfcelery.perform", args=["os:system", f"touch {target}"])
    job = wait_state(api, hostile.id)
    assert job.state is State.FAILED
    assert job.history[-1].data["exception_type"] == "hfcelery.errors.ForbiddenFunctionError"
    assert "'os' is neither a task module" in (job.history[-1].reason or "")
    assert not target.exists()
    assert worker.process.poll() is None
    assert wait_state(api, BackgroundJob.enqueue(jobs.no_arguments)).state is State.SUCCEEDED


def test_duplicate_message_of_a_finished_job_is_skipped(
    worker: WorkerProcess, api: Monitoring, test_app: Celery, side_effects: redis.Redis
) -> None:
    tok = token()
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.record, tok)))
    assert job.state is State.SUCCEEDED
    args, kwargs = f'["{tok}"]', "{}"
    publish(test_app, Dispatch(job.id, job.function, job.task_name, args, kwargs, job.queue))
    wait_for(lambda: f"skipped job {job.id}" in worker.log(), what="the duplicate to be skipped")
    assert runs(side_effects, tok) == ["ran"]
    assert history(api.job(job.id)) == history(job)


def test_message_without_a_stored_job_is_recorded_by_the_worker(
    worker: WorkerProcess, api: Monitoring, test_app: Celery, side_effects: redis.Redis
) -> None:
    """The client died between publishing and committing: the worker writes the job."""
    tok = token()
    job_id = str(uuid.uuid4())
    publish(
        test_app,
        Dispatch(
            job_id,
            "tests.jobs:record",
            "hfcelery.perform",
            f'["{tok}"]',
            "{}",
            test_app.conf.task_default_queue,
        ),
    )
    job = wait_state(api, job_id)
    assert job.state is State.SUCCEEDED
    assert (job.function, job.args) == ("tests.jobs:record", [tok])
    assert history(job) == [State.ENQUEUED, State.PROCESSING, State.SUCCEEDED]
    assert (
        job.history[0].reason == "Recorded by the worker: the message arrived without a stored job"
    )
    assert runs(side_effects, tok) == ["ran"]


def test_plain_celery_delay_is_tracked(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    from tests.app import record

    tok = token()
    result = record.delay(tok, value="plain")
    job = wait_state(api, result.id)
    assert job.state is State.SUCCEEDED
    assert job.function == "tests.record"
    assert job.history[0].reason == "Sent as a Celery task"
    assert job.history[-1].data["result"] == "plain"
    assert runs(side_effects, tok) == ["plain"]


def test_tracked_task_whose_message_cannot_be_sent_fails_without_blocking_others(
    worker: WorkerProcess, api: Monitoring, test_env: dict[str, str], side_effects: redis.Redis
) -> None:
    from kombu.exceptions import EncodeError

    from tests.app import record

    before = {j.id for j in api.jobs(State.FAILED, limit=500).items}
    with pytest.raises(EncodeError):
        record.delay({1, 2})  # a set: JSON cannot carry it, the send fails after tracking
    # Failed at once, with the error the caller got: never published later.
    (phantom,) = {j.id for j in api.jobs(State.FAILED, limit=500).items} - before
    offline = Celery("hftests-offline2", broker="redis://127.0.0.1:1/0", set_as_current=False)
    offline.conf.task_default_queue = test_env["HF_TEST_QUEUE"]
    offline.conf.broker_connection_timeout = 0.5
    extension = hfcelery.init_app(offline, store_url=test_env["HF_TEST_STORE_URL"])
    tok = token()
    pending = BackgroundJobClient(offline).enqueue(call(jobs.record, tok))  # broker down
    extension.store.dispose()
    assert wait_state(api, phantom).state is State.FAILED
    assert "could not be sent" in (api.job(phantom).history[-1].reason or "")
    assert wait_state(api, pending).state is State.SUCCEEDED


def test_requeue_runs_a_failed_job_again(worker: WorkerProcess, api: Monitoring) -> None:
    job_id = BackgroundJob.enqueue(call(jobs.fail_until, token(), 2))
    assert wait_state(api, job_id).state is State.FAILED
    assert not BackgroundJob.requeue(job_id, expected_state=State.SUCCEEDED)
    assert BackgroundJob.requeue(job_id, expected_state=State.FAILED)
    job = wait_state(api, job_id, (State.SUCCEEDED,))
    assert history(job) == [
        State.ENQUEUED, State.PROCESSING, State.FAILED,
        State.ENQUEUED, State.PROCESSING, State.SUCCEEDED,
    ]  # fmt: skip
    assert job.history[-1].data["result"] == 2


def test_lost_worker_process_requeues_the_job(worker: WorkerProcess, api: Monitoring) -> None:
    job_id = BackgroundJob.enqueue(call(jobs.die_once, token()))
    job = wait_state(api, job_id)
    assert job.state is State.SUCCEEDED, job
    assert history(job) == [
        State.ENQUEUED, State.PROCESSING, State.ENQUEUED, State.PROCESSING, State.SUCCEEDED,
    ]  # fmt: skip
    assert "Worker process was lost" in (job.history[2].reason or "")
    assert job.history[-1].data["result"] == "survived"


def test_hard_time_limit_fails_the_job(worker: WorkerProcess, api: Monitoring) -> None:
    from tests.app import sleepy

    job = wait_state(api, BackgroundJob.enqueue(sleepy.s(10)))
    assert job.state is State.FAILED
    assert job.history[-1].data["exception_type"] == "billiard.exceptions.TimeLimitExceeded"


def test_job_enqueued_while_the_broker_is_down_is_published_by_a_worker(
    worker: WorkerProcess, api: Monitoring, test_env: dict[str, str], side_effects: redis.Redis
) -> None:
    offline = Celery("hftests-offline", broker="redis://127.0.0.1:1/0", set_as_current=False)
    offline.conf.task_default_queue = test_env["HF_TEST_QUEUE"]
    offline.conf.broker_connection_timeout = 0.5
    extension = hfcelery.init_app(offline, store_url=test_env["HF_TEST_STORE_URL"])
    tok = token()
    job_id = BackgroundJobClient(offline).enqueue(call(jobs.record, tok))
    extension.store.dispose()
    job = wait_state(api, job_id)
    assert job.state is State.SUCCEEDED
    assert runs(side_effects, tok) == ["ran"]
    assert "published 1 pending job" in worker.log()


def test_killed_worker_jobs_are_requeued_to_a_live_one(
    worker: WorkerProcess,
    start_worker: StartWorker,
    api: Monitoring,
    test_app: Celery,
    side_effects: redis.Redis,
) -> None:
    doomed_queue = f"doomed-{token()}"
    doomed = start_worker(queues=doomed_queue, concurrency=1)
    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.sleep_then_record, tok, 2), queue=doomed_queue)
    processing = wait_state(api, job_id, (State.PROCESSING,))
    assert processing.server_id is not None
    assert processing.server_id.startswith(doomed.hostname)
    wait_for(lambda: runs(side_effects, tok) == ["started"], what="the job to start")
    doomed.process.send_signal(signal.SIGKILL)  # the whole worker, main process included
    doomed.process.wait()
    test_app.control.add_consumer(doomed_queue, destination=[worker.hostname], reply=True)
    job = wait_state(api, job_id, (State.SUCCEEDED,))
    reasons = [h.reason for h in job.history]
    assert "Server that processed the job stopped responding" in reasons
    assert job.history[-2].data["server_id"].startswith(worker.hostname)


def test_async_def_job_is_awaited(worker: WorkerProcess, api: Monitoring) -> None:
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.async_multiply, 6, 7)))
    assert job.state is State.SUCCEEDED, job
    assert job.history[-1].data["result"] == 42


def test_queue_template_is_filled_with_the_arguments(api: Monitoring) -> None:
    job_id = BackgroundJob.schedule(call(jobs.regional_report, "eu"), timedelta(hours=1))
    assert api.job(job_id).queue == "hftests-reports-eu"
    with pytest.raises(hfcelery.InvalidCallError, match="queue name"):
        BackgroundJob.enqueue(call(jobs.regional_report, region="eu"))  # no {0} to fill


def test_every_accepted_requeue_of_a_running_job_runs(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    """Requeues racing with a running 50 ms job: runs == 1 + accepted requeues of the job
    running or finished, never fewer. (A requeue of the job while it is Enqueued again is
    accepted too, as in Hangfire, and sends another message, which the claim of the pending
    run absorbs: it adds no run, so these requeues name the state they expect.)"""
    import threading

    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.sleep_then_record, tok, 0.05))
    accepted: list[bool] = []
    lock = threading.Lock()
    wait_for(lambda: side_effects.llen(f"hftests:{tok}") > 0, what="the first run to start")

    def requeue_repeatedly() -> None:
        for i in range(20):
            expected = State.PROCESSING if i % 2 == 0 else State.SUCCEEDED
            applied = BackgroundJob.requeue(job_id, expected_state=expected)
            with lock:
                accepted.append(applied)

    threads = [threading.Thread(target=requeue_repeatedly) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    expected_runs = 1 + sum(accepted)

    def all_ran() -> bool:
        finished = runs(side_effects, tok).count("finished")
        job = api.job(job_id)
        return finished >= expected_runs and job.state is State.SUCCEEDED

    wait_for(all_ran, timeout=60, what=f"{expected_runs} runs")
    time.sleep(1)
    assert runs(side_effects, tok).count("finished") == expected_runs
    assert sum(accepted) >= 1


def test_a_job_that_kills_its_own_process_ends_failed_after_a_bounded_number_of_deliveries(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    from hfcelery.config import DEFAULT_MAX_LOST_WORKER_PROCESSES

    tok = token()
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.die_always, tok)), timeout=90)
    assert job.state is State.FAILED
    assert "given up after" in (job.history[-1].reason or "")
    assert job.history[-1].data["exception_type"] == "billiard.exceptions.WorkerLostError"
    time.sleep(2)  # the last redelivery is acknowledged and skipped, not run
    assert int(side_effects.get(f"hftests:{tok}") or 0) == DEFAULT_MAX_LOST_WORKER_PROCESSES
