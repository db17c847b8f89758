"""Job filters (Hangfire's client, server, elect-state and apply-state filters), job
parameters, and automatic retry as a filter: unit tests of the pipeline's ordering and
exceptions, store tests on SQLite and PostgreSQL, and acceptance tests with a real worker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

import hfcelery
from hfcelery import (
    AutomaticRetry,
    BackgroundJob,
    CandidateState,
    ElectStateContext,
    JobFilter,
    State,
    call,
    global_filters,
    job_filter,
)
from hfcelery.errors import (
    ConfigurationError,
    JobCreationCanceledError,
    JobCreationError,
    JobPerformanceError,
)
from hfcelery.extension import extension_of
from hfcelery.filters import (
    CreatingContext,
    FilterScope,
    FilterSet,
    PerformingContext,
    RegisteredFilter,
    filters_for,
    sorted_filters,
)
from hfcelery.monitoring import Monitoring
from tests import jobs
from tests.conftest import WorkerProcess, history, new_postgres_database, token, wait_state

# ---------------------------------------------------------------------------------------------
# The pipeline, without a store


class Recorder(JobFilter):
    """Appends "<name>.<hook>" to a shared log for every hook."""

    def __init__(self, name: str, log: list[str], order: int = -1, **behaviour: Any) -> None:
        self.name, self.log, self.order, self.behaviour = name, log, order, behaviour

    def _note(self, hook: str) -> None:
        self.log.append(f"{self.name}.{hook}")

    def on_creating(self, context: Any) -> None:
        self._note("on_creating")
        if self.behaviour.get("cancel"):
            context.canceled = True
        if self.behaviour.get("raise_creating"):
            raise RuntimeError(f"{self.name} failed")

    def on_created(self, context: Any) -> None:
        self._note(
            "on_created"
            + (":canceled" if context.canceled else "")
            + (f":{type(context.exception).__name__}" if context.exception else "")
        )
        if self.behaviour.get("handle") and context.exception is not None:
            context.exception_handled = True

    def on_performing(self, context: Any) -> None:
        self._note("on_performing")
        if self.behaviour.get("cancel"):
            context.canceled = True
        if self.behaviour.get("raise_performing"):
            raise RuntimeError(f"{self.name} failed")

    def on_performed(self, context: Any) -> None:
        self._note(
            "on_performed" + (f":{type(context.exception).__name__}" if context.exception else "")
        )
        if self.behaviour.get("handle") and context.exception is not None:
            context.exception_handled = True


def creating() -> CreatingContext:
    return CreatingContext("id", "m:f", "hfcelery.perform", [], {}, "default", State.ENQUEUED)


def performing() -> PerformingContext:
    return PerformingContext("id", "m:f", [], {}, 0)


def test_client_filters_run_in_order_and_unwind_in_reverse() -> None:
    log: list[str] = []
    filters = FilterSet((Recorder("a", log), Recorder("b", log)))
    created = filters.create(creating(), lambda: log.append("write") or "id")  # type: ignore[func-returns-value]
    assert created.job_id == "id"
    assert log == ["a.on_creating", "b.on_creating", "write", "b.on_created", "a.on_created"]


def test_a_canceling_client_filter_stops_the_write_and_the_filters_after_it() -> None:
    log: list[str] = []
    filters = FilterSet((Recorder("a", log), Recorder("b", log, cancel=True), Recorder("c", log)))
    context = creating()
    created = filters.create(context, lambda: pytest.fail("written"))  # type: ignore[no-any-return]
    assert created.canceled and created.job_id is None
    assert context.items["canceled_by"] == "Recorder"
    # Hangfire: the filters before it see the cancellation; it and those after it do not.
    assert log == ["a.on_creating", "b.on_creating", "a.on_created:canceled"]


def test_a_client_filter_error_reaches_the_filters_before_it_unless_handled() -> None:
    from hfcelery.filters import ClientFilterError

    log: list[str] = []
    filters = FilterSet((Recorder("a", log), Recorder("b", log, raise_creating=True)))
    with pytest.raises(ClientFilterError) as raised:
        filters.create(creating(), lambda: "id")
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert log == ["a.on_creating", "b.on_creating", "a.on_created:RuntimeError"]

    log.clear()
    handled = FilterSet((Recorder("a", log, handle=True), Recorder("b", log, raise_creating=True)))
    created = handled.create(creating(), lambda: "id")
    assert created.job_id is None and isinstance(created.exception, RuntimeError)


def test_server_filters_wrap_the_job_and_may_handle_its_exception() -> None:
    log: list[str] = []
    filters = FilterSet((Recorder("a", log), Recorder("b", log)))
    performed = filters.perform(performing(), lambda: log.append("run") or 42)  # type: ignore[func-returns-value]
    assert performed.result == 42
    assert log == ["a.on_performing", "b.on_performing", "run", "b.on_performed", "a.on_performed"]

    def boom() -> None:
        raise ValueError("job failed")

    log.clear()
    with pytest.raises(ValueError):
        filters.perform(performing(), boom)
    assert log[-2:] == ["b.on_performed:ValueError", "a.on_performed:ValueError"]

    log.clear()
    handling = FilterSet((Recorder("a", log, handle=True), Recorder("b", log)))
    performed = handling.perform(performing(), boom)
    assert performed.exception_handled and performed.result is None


def test_a_server_filter_error_is_a_job_performance_error() -> None:
    log: list[str] = []
    filters = FilterSet((Recorder("a", log), Recorder("b", log, raise_performing=True)))
    with pytest.raises(JobPerformanceError, match="one of the filters") as raised:
        filters.perform(performing(), lambda: pytest.fail("ran"))
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert log == ["a.on_performing", "b.on_performing", "a.on_performed:JobPerformanceError"]


def test_a_canceling_server_filter_skips_the_job() -> None:
    log: list[str] = []
    filters = FilterSet((Recorder("a", log), Recorder("b", log, cancel=True)))
    performed = filters.perform(performing(), lambda: pytest.fail("ran"))
    assert performed.canceled
    assert log == ["a.on_performing", "b.on_performing", "a.on_performed"]


def test_filters_are_sorted_by_order_then_scope_and_single_instance_types_keep_the_last() -> None:
    log: list[str] = []
    g, t, f = Recorder("g", log), Recorder("t", log), Recorder("f", log)
    early = Recorder("early", log, order=-5)
    registered = [
        RegisteredFilter(f, -1, FilterScope.FUNCTION),
        RegisteredFilter(g, -1, FilterScope.GLOBAL),
        RegisteredFilter(early, -5, FilterScope.FUNCTION),
        RegisteredFilter(t, -1, FilterScope.TASK),
    ]
    assert sorted_filters(registered) == (early, g, t, f)

    global_retry, function_retry = AutomaticRetry(), AutomaticRetry(attempts=1)
    kept = sorted_filters(
        [
            RegisteredFilter(global_retry, 20, FilterScope.GLOBAL),
            RegisteredFilter(function_retry, 20, FilterScope.FUNCTION),
        ]
    )
    assert kept == (function_retry,)  # AutomaticRetry allows one instance: the most specific


def test_the_decorator_and_a_task_class_add_filters_to_the_global_ones() -> None:
    log: list[str] = []
    per_function = Recorder("f", log)
    per_class = Recorder("t", log)

    @job_filter(per_function)
    def function() -> None: ...

    class TaskClass:
        hfcelery_filters = [per_class]

    found = filters_for(function, TaskClass).filters
    assert found.index(per_class) < found.index(per_function)
    assert any(isinstance(x, AutomaticRetry) for x in found)  # the global default


def test_registering_what_is_not_a_filter_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="register an instance"):
        job_filter(Recorder)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a job filter"):
        global_filters.add(object())


def test_assigning_a_candidate_state_keeps_the_traversed_one() -> None:
    failed = CandidateState.failed(RuntimeError("x"), "RuntimeError: x")
    context = ElectStateContext("id", "m:f", State.PROCESSING, failed)
    context.candidate_state = CandidateState.scheduled(timedelta(seconds=5), "again")
    assert context.traversed_states == [failed]
    assert context.candidate_state.state is State.SCHEDULED
    with pytest.raises(TypeError):
        context.candidate_state = "Deleted"  # type: ignore[assignment]


def elect(retry: AutomaticRetry, exception: BaseException, **kwargs: Any) -> ElectStateContext:
    context = ElectStateContext(
        "id", "m:f", State.PROCESSING, CandidateState.failed(exception, "reason"), **kwargs
    )
    retry.on_state_election(context)
    return context


def test_automatic_retry_as_an_elect_state_filter() -> None:
    retry = AutomaticRetry(attempts=2, delays=[30])
    context = elect(retry, RuntimeError("x" * 80))
    assert context.candidate_state.state is State.SCHEDULED
    # Hangfire's reason: the message cut to 50 characters.
    assert context.candidate_state.reason == "Retry attempt 1 of 2: " + "x" * 49 + "…"
    assert context.candidate_state.due_at is not None
    assert context.candidate_state.due_at > datetime.now(UTC) + timedelta(seconds=29)
    assert [s.state for s in context.traversed_states] == [State.FAILED]

    assert elect(AutomaticRetry(attempts=1, delays=[0]), RuntimeError()).candidate_state.state is (
        State.ENQUEUED
    )
    exhausted = elect(retry, RuntimeError("x"), retry_count=2)
    assert exhausted.candidate_state.state is State.FAILED and not exhausted.traversed_states
    deleting = AutomaticRetry(attempts=0, on_attempts_exceeded="delete")
    deleted = elect(deleting, RuntimeError("x")).candidate_state
    assert (deleted.state, deleted.reason) == (State.DELETED, "Retries were disabled for this job.")

    only = AutomaticRetry(attempts=3, only_on=[TimeoutError])
    assert elect(only, ValueError()).candidate_state.state is State.FAILED
    assert elect(only, TimeoutError()).candidate_state.state is State.SCHEDULED


def test_automatic_retry_scope_for_plain_celery_tasks_is_configurable() -> None:
    class Config:
        default_retry_attempts = 4
        retry_celery_tasks = False

    default = AutomaticRetry()
    tracked = elect(default, RuntimeError(), tracked=True, config=Config())
    assert tracked.candidate_state.state is State.FAILED  # Celery's own semantics by default
    Config.retry_celery_tasks = True
    tracked = elect(default, RuntimeError(), tracked=True, config=Config())
    assert tracked.candidate_state.reason is not None
    assert tracked.candidate_state.reason.startswith("Retry attempt 1 of 4")
    assert elect(AutomaticRetry(celery_tasks=False), RuntimeError(), tracked=True, config=Config())
    explicit = AutomaticRetry(attempts=1, celery_tasks=True)
    assert elect(explicit, RuntimeError(), tracked=True).candidate_state.state is State.SCHEDULED


# ---------------------------------------------------------------------------------------------
# With the store (SQLite and PostgreSQL), through the client


class Tenant(JobFilter):
    """The user's filter of the issue: stamps a tenant id on every job."""

    tenant = "acme"

    def on_creating(self, context: CreatingContext) -> None:
        context.set_parameter("tenant", self.tenant)


