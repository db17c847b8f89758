"""Per-function options, Hangfire's retry back-off, and schedule validation (no services)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from celery import Celery

import hfcelery
from hfcelery.calls import call, to_invocation
from hfcelery.client import due_time
from hfcelery.errors import ConfigurationError, InvalidCallError, InvalidScheduleError
from hfcelery.options import (
    AttemptsExceeded,
    RetryPolicy,
    hangfire_retry_delay_seconds,
    options_of,
)
from tests import jobs


@pytest.mark.parametrize("attempt", range(1, 11))
def test_hangfire_delay_formula(attempt: int) -> None:
    """seconds = (attempt-1)^4 + 15 + random(0..29) * attempt, for every random draw."""
    base = (attempt - 1) ** 4 + 15
    seen = {hangfire_retry_delay_seconds(attempt, random.Random(seed)) for seed in range(300)}
    assert min(seen) == base
    assert max(seen) == base + 29 * attempt
    assert all((d - base) % attempt == 0 for d in seen)


def test_hangfire_delay_with_a_fixed_draw() -> None:
    class Fixed(random.Random):
        def randint(self, a: int, b: int) -> int:
            return 7

    assert hangfire_retry_delay_seconds(1, Fixed()) == 0 + 15 + 7
    assert hangfire_retry_delay_seconds(3, Fixed()) == 16 + 15 + 21
    assert hangfire_retry_delay_seconds(10, Fixed()) == 6561 + 15 + 70


def test_explicit_delays_repeat_the_last_one() -> None:
    policy = RetryPolicy(attempts=5, delays_seconds=(1.0, 10.0))
    assert [policy.delay_seconds(a) for a in (1, 2, 3, 5)] == [1.0, 10.0, 10.0, 10.0]


def test_only_on_and_except_on() -> None:
    policy = RetryPolicy(only_on=(OSError,), except_on=(FileNotFoundError,))
    assert policy.applies_to(TimeoutError())
    assert not policy.applies_to(FileNotFoundError())
    assert not policy.applies_to(ValueError())
    assert RetryPolicy().applies_to(ValueError())


def test_decorators_stack_on_functions() -> None:
    options = options_of(jobs.critical_report)
    assert options is not None
    assert (options.queue, options.display_name) == ("hftests-critical", "Critical report {0}")
    retry = options_of(jobs.always_fails_then_deleted)
    assert retry is not None and retry.retry is not None
    assert retry.retry.attempts == 1
    assert retry.retry.on_attempts_exceeded is AttemptsExceeded.DELETE


def test_decorators_on_celery_tasks_in_either_order() -> None:
    app = Celery("options-test", set_as_current=False)

    @hfcelery.queue("mail")
    @app.task(name="options.outer")
    def outer() -> None:
        pass

    @app.task(name="options.inner")
    @hfcelery.retention(timedelta(hours=2))
    def inner() -> None:
        pass

    outer_options, inner_options = options_of(outer), options_of(inner)
    assert outer_options is not None and outer_options.queue == "mail"
    assert inner_options is not None and inner_options.retention == timedelta(hours=2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: hfcelery.automatic_retry(attempts=-1),
        lambda: hfcelery.automatic_retry(delays=[-1]),
        lambda: hfcelery.automatic_retry(only_on=[ValueError, "x"]),  # type: ignore[list-item]
        lambda: hfcelery.automatic_retry(on_attempts_exceeded="explode"),
        lambda: hfcelery.queue(""),
        lambda: hfcelery.retention(-5),
    ],
)
def test_bad_decorator_arguments(make: object) -> None:
    with pytest.raises((ConfigurationError, ValueError)):
        make()  # type: ignore[operator]


def test_display_name_is_filled_with_the_arguments() -> None:
    assert to_invocation(call(jobs.critical_report, "Q3")).display_name() == "Critical report Q3"
    with pytest.raises(InvalidCallError, match="display name"):
        to_invocation(call(jobs.critical_report, name="Q3")).display_name()


def test_due_time() -> None:
    berlin = timezone(timedelta(hours=1))
    when = datetime(2030, 1, 1, 12, 0, tzinfo=berlin)
    assert due_time(when) == datetime(2030, 1, 1, 11, 0, tzinfo=UTC)
    soon = due_time(timedelta(minutes=5)) - datetime.now(UTC)
    assert timedelta(minutes=4) < soon <= timedelta(minutes=5)
    with pytest.raises(InvalidScheduleError, match="naive"):
        due_time(datetime(2030, 1, 1))
    with pytest.raises(InvalidScheduleError, match="negative"):
        due_time(timedelta(seconds=-1))
    with pytest.raises(InvalidScheduleError):
        due_time(5)  # type: ignore[arg-type]
