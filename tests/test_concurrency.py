"""``@disable_concurrent_execution``: one run at a time per function (or per key formatted from
the arguments) across every worker, through a store lock that a killed worker does not hold."""

from __future__ import annotations

import itertools
import os
import signal
import uuid
from typing import Any

import pytest
import redis

from hfcelery import BackgroundJob, State, call
from hfcelery.monitoring import Monitoring
from tests import jobs
from tests.conftest import StartWorker, WorkerProcess, token, wait_for, wait_state

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def workers(start_worker: StartWorker) -> list[WorkerProcess]:
    """Three workers of two processes each."""
    return [start_worker() for _ in range(3)]


def runs(side_effects: redis.Redis, key: str) -> list[tuple[float, float]]:
    return sorted(
        (float(a), float(b))
        for a, b in (entry.split() for entry in side_effects.lrange(f"hftests:{key}", 0, -1))
    )


def assert_one_at_a_time(intervals: list[tuple[float, float]]) -> None:
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert start >= end, f"runs overlap: {intervals}"


def test_one_run_at_a_time_across_workers(
    workers: list[WorkerProcess], api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job_ids = [BackgroundJob.enqueue(call(jobs.exclusive, tok, 0.4)) for _ in range(6)]
    for job_id in job_ids:
        assert wait_state(api, job_id, timeout=60).state is State.SUCCEEDED
    intervals = runs(side_effects, tok)
    assert len(intervals) == 6
    assert_one_at_a_time(intervals)
    servers = {wait_state(api, j).history[-1].data["server_id"] for j in job_ids}
    assert len(servers) > 1  # the runs were spread over workers, and still one at a time


def test_one_run_at_a_time_per_key(
    workers: list[WorkerProcess], api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job_ids = [
        BackgroundJob.enqueue(call(jobs.exclusive_per_customer, customer, tok, 0.5))
        for customer in ("acme", "acme", "acme", "zenith", "zenith", "zenith")
    ]
    for job_id in job_ids:
        assert wait_state(api, job_id, timeout=60).state is State.SUCCEEDED
    acme, zenith = runs(side_effects, f"{tok}:acme"), runs(side_effects, f"{tok}:zenith")
    assert len(acme) == len(zenith) == 3
    assert_one_at_a_time(acme)
    assert_one_at_a_time(zenith)
    # Different customers are different resources: some of their runs overlapped.
    assert any(a[0] < z[1] and z[0] < a[1] for a in acme for z in zenith)


def test_a_run_that_waits_too_long_fails_and_is_retried(
    workers: list[WorkerProcess], api: Monitoring
) -> None:
    tok = token()
    holder = BackgroundJob.enqueue(call(jobs.exclusive_impatient, tok, 4))
    wait_state(api, holder, (State.PROCESSING,))
    waiter = BackgroundJob.enqueue(call(jobs.exclusive_impatient, tok, 0))
    job = wait_state(api, waiter, (State.SCHEDULED,), timeout=30)
    failed = next(h for h in job.history if h.state is State.FAILED)
    assert failed.data["exception_type"] == "hfcelery.errors.ConcurrentExecutionTimeoutError"
    assert "disable_concurrent_execution" in failed.data["exception_message"]
    assert wait_state(api, holder, timeout=30).state is State.SUCCEEDED


def test_a_killed_worker_does_not_hold_the_lock(
    workers: list[WorkerProcess],
    start_worker: StartWorker,
    test_env: dict[str, str],
    api: Monitoring,
    side_effects: redis.Redis,
) -> None:
    """The worker running the lock's holder is killed (main process and children): the lock is
    free once its heartbeat is older than the server timeout, and the waiting run goes on."""
    queue = f"{test_env['HF_TEST_QUEUE']}-dce-{uuid.uuid4().hex[:6]}"
    doomed = start_worker(queues=queue, concurrency=1)
    tok = token()
    holder = BackgroundJob.enqueue(call(jobs.exclusive, tok, 60), queue=queue)
    wait_state(api, holder, (State.PROCESSING,))
    other = start_worker(queues=queue, concurrency=1)
    waiter = BackgroundJob.enqueue(call(jobs.exclusive, tok, 0.2), queue=queue)
    wait_for(
        lambda: f"job {waiter} waits for another run" in other.log(), what="the waiter to wait"
    )
    os.killpg(doomed.process.pid, signal.SIGKILL)
    doomed.process.wait()
    assert wait_state(api, waiter, timeout=60).state is State.SUCCEEDED
    # The holder is requeued as a dead server's job and runs again after the waiter (its
    # 60 s run: deleted here rather than waited for).
    assert BackgroundJob.delete(holder, terminate=True)
    intervals: list[Any] = runs(side_effects, tok)
    assert len(intervals) == 1  # the waiter's; the killed run never finished


def test_a_job_that_starts_later_than_its_latency_timeout_is_deleted(
    workers: list[WorkerProcess], api: Monitoring, side_effects: redis.Redis
) -> None:
    """``@latency_timeout(5)``: measured from the job's creation, as Hangfire's attribute."""
    from datetime import timedelta

    tok = token()
    on_time = BackgroundJob.enqueue(call(jobs.late_is_useless, tok))
    late = BackgroundJob.schedule(call(jobs.late_is_useless, tok), timedelta(seconds=6))
    assert wait_state(api, on_time).state is State.SUCCEEDED
    job = wait_state(api, late, timeout=30)
    assert job.state is State.DELETED
    assert job.history[-1].reason == "Background job has exceeded latency timeout of 5 second(s)"
    assert side_effects.lrange(f"hftests:{tok}", 0, -1) == ["ran"]  # the late one did not run