class Veto(JobFilter):
    """Vetoes jobs whose first argument is negative."""

    def on_creating(self, context: CreatingContext) -> None:
        if context.args and isinstance(context.args[0], int | float) and context.args[0] < 0:
            context.canceled = True


class Broken(JobFilter):
    def on_creating(self, context: CreatingContext) -> None:
        raise KeyError("tenant missing")


class ScheduleEverything(JobFilter):
    def on_state_election(self, context: ElectStateContext) -> None:
        if context.current_state is None and context.candidate_state.state is State.ENQUEUED:
            context.candidate_state = CandidateState.scheduled(timedelta(hours=1), "Held back")


@pytest.fixture
def client_app(store_url: str) -> Iterator[Any]:
    from celery import Celery

    app = Celery("filters", broker="memory://", set_as_current=False)
    hfcelery.init_app(app, store_url=store_url, allowed_modules=["tests.jobs"])
    extension_of(app).store.migrate()
    yield app
    extension_of(app).store.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A store of its own (the acceptance tests' workers never see these jobs)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'filters.db'}"
        return
    request.getfixturevalue("postgres_url")  # PostgreSQL is there (or the test is skipped)
    with new_postgres_database("hfcelery_filters") as url:
        yield url


@pytest.fixture
def global_filter() -> Iterator[Any]:
    added: list[Any] = []

    def add(instance: Any) -> Any:
        global_filters.add(instance)
        added.append(instance)
        return instance

    yield add
    for instance in added:
        global_filters.remove(instance)


def test_a_client_filter_stamps_a_parameter_written_with_the_job(
    client_app: Any, global_filter: Any
) -> None:
    global_filter(Tenant())
    client = hfcelery.BackgroundJobClient(client_app)
    store = extension_of(client_app).store
    job_id = client.schedule(call(jobs.multiply, 2, 3), timedelta(hours=1))
    assert store.job_parameters(job_id) == {"tenant": "acme"}
    parent = client.schedule(call(jobs.multiply, 1, 1), timedelta(hours=1))
    child = client.continue_job_with(parent, call(jobs.multiply, 1, 2))
    assert store.job_parameters(child) == {"tenant": "acme"}
    store.set_job_parameter(job_id, "tenant", "other")  # replaced, not added
    assert store.job_parameters(job_id) == {"tenant": "other"}


def test_a_vetoed_or_failing_creation_writes_nothing(client_app: Any, global_filter: Any) -> None:
    client = hfcelery.BackgroundJobClient(client_app)
    api = hfcelery.monitoring(client_app)
    before = sum(api.state_counts().values())
    global_filter(Veto())
    with pytest.raises(JobCreationCanceledError, match="canceled by filter 'Veto'"):
        client.schedule(call(jobs.multiply, -1, 3), timedelta(hours=1))
    assert sum(api.state_counts().values()) == before
    client.schedule(call(jobs.multiply, 1, 3), timedelta(hours=1))  # others go through
    assert sum(api.state_counts().values()) == before + 1

    broken = global_filter(Broken())
    with pytest.raises(JobCreationError) as raised:
        client.schedule(call(jobs.multiply, 1, 3), timedelta(hours=1))
    assert isinstance(raised.value.__cause__, KeyError)
    assert sum(api.state_counts().values()) == before + 1
    global_filters.remove(broken)


def test_an_elect_state_filter_changes_a_new_jobs_first_state(
    client_app: Any, global_filter: Any
) -> None:
    global_filter(ScheduleEverything())
    client = hfcelery.BackgroundJobClient(client_app)
    job_id = client.enqueue(call(jobs.multiply, 1, 1))
    job = hfcelery.monitoring(client_app).find_job(job_id)
    assert job is not None and job.state is State.SCHEDULED
    assert job.history[-1].reason == "Held back"
    assert job.due_at is not None and job.due_at > datetime.now(UTC) + timedelta(minutes=59)


def test_job_parameters_are_checked(client_app: Any) -> None:
    context = creating()
    with pytest.raises(hfcelery.InvalidArgumentError):
        context.set_parameter("", 1)
    with pytest.raises(hfcelery.ArgumentSerializationError):
        context.set_parameter("when", object())
    with pytest.raises(hfcelery.InvalidArgumentError, match="limit"):
        context.set_parameter("big", "x" * 70_000)
    with pytest.raises(hfcelery.JobNotFoundError):
        extension_of(client_app).store.set_job_parameter("no-such-job", "a", 1)


# ---------------------------------------------------------------------------------------------
# With a real worker


def test_tenant_stamped_by_a_client_filter_reaches_server_filters_and_the_job(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis, test_app: Any
) -> None:
    tok = token()
    tenant = Tenant()
    global_filters.add(tenant)
    try:
        job_id = BackgroundJob.enqueue(call(jobs.record_tenant, tok))
    finally:
        global_filters.remove(tenant)
    assert wait_state(api, job_id).state is State.SUCCEEDED
    assert side_effects.lrange(f"hftests:{tok}", 0, -1) == ["filter:acme", "job:acme"]
    store = extension_of(test_app).store
    assert store.job_parameters(job_id) == {"tenant": "acme", "seen_by_job": "acme"}
    assert api.job(job_id).parameters == {"seen_by_job": "acme", "tenant": "acme"}


def test_a_server_filter_that_cancels_deletes_the_job_without_running_it(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.canceled_by_filter, tok)))
    assert job.state is State.DELETED
    assert job.history[-1].reason == "Canceled by filter 'CancelOnPerforming'"  # Hangfire's
    assert side_effects.llen(f"hftests:{tok}") == 0


