"""Continuations with a real worker: chains, fan-out, joins, results, options."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta

import pytest
import redis

import hfcelery
from hfcelery import BackgroundJob, JobContinuationOptions, State, call
from hfcelery.monitoring import Monitoring
from hfcelery.records import JobDetails
from tests import jobs
from tests.conftest import WorkerProcess, history, wait_state

pytestmark = pytest.mark.acceptance

SOON = timedelta(seconds=1)
DELETED_BY_REQUEST = "Deleted by request"  # the reason of a delete by request


def started(job: JobDetails) -> datetime:
    processing = [h for h in job.history if h.state is State.PROCESSING][-1]
    return datetime.fromisoformat(processing.data["started_at"])


def succeeded_at(job: JobDetails) -> datetime:
    return [h for h in job.history if h.state is State.SUCCEEDED][-1].created_at


def test_hello_world(worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis) -> None:
    tok = uuid.uuid4().hex
    parent = BackgroundJob.schedule(call(jobs.record, tok, "Hello, "), SOON)
    child = BackgroundJob.continue_job_with(parent, call(jobs.record, tok, "world!"))
    assert api.job(child).state is State.AWAITING
    assert api.job(child).parent_ids == [parent]
    done = wait_state(api, child)
    assert history(done) == [State.AWAITING, State.ENQUEUED, State.PROCESSING, State.SUCCEEDED]
    assert done.history[1].reason == f"Continuation of {parent}"
    assert started(done) >= succeeded_at(api.job(parent))
    assert side_effects.lrange(f"hftests:{tok}", 0, -1) == ["Hello, ", "world!"]
    assert api.job(parent).continuation_ids == [child]


@pytest.mark.parametrize(
    ("options", "parent_call", "expected"),
    [
        (JobContinuationOptions.ONLY_ON_SUCCEEDED_STATE, "succeeds", State.SUCCEEDED),
        (JobContinuationOptions.ONLY_ON_SUCCEEDED_STATE, "deleted", State.DELETED),
        (JobContinuationOptions.ONLY_ON_DELETED_STATE, "succeeds", State.DELETED),
        (JobContinuationOptions.ONLY_ON_DELETED_STATE, "deleted", State.SUCCEEDED),
        (JobContinuationOptions.ON_ANY_FINISHED_STATE, "succeeds", State.SUCCEEDED),
        (JobContinuationOptions.ON_ANY_FINISHED_STATE, "deleted", State.SUCCEEDED),
    ],
)
def test_options_against_parent_outcomes(
    worker: WorkerProcess,
    api: Monitoring,
    options: JobContinuationOptions,
    parent_call: str,
    expected: State,
) -> None:
    parent = BackgroundJob.schedule(call(jobs.multiply, 2, 2), SOON)
    child = BackgroundJob.continue_job_with(parent, call(jobs.no_arguments), options=options)
    if parent_call == "deleted":
        assert BackgroundJob.delete(parent)
    job = wait_state(api, child)
    assert job.state is expected
    if expected is State.DELETED:
        assert job.history[-1].reason == "Continuation condition was not met"


def test_already_finished_parent_releases_at_once(worker: WorkerProcess, api: Monitoring) -> None:
    parent = wait_state(api, BackgroundJob.enqueue(call(jobs.multiply, 3, 3)))
    child = wait_state(api, BackgroundJob.continue_job_with(parent.id, call(jobs.no_arguments)))
    assert history(child) == [State.AWAITING, State.ENQUEUED, State.PROCESSING, State.SUCCEEDED]


def test_missing_parent_is_a_typed_error(worker: WorkerProcess, api: Monitoring) -> None:
    before = api.state_counts()
    with pytest.raises(hfcelery.JobNotFoundError):
        BackgroundJob.continue_job_with(str(uuid.uuid4()), call(jobs.no_arguments))
    assert api.state_counts()[State.AWAITING] == before[State.AWAITING]


def test_chain_of_twenty(worker: WorkerProcess, api: Monitoring) -> None:
    ids = [BackgroundJob.schedule(call(jobs.multiply, 1, 1), SOON)]
    for _ in range(19):
        ids.append(BackgroundJob.continue_job_with(ids[-1], call(jobs.multiply, 1, 1)))
    done = [wait_state(api, job_id) for job_id in ids]
    assert all(job.state is State.SUCCEEDED for job in done)
    for previous, following in itertools.pairwise(done):
        assert started(following) >= succeeded_at(previous)


def test_fan_out_to_fifty_children(worker: WorkerProcess, api: Monitoring) -> None:
    parent = BackgroundJob.schedule(call(jobs.multiply, 5, 5), SOON)
    children = [
        BackgroundJob.continue_job_with(parent, call(jobs.multiply, i, 1)) for i in range(50)
    ]
    assert len(api.job(parent).continuation_ids) == 50
    results = [wait_state(api, c).history[-1].data["result"] for c in children]
    assert results == list(range(50))


def test_join_of_ten_parents_with_their_results(worker: WorkerProcess, api: Monitoring) -> None:
    parents = [BackgroundJob.schedule(call(jobs.multiply, i, 10), SOON) for i in range(10)]
    child = BackgroundJob.continue_when_all(parents, call(jobs.total), pass_result=True)
    job = wait_state(api, child)
    assert job.state is State.SUCCEEDED
    assert job.history[-1].data["result"] == sum(i * 10 for i in range(10))
    assert sorted(job.parent_ids) == sorted(parents)
    last_parent = max(succeeded_at(api.job(p)) for p in parents)
    assert started(job) >= last_parent


def test_join_passes_results_and_exceptions_in_the_order_given(
    worker: WorkerProcess, api: Monitoring
) -> None:
    """In the order of the ids given (here the reverse of their sort order, with one twice),
    not of the ids."""
    values = {BackgroundJob.enqueue(call(jobs.echo, v)): v for v in ("one", "two", "three")}
    deleted = BackgroundJob.schedule(call(jobs.echo, "never"), timedelta(hours=1))
    assert BackgroundJob.delete(deleted)
    given = sorted([*values, deleted], reverse=True)
    child = BackgroundJob.continue_when_all(
        [*given, given[0]],
        call(jobs.continuation_outcome),
        options=JobContinuationOptions.ON_ANY_FINISHED_STATE,
        pass_result=True,
        pass_exception=True,
    )
    job = wait_state(api, child)
    assert job.state is State.SUCCEEDED
    results, exceptions = job.history[-1].data["result"]
    assert results == [values.get(p) for p in given]
    assert [e is not None and e["type"] is None for e in exceptions] == [
        p == deleted for p in given
    ]


@pytest.mark.parametrize("parents", [3, 1])
def test_a_join_passes_its_exceptions_as_a_list_without_its_results(
    worker: WorkerProcess, api: Monitoring, parents: int
) -> None:
    """``pass_exception=True`` alone: one argument, the list of every parent's exception, in
    the order given (a join of one parent too), as with ``pass_result=True`` beside it."""
    succeeded = [BackgroundJob.enqueue(call(jobs.echo, i)) for i in range(parents - 1)]
    deleted = BackgroundJob.schedule(call(jobs.echo, "never"), timedelta(hours=1))
    assert BackgroundJob.delete(deleted)
    given = [*succeeded, deleted][::-1]
    child = BackgroundJob.continue_when_all(
        given,
        call(jobs.echo),
        options=JobContinuationOptions.ON_ANY_FINISHED_STATE,
        pass_exception=True,
    )
    job = wait_state(api, child)
    assert job.state is State.SUCCEEDED
    exceptions = job.history[-1].data["result"]
    assert isinstance(exceptions, list) and len(exceptions) == parents
    assert exceptions[0] == {"type": None, "message": DELETED_BY_REQUEST}, exceptions
    assert exceptions[1:] == [None] * (parents - 1)


def test_pass_result(worker: WorkerProcess, api: Monitoring) -> None:
    parent = BackgroundJob.schedule(call(jobs.multiply, 6, 7), SOON)
    child = BackgroundJob.continue_job_with(parent, call(jobs.multiply, 10), pass_result=True)
    job = wait_state(api, child)
    assert job.args == [10, 42]
    assert job.history[-1].data["result"] == 420


def test_pass_result_needs_a_free_parameter(worker: WorkerProcess) -> None:
    parent = BackgroundJob.schedule(call(jobs.multiply, 6, 7), SOON)
    with pytest.raises(hfcelery.InvalidCallError):
        BackgroundJob.continue_job_with(parent, call(jobs.multiply, 1, 2), pass_result=True)


def test_child_of_a_failed_parent_waits_for_its_requeue(
    worker: WorkerProcess, api: Monitoring
) -> None:
    tok = uuid.uuid4().hex
    parent = BackgroundJob.schedule(call(jobs.fail_until, tok, 2), SOON)
    child = BackgroundJob.continue_job_with(parent, call(jobs.no_arguments))
    wait_state(api, parent, (State.FAILED,))
    assert api.job(child).state is State.AWAITING
    assert BackgroundJob.requeue(parent)
    assert wait_state(api, child).state is State.SUCCEEDED


def test_deleted_parent_deletes_a_waiting_chain(worker: WorkerProcess, api: Monitoring) -> None:
    parent = BackgroundJob.schedule(call(jobs.multiply, 1, 1), timedelta(hours=1))
    child = BackgroundJob.continue_job_with(parent, call(jobs.no_arguments))
    grandchild = BackgroundJob.continue_job_with(child, call(jobs.no_arguments))
    assert BackgroundJob.delete(parent)
    for job_id in (child, grandchild):
        job = api.job(job_id)
        assert history(job) == [State.AWAITING, State.DELETED]
        assert job.history[-1].reason == "Continuation condition was not met"
