"""Plain functions (no Celery decorator) that acceptance tests enqueue as jobs."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import redis

import hfcelery
from tests import canary  # noqa: F401  (reachable from here: security tests try it)
from tests.canary import touch  # noqa: F401  (imported, not defined here: must not run)


def _side_effects() -> redis.Redis:
    return redis.Redis.from_url(os.environ["HF_TEST_SIDE_EFFECTS_URL"])


def record(token: str, value: str = "ran") -> str:
    """Append ``value`` to a Redis list named after ``token``; return it."""
    _side_effects().rpush(f"hftests:{token}", value)
    return value


def multiply(x: float, y: float) -> float:
    return x * y


@hfcelery.automatic_retry(attempts=0)
def fail(message: str) -> None:
    raise RuntimeError(message)


def sleep_then_record(token: str, seconds: float) -> str:
    _side_effects().rpush(f"hftests:{token}", "started")
    time.sleep(seconds)
    return record(token, "finished")


def no_arguments() -> str:
    return "done"


class Reports:
    @classmethod
    def build(cls, name: str) -> str:
        return f"report {name}"

    @staticmethod
    def static_build(name: str) -> str:
        return f"static {name}"

    def instance_method(self) -> str:
        """Not a job: only static and class methods of a class can be."""
        return "instance"


class Subreports(Reports):
    """Inherits ``build``: it is defined as ``Reports.build``, so only that name runs it."""


@hfcelery.automatic_retry(attempts=0)
def raise_with(message: str) -> None:
    """Fail with ``message`` as the exception's text (NUL, lone surrogates, megabytes...)."""
    raise RuntimeError(message)


def keywords(**values: object) -> dict[str, object]:
    """Return the keyword arguments it was given."""
    return values


def echo(value: object) -> object:
    return value


def untyped_dict() -> dict[str, object]:
    """A result kombu's JSON decoder refuses to read back."""
    return {"__type__": "nope", "__value__": 1}


def huge_text(size: int) -> str:
    return "x" * size


@hfcelery.automatic_retry(attempts=0)
def fail_until(token: str, attempts: int) -> int:
    """Fail until called for the ``attempts``-th time; return the call count."""
    n = int(_side_effects().incr(f"hftests:{token}"))
    if n < attempts:
        raise RuntimeError(f"attempt {n} fails")
    return n


def die_once(token: str) -> str:
    """Kill the worker process running it the first time; succeed the second time."""
    if int(_side_effects().incr(f"hftests:{token}")) == 1:
        os.kill(os.getpid(), 9)
    return "survived"


@hfcelery.automatic_retry(attempts=3, delays=[1])
def flaky(token: str, failures: int) -> int:
    """Fail the first ``failures`` calls (for ``token``), then return the call count."""
    n = int(_side_effects().incr(f"hftests:{token}"))
    if n <= failures:
        raise RuntimeError(f"failure {n}")
    return n


@hfcelery.automatic_retry(attempts=1, delays=[0.5])
def always_fails(token: str) -> None:
    _side_effects().incr(f"hftests:{token}")
    raise RuntimeError("always")


@hfcelery.automatic_retry(attempts=1, delays=[0.5], on_attempts_exceeded="delete")
def always_fails_then_deleted(token: str) -> None:
    _side_effects().incr(f"hftests:{token}")
    raise RuntimeError("always")


@hfcelery.automatic_retry(attempts=5, delays=[0.5], only_on=[TimeoutError])
def fails_with_value_error(token: str) -> None:
    _side_effects().incr(f"hftests:{token}")
    raise ValueError("not worth retrying")