def test_an_elect_state_filter_changes_the_state_a_failure_leads_to(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.value_error_once, tok)))
    assert job.state is State.SUCCEEDED
    assert history(job) == [
        State.ENQUEUED, State.PROCESSING, State.FAILED, State.SCHEDULED,
        State.ENQUEUED, State.PROCESSING, State.SUCCEEDED,
    ]  # fmt: skip
    assert job.history[2].data["exception_type"] == "builtins.ValueError"
    assert job.history[3].reason == "Tried again my way"
    assert job.retry_count == 1
    assert job.history[-1].data["result"] == 2


def test_an_apply_state_filter_routes_failed_jobs_to_an_alert(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    job_id = BackgroundJob.enqueue(call(jobs.fails_with_alert, f"alert {token()}"))
    job = wait_state(api, job_id, (State.FAILED,))
    alerts = side_effects.lrange("hftests:alerts", 0, -1)
    assert f"{job_id}|{job.history[-1].reason}" in alerts
    ok = wait_state(api, BackgroundJob.enqueue(call(jobs.multiply, 2, 2)))
    assert not any(a.startswith(ok.id) for a in side_effects.lrange("hftests:alerts", 0, -1))


def test_a_server_filter_may_handle_the_jobs_exception(
    worker: WorkerProcess, api: Monitoring
) -> None:
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.error_swallowed_by_filter)))
    assert job.state is State.SUCCEEDED


