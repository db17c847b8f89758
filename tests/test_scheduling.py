"""Delayed jobs, automatic retries, management and queues, with real workers.

Schedulers in the workers poll every 0.5 s (tests/app.py).
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

import hfcelery
from hfcelery import BackgroundJob, State, call
from hfcelery.monitoring import Monitoring
from hfcelery.records import JobDetails
from tests import jobs
from tests.conftest import StartWorker, WorkerProcess, history, token, wait_for, wait_state

pytestmark = pytest.mark.acceptance


def started_at(job: JobDetails) -> datetime:
    processing = [h for h in job.history if h.state is State.PROCESSING][-1]
    return datetime.fromisoformat(processing.data["started_at"])


def test_schedule_by_delay(worker: WorkerProcess, api: Monitoring) -> None:
    before = datetime.now(UTC)
    job_id = BackgroundJob.schedule(call(jobs.multiply, 2, 21), timedelta(seconds=2))
    scheduled = api.job(job_id)
    assert scheduled.state is State.SCHEDULED
    assert scheduled.due_at is not None and scheduled.due_at >= before + timedelta(seconds=2)
    assert scheduled.history[0].data["enqueue_at"] == scheduled.due_at.isoformat()
    job = wait_state(api, job_id)
    assert history(job) == [State.SCHEDULED, State.ENQUEUED, State.PROCESSING, State.SUCCEEDED]
    assert job.history[1].reason == "Triggered by DelayedJobScheduler"
    assert started_at(job) >= scheduled.due_at
    assert started_at(job) - scheduled.due_at < timedelta(seconds=1.5)


def test_schedule_at_an_aware_datetime(worker: WorkerProcess, api: Monitoring) -> None:
    when = datetime.now(UTC) + timedelta(seconds=1.5)
    job = wait_state(api, BackgroundJob.schedule(call(jobs.multiply, 3, 3), when))
    assert job.state is State.SUCCEEDED
    assert started_at(job) >= when


def test_bad_schedules_write_nothing(worker: WorkerProcess, api: Monitoring) -> None:
    before = api.state_counts()[State.SCHEDULED]
    with pytest.raises(hfcelery.InvalidScheduleError):
        BackgroundJob.schedule(call(jobs.multiply, 1, 1), timedelta(seconds=-5))
    with pytest.raises(hfcelery.InvalidScheduleError):
        BackgroundJob.schedule(call(jobs.multiply, 1, 1), datetime(2030, 1, 1))
    assert api.state_counts()[State.SCHEDULED] == before


def test_job_succeeding_on_its_third_attempt(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.flaky, tok, 2)), (State.SUCCEEDED,))
    assert history(job) == [
        State.ENQUEUED, State.PROCESSING, State.FAILED, State.SCHEDULED,
        State.ENQUEUED, State.PROCESSING, State.FAILED, State.SCHEDULED,
        State.ENQUEUED, State.PROCESSING, State.SUCCEEDED,
    ]  # fmt: skip
    assert job.history[3].reason == "Retry attempt 1 of 3: failure 1"  # Hangfire's wording
    assert job.history[7].reason == "Retry attempt 2 of 3: failure 2"
    assert job.history[2].data["exception_message"] == "failure 1"
    assert job.retry_count == 2
    assert job.history[-1].data["result"] == 3
    first_failure, retry_start = job.history[2].created_at, started_at(job)
    assert retry_start - first_failure >= timedelta(seconds=2)  # two delays of 1 s
    assert side_effects.get(f"hftests:{tok}") == "3"


def test_exhausted_retries_end_failed(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.always_fails, tok)), (State.FAILED,))
    assert history(job)[-4:] == [State.SCHEDULED, State.ENQUEUED, State.PROCESSING, State.FAILED]
    assert side_effects.get(f"hftests:{tok}") == "2"  # the run and one retry


def test_exhausted_retries_can_end_deleted(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.always_fails_then_deleted, tok))
    job = wait_state(api, job_id, (State.DELETED,))
    assert job.history[-1].reason == "Exceeded the maximum number of retry attempts."  # Hangfire's
    assert job.history[-1].data["exception_type"] == "builtins.RuntimeError"
    assert "always" in job.history[-1].data["reason"]
    assert job.expire_at is not None
    assert side_effects.get(f"hftests:{tok}") == "2"


def test_exceptions_outside_only_on_are_not_retried(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.fails_with_value_error, tok)))
    assert history(job) == [State.ENQUEUED, State.PROCESSING, State.FAILED]
    assert side_effects.get(f"hftests:{tok}") == "1"


def test_celery_self_retry_is_shown_as_scheduled(worker: WorkerProcess, api: Monitoring) -> None:
    from tests.app import retry_once

    job = wait_state(api, BackgroundJob.enqueue(retry_once.s(token())), (State.SUCCEEDED,))
    assert history(job) == [
        State.ENQUEUED, State.PROCESSING, State.SCHEDULED, State.PROCESSING, State.SUCCEEDED,
    ]  # fmt: skip
    assert (job.history[2].reason or "").startswith("Celery retry attempt 1")
    scheduled = job.history[2].data
    assert "enqueue_at" in scheduled and "due_at" not in scheduled  # one key for the due time
    assert "scheduled_at" in scheduled
    assert job.history[-1].data["result"] == 2


def test_deleted_scheduled_job_never_runs(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job_id = BackgroundJob.schedule(call(jobs.record, tok), timedelta(seconds=1))
    assert BackgroundJob.delete(job_id, expected_state=State.SCHEDULED)
    time.sleep(2.5)  # past the due time and several scheduler polls
    assert history(api.job(job_id)) == [State.SCHEDULED, State.DELETED]
    assert side_effects.lrange(f"hftests:{tok}", 0, -1) == []


def test_enqueue_now_and_reschedule(worker: WorkerProcess, api: Monitoring) -> None:
    far = BackgroundJob.schedule(call(jobs.multiply, 5, 5), timedelta(hours=1))
    assert BackgroundJob.enqueue_now(far)
    assert not BackgroundJob.enqueue_now(far)  # no longer Scheduled
    assert wait_state(api, far).state is State.SUCCEEDED

    later = BackgroundJob.schedule(call(jobs.multiply, 6, 6), timedelta(hours=1))
    assert BackgroundJob.reschedule(later, timedelta(seconds=1), expected_state=State.SCHEDULED)
    job = wait_state(api, later)
    assert history(job)[:3] == [State.SCHEDULED, State.SCHEDULED, State.ENQUEUED]
    assert job.history[1].reason == "Rescheduled by request"


def test_management_from_finished_states(worker: WorkerProcess, api: Monitoring) -> None:
    succeeded = wait_state(api, BackgroundJob.enqueue(call(jobs.multiply, 7, 7)))
    assert BackgroundJob.reschedule(succeeded.id, timedelta(seconds=1))
    assert wait_state(api, succeeded.id, (State.SUCCEEDED,)).history[-1].data["result"] == 49
    assert len([s for s in history(api.job(succeeded.id)) if s is State.SUCCEEDED]) == 2

    failed = wait_state(api, BackgroundJob.enqueue(call(jobs.fail, "x")))
    assert BackgroundJob.delete(failed.id, expected_state=State.FAILED)
    assert not BackgroundJob.requeue(failed.id, expected_state=State.FAILED)
    assert BackgroundJob.requeue(failed.id, expected_state=State.DELETED)
    assert wait_state(api, failed.id, (State.FAILED,)).history[-3].state is State.ENQUEUED


def test_deleting_a_running_job_requests_cancellation(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.wait_for_cancellation, tok, 20))
    wait_for(lambda: side_effects.lrange(f"hftests:{tok}", 0, -1) == ["started"], what="start")
    assert BackgroundJob.delete(job_id)
    wait_for(
        lambda: side_effects.lrange(f"hftests:{tok}", 0, -1) == ["started", "cancelled"],
        what="the job to see the cancellation",
    )
    job = api.job(job_id)
    assert history(job) == [State.ENQUEUED, State.PROCESSING, State.DELETED]


def test_delete_with_terminate_kills_the_running_job(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.sleep_then_record, tok, 30))
    wait_for(lambda: side_effects.lrange(f"hftests:{tok}", 0, -1) == ["started"], what="start")
    assert BackgroundJob.delete(job_id, terminate=True)
    wait_for(lambda: f"terminates deleted job {job_id}" in worker.log(), what="the kill")
    assert history(api.job(job_id)) == [State.ENQUEUED, State.PROCESSING, State.DELETED]
    assert wait_state(api, BackgroundJob.enqueue(jobs.no_arguments)).state is State.SUCCEEDED
    assert side_effects.lrange(f"hftests:{tok}", 0, -1) == ["started"]
    # Requeued afterwards, it runs again (no revoke lingers in the workers).
    assert BackgroundJob.requeue(job_id, expected_state=State.DELETED)
    wait_for(lambda: side_effects.llen(f"hftests:{tok}") == 2, what="the second start")
    assert BackgroundJob.delete(job_id, terminate=True)


def test_queue_decorator_and_display_name(
    worker: WorkerProcess, start_worker: StartWorker, api: Monitoring
) -> None:
    critical = start_worker(queues="hftests-critical", concurrency=1)
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.critical_report, "Q3")))
    assert job.state is State.SUCCEEDED
    assert (job.queue, job.display_name) == ("hftests-critical", "Critical report Q3")
    assert job.history[1].data["server_id"].startswith(critical.hostname)
    listed = api.jobs(State.SUCCEEDED, limit=50).items
    assert any(j.id == job.id and j.display_name == "Critical report Q3" for j in listed)


def test_three_workers_enqueue_each_due_job_once(
    worker: WorkerProcess, start_worker: StartWorker, api: Monitoring, side_effects: redis.Redis
) -> None:
    start_worker()
    start_worker()
    when = datetime.now(UTC) + timedelta(seconds=2)
    tokens = [token() for _ in range(60)]
    ids = [BackgroundJob.schedule(call(jobs.record, t), when) for t in tokens]
    for job_id in ids:
        job = wait_state(api, job_id)
        assert history(job) == [
            State.SCHEDULED, State.ENQUEUED, State.PROCESSING, State.SUCCEEDED,
        ]  # fmt: skip
    assert all(side_effects.lrange(f"hftests:{t}", 0, -1) == ["ran"] for t in tokens)
    servers = {api.job(i).history[2].data["server_id"] for i in ids}
    assert len(servers) >= 2  # the work really was shared


def test_scheduled_jobs_survive_a_worker_restart(
    start_worker: StartWorker, api: Monitoring, side_effects: redis.Redis, test_env: dict[str, str]
) -> None:
    queue = f"restart-{token()}"
    first = start_worker(queues=queue)
    tokens = [token() for _ in range(5)]
    ids = [
        BackgroundJob.schedule(call(jobs.record, t), timedelta(seconds=2), queue=queue)
        for t in tokens
    ]
    first.stop(signal.SIGTERM)
    time.sleep(3)  # due while no worker consumes the queue
    start_worker(queues=queue)
    for job_id in ids:
        assert wait_state(api, job_id).state is State.SUCCEEDED
    assert all(side_effects.lrange(f"hftests:{t}", 0, -1) == ["ran"] for t in tokens)


def test_a_zero_retry_delay_enqueues_the_next_attempt_directly(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    """As Hangfire's automatic retry: Failed, then Enqueued at once (no Scheduled state)."""
    tok = token()
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.flaky_at_once, tok, 1)))
    assert job.state is State.SUCCEEDED
    assert history(job) == [
        State.ENQUEUED, State.PROCESSING, State.FAILED,
        State.ENQUEUED, State.PROCESSING, State.SUCCEEDED,
    ]  # fmt: skip
    assert job.history[3].reason == "Retry attempt 1 of 2: failure 1"
    assert side_effects.get(f"hftests:{tok}") == "2"