def wait_for_cancellation(token: str, seconds: float) -> str:
    """Run until the job is deleted (or ``seconds`` pass), checking every 0.1 s."""
    record(token, "started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if hfcelery.cancellation_requested():
            return record(token, "cancelled")
        time.sleep(0.1)
    return record(token, "not cancelled")


@hfcelery.queue("hftests-critical")
@hfcelery.display_name("Critical report {0}")
def critical_report(name: str) -> str:
    return f"report {name}"


def total(values: list[float]) -> float:
    """Sum a continuation's parent results."""
    return sum(values)


async def async_multiply(x: float, y: float) -> float:
    """An ``async def`` job: awaited by the worker."""
    import asyncio

    await asyncio.sleep(0.01)
    return x * y


@hfcelery.queue("hftests-reports-{0}")
def regional_report(region: str) -> str:
    return f"report for {region}"


@hfcelery.automatic_retry(attempts=0)
def report_progress(text: str, fail_first: str = "") -> str:
    """Report progress and a log line (shown on the job's page); fail once if asked."""
    hfcelery.progress(0.5)
    hfcelery.log(text)
    if fail_first and _side_effects().incr(f"hftests:{fail_first}") == 1:
        raise RuntimeError(text)
    hfcelery.progress(1.0)
    return text


def die_always(token: str) -> str:
    """Kill the worker process running it, every time."""
    _side_effects().incr(f"hftests:{token}")
    os.kill(os.getpid(), 9)
    return "unreachable"


@hfcelery.automatic_retry(attempts=2, delays=[1])
def sleep_then_fail_once(token: str, seconds: float) -> str:
    """Work ``seconds``, then fail the first time; succeed the second time."""
    n = int(_side_effects().incr(f"hftests:{token}:runs"))
    time.sleep(seconds)
    _side_effects().rpush(f"hftests:{token}", f"run-{n}")
    if n == 1:
        raise RuntimeError("first run fails")
    return "second run"


def _note_run(token: str, seconds: float) -> str:
    """Note the run's start and end times, for tests of overlapping runs."""
    client = _side_effects()
    start = time.time()
    time.sleep(seconds)
    client.rpush(f"hftests:{token}", f"{start} {time.time()}")
    return "done"


@hfcelery.disable_concurrent_execution(timeout_seconds=60)
def exclusive(token: str, seconds: float) -> str:
    """One run at a time, across workers."""
    return _note_run(token, seconds)


@hfcelery.disable_concurrent_execution(timeout_seconds=60, key="customer-{0}")
def exclusive_per_customer(customer: str, token: str, seconds: float) -> str:
    """One run at a time per customer."""
    return _note_run(f"{token}:{customer}", seconds)


@hfcelery.automatic_retry(attempts=1, delays=[3600])
@hfcelery.disable_concurrent_execution(timeout_seconds=0.5)
def exclusive_impatient(token: str, seconds: float) -> str:
    """Waits half a second for the lock, then fails (and is retried an hour later)."""
    return _note_run(token, seconds)


@hfcelery.latency_timeout(5)
def late_is_useless(token: str) -> str:
    """Worthless when it starts more than 5 s after it was created."""
    _side_effects().rpush(f"hftests:{token}", "ran")
    return "ran"


def stop_when_cancelled(token: str, seconds: float) -> str:
    """Work in small steps, asking the job's cancellation token before each."""
    from hfcelery.errors import JobAbortedError

    job = hfcelery.current_job()
    assert job is not None
    client = _side_effects()
    client.rpush(f"hftests:{token}", f"started {job.id} attempt={job.attempt}")
    deadline = time.monotonic() + seconds
    steps = 0
    try:
        while time.monotonic() < deadline:
            job.cancellation_token.throw_if_cancellation_requested()
            steps += 1
            time.sleep(0.001)
    except JobAbortedError:
        client.rpush(f"hftests:{token}", f"aborted after {steps} steps")
        raise
    client.rpush(f"hftests:{token}", "finished")
    return "finished"


@hfcelery.automatic_retry(attempts=2, delays=[0])
def flaky_at_once(token: str, failures: int) -> int:
    """As ``flaky``, retried without a delay."""
    n = int(_side_effects().incr(f"hftests:{token}"))
    if n <= failures:
        raise RuntimeError(f"failure {n}")
    return n


# Filters (tests/test_filters.py) --------------------------------------------------------------


class ReadTenant(hfcelery.JobFilter):
    """Server filter: records the tenant parameter a client filter stamped on the job."""

    def on_performing(self, context: hfcelery.PerformingContext) -> None:
        _side_effects().rpush(
            f"hftests:{context.args[0]}", f"filter:{context.get_parameter('tenant')}"
        )


@hfcelery.job_filter(ReadTenant())
def record_tenant(token: str) -> str:
    """Records the tenant the job itself sees (``current_job().get_parameter``)."""
    job = hfcelery.current_job()
    assert job is not None
    tenant = job.get_parameter("tenant")
    job.set_parameter("seen_by_job", tenant)
    return record(token, f"job:{tenant}")


class CancelOnPerforming(hfcelery.JobFilter):
    def on_performing(self, context: hfcelery.PerformingContext) -> None:
        context.canceled = True


@hfcelery.job_filter(CancelOnPerforming())
def canceled_by_filter(token: str) -> str:
    return record(token)


class RetryValueErrorsMyWay(hfcelery.JobFilter):
    """Elect-state filter: a ValueError is tried again once, after 1 s, with our own reason
    (instead of automatic retry); anything else stays as elected."""

    def on_state_election(self, context: hfcelery.ElectStateContext) -> None:
        candidate = context.candidate_state
        if (
            candidate.state is hfcelery.State.FAILED
            and isinstance(candidate.exception, ValueError)
            and context.retry_count == 0
        ):
            context.candidate_state = hfcelery.CandidateState.scheduled(
                timedelta(seconds=1), "Tried again my way"
            )


@hfcelery.automatic_retry(attempts=0)
@hfcelery.job_filter(RetryValueErrorsMyWay())
def value_error_once(token: str) -> int:
    n = int(_side_effects().incr(f"hftests:{token}"))
    if n == 1:
        raise ValueError("first run fails")
    return n


class AlertOnFailed(hfcelery.JobFilter):
    """Apply-state filter: every job that ends Failed is reported to an alert list."""

    def on_state_applied(self, context: hfcelery.ApplyStateContext) -> None:
        if context.new_state is hfcelery.State.FAILED:
            _side_effects().rpush("hftests:alerts", f"{context.job_id}|{context.reason}")


@hfcelery.automatic_retry(attempts=0)
@hfcelery.job_filter(AlertOnFailed())
def fails_with_alert(message: str) -> None:
    raise RuntimeError(message)


class SwallowErrors(hfcelery.JobFilter):
    """Server filter: marks the job's exception handled (the job succeeds)."""

    def on_performed(self, context: hfcelery.PerformedContext) -> None:
        if context.exception is not None:
            context.exception_handled = True


@hfcelery.job_filter(SwallowErrors())
def error_swallowed_by_filter() -> None:
    raise RuntimeError("handled by a filter")


class BrokenServerFilter(hfcelery.JobFilter):
    def on_performing(self, context: hfcelery.PerformingContext) -> None:
        raise KeyError("broken filter")


@hfcelery.automatic_retry(attempts=0)
@hfcelery.job_filter(BrokenServerFilter())
def broken_filter_job(token: str) -> str:
    return record(token)


def continuation_outcome(*outcome: object) -> list[object]:
    """A continuation that returns what it was given (the parent's result or exception)."""
    return list(outcome)


@hfcelery.automatic_retry(attempts=0, on_attempts_exceeded="delete")
def fails_then_deleted(message: str) -> None:
    raise LookupError(message)