def test_a_failing_server_filter_fails_the_job_with_a_performance_error(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    tok = token()
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.broken_filter_job, tok)), (State.FAILED,))
    assert job.history[-1].data["exception_type"] == "hfcelery.errors.JobPerformanceError"
    assert "BrokenServerFilter.on_performing" in (job.history[-1].reason or "")
    assert side_effects.llen(f"hftests:{tok}") == 0


def test_state_data_carries_hangfires_keys(worker: WorkerProcess, api: Monitoring) -> None:
    job = wait_state(api, BackgroundJob.enqueue(call(jobs.flaky_at_once, token(), 1)))
    by_state = {h.state: h.data for h in job.history}
    for state, key in [
        (State.ENQUEUED, "enqueued_at"),
        (State.PROCESSING, "started_at"),
        (State.FAILED, "failed_at"),
        (State.SUCCEEDED, "succeeded_at"),
    ]:
        assert key in by_state[state], (state, by_state[state])
    for entry in job.history:
        if entry.state is State.ENQUEUED:
            assert entry.data["queue"] == job.queue  # the retry's Enqueued too
        if entry.state is State.FAILED:
            assert entry.data["server_id"]


def test_a_continuation_receives_the_parents_exception_and_can_be_scheduled(
    worker: WorkerProcess, api: Monitoring
) -> None:
    parent = BackgroundJob.enqueue(call(jobs.fails_then_deleted, "no such thing"))
    child = BackgroundJob.continue_job_with(
        parent,
        call(jobs.continuation_outcome),
        options=hfcelery.JobContinuationOptions.ON_ANY_FINISHED_STATE,
        pass_result=True,
        pass_exception=True,
    )
    done = wait_state(api, child)
    assert done.state is State.SUCCEEDED
    result, exception = done.history[-1].data["result"]
    assert result is None
    assert exception["type"] == "builtins.LookupError"
    assert "no such thing" in exception["message"]

    ok = BackgroundJob.enqueue(call(jobs.multiply, 2, 5))
    later = BackgroundJob.continue_job_with(
        ok,
        call(jobs.continuation_outcome),
        pass_result=True,
        pass_exception=True,
        next_state="Scheduled",
        delay=timedelta(seconds=1),
    )
    done = wait_state(api, later)
    assert [h.state for h in done.history][:2] == [State.AWAITING, State.SCHEDULED]
    assert done.history[-1].data["result"] == [10, None]


