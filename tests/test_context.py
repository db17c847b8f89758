"""``hfcelery.current_job()``: the running job's id, attempt and cancellation token."""

from __future__ import annotations

from typing import Any

import pytest
import redis

import hfcelery
from hfcelery import BackgroundJob, State, call
from hfcelery.errors import JobAbortedError
from hfcelery.monitoring import Monitoring
from hfcelery.records import ProcessingHolder
from hfcelery.worker.context import CancellationToken
from tests import jobs
from tests.conftest import WorkerProcess, token, wait_for, wait_state


class FakeStore:
    def __init__(self) -> None:
        self.holder: Any = ProcessingHolder(State.PROCESSING, "server-1", 3)
        self.reads = 0

    def processing_holder(self, job_id: str) -> Any:
        self.reads += 1
        return self.holder


class FakeExtension:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.server_id = "server-1"
        self.config = type("Config", (), {"heartbeat_interval_seconds": 60.0})()


def test_the_cancellation_token_is_cheap_and_remembers_a_request() -> None:
    extension = FakeExtension()
    cancel = CancellationToken(extension, "job-1")  # type: ignore[arg-type]
    assert not any(cancel.is_cancellation_requested for _ in range(10_000))
    assert extension.store.reads == 1  # once per heartbeat interval, not per call
    extension.config.heartbeat_interval_seconds = 0.0
    extension.store.holder = None  # deleted meanwhile
    assert cancel.is_cancellation_requested
    with pytest.raises(JobAbortedError, match="job-1"):
        cancel.throw_if_cancellation_requested()
    reads = extension.store.reads
    assert cancel.is_cancellation_requested and extension.store.reads == reads  # remembered


@pytest.mark.parametrize(
    ("holder", "requested"),
    [
        (ProcessingHolder(State.PROCESSING, "server-1", 3), False),
        (ProcessingHolder(State.PROCESSING, "server-1", 4), True),  # requeued, claimed again here
        (ProcessingHolder(State.PROCESSING, "server-2", 3), True),  # taken over elsewhere
        (ProcessingHolder(State.ENQUEUED, None, 3), True),  # requeued
        (ProcessingHolder(State.DELETED, None, 3), True),
        (None, True),  # gone
    ],
)
def test_the_cancellation_token_compares_the_run_s_own_claim(holder: Any, requested: bool) -> None:
    extension = FakeExtension()
    extension.store.holder = holder
    cancel = CancellationToken(extension, "job-1", claim=3)  # type: ignore[arg-type]
    assert cancel.is_cancellation_requested is requested


def test_outside_a_job_there_is_no_current_job() -> None:
    assert hfcelery.current_job() is None


@pytest.mark.acceptance
def test_a_running_job_stops_when_its_token_says_so(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.stop_when_cancelled, tok, 60))
    wait_for(lambda: side_effects.llen(f"hftests:{tok}") == 1, what="the job to start")
    assert side_effects.lindex(f"hftests:{tok}", 0) == f"started {job_id} attempt=0"
    assert BackgroundJob.delete(job_id)
    wait_for(
        lambda: (side_effects.lindex(f"hftests:{tok}", 1) or "").startswith("aborted after"),
        timeout=15,
        what="the job to see the deletion and stop",
    )
    assert wait_state(api, job_id).state is State.DELETED


@pytest.mark.acceptance
def test_a_requeued_job_claimed_again_by_the_same_worker_stops_its_first_run(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    """Hangfire's token fires once the job's Processing state is no longer this run's: after a
    requeue, the new run (here on the same worker, in its other pool process) is another
    claim, and the first run stops while the second goes on to the end."""
    tok = token()
    job_id = BackgroundJob.enqueue(call(jobs.stop_when_cancelled, tok, 8))
    wait_for(lambda: side_effects.llen(f"hftests:{tok}") == 1, what="the job to start")
    assert BackgroundJob.requeue(job_id, expected_state=State.PROCESSING)
    wait_for(
        lambda: any(
            line.startswith("aborted after")
            for line in side_effects.lrange(f"hftests:{tok}", 0, -1)
        ),
        timeout=15,
        what="the first run to see the requeue and stop",
    )
    job = wait_state(api, job_id, (State.SUCCEEDED,), timeout=30)
    lines = side_effects.lrange(f"hftests:{tok}", 0, -1)
    assert [line.split()[0] for line in lines].count("started") == 2, lines
    assert [line.split()[0] for line in lines].count("aborted") == 1, lines
    assert lines[-1] == "finished", lines
    assert [h.state for h in job.history] == [
        State.ENQUEUED, State.PROCESSING, State.ENQUEUED, State.PROCESSING, State.SUCCEEDED,
    ]  # fmt: skip
