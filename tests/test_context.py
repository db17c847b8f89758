"""``hfcelery.current_job()``: the running job's id, attempt and cancellation token."""

from __future__ import annotations

from typing import Any

import pytest
import redis

import hfcelery
from hfcelery import BackgroundJob, State, call
from hfcelery.errors import JobAbortedError
from hfcelery.monitoring import Monitoring
from hfcelery.worker.context import CancellationToken
from tests import jobs
from tests.conftest import WorkerProcess, token, wait_for, wait_state


class FakeStore:
    def __init__(self) -> None:
        self.holder: Any = (State.PROCESSING, "server-1")
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