def test_filters_of_a_celery_task_class_and_decorator_run_around_it(
    worker: WorkerProcess, api: Monitoring, side_effects: redis.Redis
) -> None:
    from tests.app import filtered

    ok, failing, canceled = token(), token(), token()
    ok_id = BackgroundJob.enqueue(filtered.s(ok, "fine"))
    failing_id = filtered.apply_async((failing, "fail")).id  # sent the plain Celery way
    canceled_id = BackgroundJob.enqueue(filtered.s(canceled, "cancel"))
    assert wait_state(api, ok_id).state is State.SUCCEEDED
    assert side_effects.lrange(f"hftests:{ok}", 0, -1) == ["performing", "ran", "performed:fine"]
    failed = wait_state(api, failing_id, (State.FAILED,))
    assert failed.history[-1].data["exception_type"] == "builtins.ValueError"
    assert side_effects.lrange(f"hftests:{failing}", 0, -1) == [
        "performing", "ran", "performed:error:ValueError",
    ]  # fmt: skip
    deleted = wait_state(api, canceled_id)
    assert deleted.state is State.DELETED
    assert deleted.history[-1].reason == "Canceled by filter 'CancelFilter'"
    # The task class's filter runs first (scope order) and, as in Hangfire, sees on_performed
    # when the decorator's filter after it cancels; the task never runs.
    assert side_effects.lrange(f"hftests:{canceled}", 0, -1) == ["performing", "performed:None"]


class Protect(JobFilter):
    """Elect-state and apply-state filter for changes by request: a deletion asked for a job
    of ``jobs.multiply`` postpones it instead; every change applied is noted."""

    def __init__(self) -> None:
        self.applied: list[tuple[State | None, State, str | None]] = []

    def on_state_election(self, context: ElectStateContext) -> None:
        if (
            context.current_state is not None
            and context.candidate_state.state is State.DELETED
            and context.function == "tests.jobs:multiply"
        ):
            context.candidate_state = CandidateState.scheduled(timedelta(hours=2), "Protected")

    def on_state_applied(self, context: Any) -> None:
        self.applied.append((context.old_state, context.new_state, context.reason))


def test_changes_by_request_go_through_elect_and_apply_state_filters(
    client_app: Any, global_filter: Any
) -> None:
    client = hfcelery.BackgroundJobClient(client_app)
    protected = client.schedule(call(jobs.multiply, 1, 1), timedelta(hours=1))
    other = client.schedule(call(jobs.record, "x"), timedelta(hours=1))
    protect = global_filter(Protect())
    assert client.delete(protected)
    assert client.delete(other)
    api = hfcelery.monitoring(client_app)
    kept = api.job(protected)
    assert (kept.state, kept.history[-1].reason) == (State.SCHEDULED, "Protected")
    assert kept.due_at is not None and kept.due_at > datetime.now(UTC) + timedelta(minutes=119)
    assert api.job(other).state is State.DELETED
    assert client.reschedule(other, timedelta(minutes=5))
    assert protect.applied == [
        (State.SCHEDULED, State.SCHEDULED, "Protected"),
        (State.SCHEDULED, State.DELETED, "Deleted by request"),
        (State.DELETED, State.SCHEDULED, "Rescheduled by request"),
    ]
    assert not client.delete("no-such-job")
    assert not client.requeue(other, expected_state="Enqueued")  # not in that state


# ---------------------------------------------------------------------------------------------
# The store's own changes: the scheduler, continuation releases, recurring occurrences and
# requeues of lost jobs go through the jobs' filters as well (SQLite and PostgreSQL).


class Watch(JobFilter):
    """Elects per a table of (function, old state, candidate state) -> CandidateState, and
    records every applied change as (job id, old, new, reason)."""

    def __init__(self, elect: dict[tuple[str, Any, State], Any] | None = None) -> None:
        self.elect = elect or {}
        self.applied: list[tuple[str, Any, State, Any]] = []
        self.unapplied: list[tuple[str, State]] = []

    def on_state_election(self, context: ElectStateContext) -> None:
        key = (context.function, context.current_state, context.candidate_state.state)
        elected = self.elect.get(key)
        if isinstance(elected, Exception):
            raise elected
        if elected is not None:
            context.candidate_state = elected

    def on_state_applied(self, context: Any) -> None:
        self.applied.append((context.job_id, context.old_state, context.new_state, context.reason))

    def on_state_unapplied(self, context: Any) -> None:
        self.unapplied.append((context.job_id, context.old_state))


def make_due(store: Any, *job_ids: str) -> None:
    from sqlalchemy import update

    from hfcelery.store.models import Job

    past = datetime.now(UTC) - timedelta(seconds=5)
    with store.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id.in_(job_ids)).values(due_at=past))


def reasons(api: Monitoring, job_id: str) -> list[tuple[State, str | None]]:
    return [(h.state, h.reason) for h in api.job(job_id).history]


MULTIPLY, RECORD = "tests.jobs:multiply", "tests.jobs:record"
SCHEDULER = "Triggered by DelayedJobScheduler"


def test_the_scheduler_goes_through_elect_and_apply_state_filters(
    client_app: Any, global_filter: Any
) -> None:
    client = hfcelery.BackgroundJobClient(client_app)
    store, api = extension_of(client_app).store, hfcelery.monitoring(client_app)
    stopped = client.schedule(call(jobs.multiply, 1, 1), timedelta(hours=1))
    runs = client.schedule(call(jobs.record, "x"), timedelta(hours=1))
    broken = client.schedule(call(jobs.echo, 1), timedelta(hours=1))
    make_due(store, stopped, runs, broken)
    watch = global_filter(
        Watch(
            {
                (MULTIPLY, State.SCHEDULED, State.ENQUEUED): CandidateState.deleted("Not today"),
                ("tests.jobs:echo", State.SCHEDULED, State.ENQUEUED): KeyError("broken filter"),
            }
        )
    )
    sent: list[Any] = []
    assert store.enqueue_due(limit=100, grace=timedelta(minutes=5), publish=sent.append) == 3

    # The elected state follows the scheduler's in the history, and is not sent.
    assert reasons(api, stopped)[-2:] == [
        (State.ENQUEUED, SCHEDULER),
        (State.DELETED, "Not today"),
    ]
    assert api.job(stopped).expire_at is not None  # kept as long as Deleted jobs are
    # A filter that raises leaves the scheduler's change standing (the job runs).
    assert {d.id for d in sent} == {runs, broken}
    assert api.job(runs).state is api.job(broken).state is State.ENQUEUED
    assert api.job(runs).history[-1].data["queue"] == api.job(runs).queue
    assert sorted(watch.applied) == sorted(
        [
            (stopped, State.SCHEDULED, State.DELETED, "Not today"),
            (runs, State.SCHEDULED, State.ENQUEUED, SCHEDULER),
            (broken, State.SCHEDULED, State.ENQUEUED, SCHEDULER),
        ]
    )
    assert sorted(watch.unapplied) == sorted(
        [(stopped, State.SCHEDULED), (runs, State.SCHEDULED), (broken, State.SCHEDULED)]
    )


def test_a_filter_may_elect_another_due_time_for_the_scheduler(
    client_app: Any, global_filter: Any
) -> None:
    client = hfcelery.BackgroundJobClient(client_app)
    store, api = extension_of(client_app).store, hfcelery.monitoring(client_app)
    job_id = client.schedule(call(jobs.multiply, 1, 1), timedelta(hours=1))
    make_due(store, job_id)
    later = CandidateState.scheduled(timedelta(hours=3), "Quiet hours")
    global_filter(Watch({(MULTIPLY, State.SCHEDULED, State.ENQUEUED): later}))
    sent: list[Any] = []
    store.enqueue_due(limit=100, grace=timedelta(minutes=5), publish=sent.append)
    job = api.job(job_id)
    assert sent == [] and job.state is State.SCHEDULED
    assert job.due_at is not None and job.due_at > datetime.now(UTC) + timedelta(
        hours=2, minutes=59
    )
    assert job.history[-1].reason == "Quiet hours" and "enqueue_at" in job.history[-1].data
    # Not due again: the next pass leaves it alone.
    assert store.enqueue_due(limit=100, grace=timedelta(minutes=5), publish=sent.append) == 0


def test_continuation_releases_go_through_elect_and_apply_state_filters(
    client_app: Any, global_filter: Any
) -> None:
    from hfcelery import JobContinuationOptions

    client = hfcelery.BackgroundJobClient(client_app)
    api = hfcelery.monitoring(client_app)
    any_end = JobContinuationOptions.ON_ANY_FINISHED_STATE
    parent = client.schedule(call(jobs.record, "p"), timedelta(hours=1))
    held = client.continue_job_with(parent, call(jobs.multiply, 2, 2), options=any_end)
    grandchild = client.continue_job_with(held, call(jobs.record, "g"), options=any_end)
    plain = client.continue_job_with(parent, call(jobs.record, "c"), options=any_end)
    watch = global_filter(
        Watch({(MULTIPLY, State.AWAITING, State.ENQUEUED): CandidateState.deleted("Skipped")})
    )
    assert client.delete(parent)
    # The child a filter deleted is final: its own continuation is released in turn.
    assert reasons(api, held)[-2:] == [
        (State.ENQUEUED, f"Continuation of {parent}"),
        (State.DELETED, "Skipped"),
    ]
    assert api.job(grandchild).state is State.ENQUEUED
    assert api.job(grandchild).history[-1].reason == f"Continuation of {held}"
    assert api.job(plain).state is State.ENQUEUED
    applied = {(job, old, new) for job, old, new, _ in watch.applied}
    assert {
        (parent, State.SCHEDULED, State.DELETED),
        (held, State.AWAITING, State.DELETED),
        (grandchild, State.AWAITING, State.ENQUEUED),
        (plain, State.AWAITING, State.ENQUEUED),
    } == applied


def test_requeues_of_lost_jobs_are_seen_by_apply_state_filters_only(
    client_app: Any, global_filter: Any
) -> None:
    from tests.test_store import claim, server

    client = hfcelery.BackgroundJobClient(client_app)
    store, api = extension_of(client_app).store, hfcelery.monitoring(client_app)
    job_id = client.enqueue(call(jobs.multiply, 3, 3))
    store.register_server(server("gone"))
    assert claim(store, job_id, server_id="gone") is not None
    # A filter may not keep a lost job from running again: no election for a requeue.
    watch = global_filter(
        Watch({(MULTIPLY, State.PROCESSING, State.ENQUEUED): CandidateState.deleted("No")})
    )
    assert store.remove_server("gone", reason="Server stopped") == [job_id]
    assert api.job(job_id).state is State.ENQUEUED
    assert watch.applied == [(job_id, State.PROCESSING, State.ENQUEUED, "Server stopped")]
    assert watch.unapplied == [(job_id, State.PROCESSING)]


def test_recurring_occurrences_go_through_client_elect_and_apply_state_filters(
    client_app: Any, global_filter: Any
) -> None:
    from hfcelery.recurring.fire import fire

    manager = hfcelery.RecurringJobManager(client_app)
    api = hfcelery.monitoring(client_app)
    manager.add_or_update("nightly", call(jobs.multiply, 4, 5), "* * * * *")
    manager.add_or_update("vetoed", call(jobs.multiply, -1, 5), "* * * * *")
    global_filter(Tenant())
    watch = global_filter(Watch())
    job_id = manager.trigger("nightly")
    assert extension_of(client_app).store.job_parameters(job_id) == {"tenant": "acme"}
    triggered = "Triggered using recurring job manager"  # Hangfire's reason
    assert watch.applied == [(job_id, None, State.ENQUEUED, triggered)]

    # Beat's occurrence: a veto writes nothing and the fire task returns None.
    global_filter(Veto())
    task = client_app.tasks["hfcelery.recurring.fire"]
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    assert fire(task, "vetoed", minute.isoformat()) is None
    assert api.recurring_job("vetoed").last_job_id is None
    with pytest.raises(JobCreationCanceledError):
        manager.trigger("vetoed")
    fired = fire(task, "nightly", minute.isoformat())
    assert fired is not None and api.job(fired).state is State.ENQUEUED
    assert api.job(fired).history[-1].reason == "Triggered by recurring job scheduler"

    # An elect-state filter may hold an occurrence back.
    global_filter(ScheduleEverything())
    held = manager.trigger("nightly")
    assert api.job(held).state is State.SCHEDULED
    assert api.job(held).history[-1].reason == "Held back"


def test_plain_celery_sends_go_through_client_and_apply_state_filters(
    client_app: Any, global_filter: Any
) -> None:
    import uuid

    name = f"tests.filters.plain_{uuid.uuid4().hex[:8]}"

    @client_app.task(name=name, shared=False)
    def plain(x: int) -> int:
        return x

    task = client_app.tasks[name]
    store, api = extension_of(client_app).store, hfcelery.monitoring(client_app)
    global_filter(Tenant())
    global_filter(Veto())
    watch = global_filter(Watch())

    sent = task.apply_async((1,))
    assert api.job(sent.id).state is State.ENQUEUED
    assert store.job_parameters(sent.id) == {"tenant": "acme"}
    # The message leaves whatever a filter says (Celery swallows a signal handler's error):
    # a vetoed send is written Deleted, which no worker claims.
    vetoed = task.apply_async((-1,))
    job = api.job(vetoed.id)
    assert (job.state, job.history[-1].reason) == (State.DELETED, "Canceled by filter 'Veto'")
    assert job.expire_at is not None
    broken = global_filter(Broken())
    failed = task.apply_async((2,))
    job = api.job(failed.id)
    assert job.state is State.FAILED
    assert job.history[-1].reason == "A client filter failed: KeyError: 'tenant missing'"
    assert watch.applied == [
        (sent.id, None, State.ENQUEUED, "Sent as a Celery task"),
        (vetoed.id, None, State.DELETED, "Canceled by filter 'Veto'"),
        (failed.id, None, State.FAILED, "A client filter failed: KeyError: 'tenant missing'"),
    ]
    # Sent again with the same id (Celery's replace, a re-used id): parameters are replaced.
    global_filters.remove(broken)
    again = task.apply_async((3,), task_id=sent.id)
    assert api.job(again.id).state is State.ENQUEUED
    assert store.job_parameters(again.id) == {"tenant": "acme"}


def test_a_change_by_request_goes_through_when_the_job_moved_while_filters_ran(
    client_app: Any, global_filter: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker claims the job between the filters' look at it and the change: the filters are
    asked again about the state it is in now (Hangfire holds a job lock instead)."""
    from dataclasses import replace as replaced

    from tests.test_store import claim, server

    client = hfcelery.BackgroundJobClient(client_app)
    store, api = extension_of(client_app).store, hfcelery.monitoring(client_app)
    watch = global_filter(Watch())
    job_id = client.enqueue(call(jobs.multiply, 2, 2))
    store.register_server(server("s1"))
    real_head = store.job_head
    looks: list[State] = []

    def stale_head(job: str) -> Any:
        head = real_head(job)
        if not looks:  # the first look sees it Enqueued; then a worker claims it
            assert claim(store, job) is not None
        looks.append(head.state)
        return head if len(looks) > 1 else replaced(head, state=State.ENQUEUED)

    monkeypatch.setattr(store, "job_head", stale_head)
    assert client.delete(job_id)
    assert looks == [State.ENQUEUED, State.PROCESSING]
    assert api.job(job_id).state is State.DELETED
    assert watch.applied[-1] == (job_id, State.PROCESSING, State.DELETED, "Deleted by request")
    # With an expected state, a job found in another one is left alone.
    other = client.enqueue(call(jobs.multiply, 3, 3))
    looks.clear()
    assert not client.delete(other, expected_state=State.SCHEDULED)
