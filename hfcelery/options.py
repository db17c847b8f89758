"""Per-function job options, set by decorators as Hangfire sets them with attributes.

::

    @hfcelery.queue("critical")
    @hfcelery.automatic_retry(attempts=3, delays=[5, 30, 120], only_on=[TimeoutError])
    @hfcelery.display_name("Send report {0}")
    def send_report(name): ...

The decorators work on plain functions and on Celery tasks, in any order, and return what they
were given.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from hfcelery.errors import ConfigurationError
from hfcelery.validation import problem_with_job_queue

F = TypeVar("F")

#: Attribute under which a function or task keeps its options.
OPTIONS_ATTRIBUTE = "__hfcelery_options__"
#: Hangfire's default number of automatic retries.
DEFAULT_RETRY_ATTEMPTS = 10


class AttemptsExceeded(StrEnum):
    """What happens to a job whose last retry failed."""

    FAIL = "fail"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Automatic retry: how often, after how long, for which exceptions."""

    attempts: int = DEFAULT_RETRY_ATTEMPTS
    delays_seconds: tuple[float, ...] = ()
    only_on: tuple[type[BaseException], ...] = ()
    except_on: tuple[type[BaseException], ...] = ()
    on_attempts_exceeded: AttemptsExceeded = AttemptsExceeded.FAIL

    def applies_to(self, exception: BaseException) -> bool:
        """Whether a job that raised ``exception`` may be retried at all."""
        if self.except_on and isinstance(exception, self.except_on):
            return False
        return not self.only_on or isinstance(exception, self.only_on)

    def delay_seconds(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (1-based): the explicit delays, else Hangfire's."""
        if self.delays_seconds:
            return self.delays_seconds[min(attempt, len(self.delays_seconds)) - 1]
        return hangfire_retry_delay_seconds(attempt)


def hangfire_retry_delay_seconds(attempt: int, rng: random.Random | None = None) -> int:
    """Hangfire's back-off: ``(attempt-1)^4 + 15 + random(0..29) * attempt`` seconds."""
    jitter = (rng or random).randint(0, 29)
    return (attempt - 1) ** 4 + 15 + jitter * attempt


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Everything the decorators can set on one function."""

    queue: str | None = None
    retry: RetryPolicy | None = None
    display_name: str | None = None
    retention: timedelta | None = None
    concurrency: ConcurrencyLimit | None = None
    latency_timeout: timedelta | None = None


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """``@disable_concurrent_execution``: at most one run at a time per resource."""

    #: How long a run waits for the one before it to end, in seconds.
    timeout_seconds: float
    #: The resource: a ``str.format`` template filled with the job's arguments, or None for
    #: the function itself.
    key: str | None = None


def options_of(target: object) -> JobOptions | None:
    """The options set on a function or Celery task (or on the function a task wraps)."""
    options = getattr(target, OPTIONS_ATTRIBUTE, None)
    if options is None:
        run = getattr(target, "run", None)
        options = getattr(run, OPTIONS_ATTRIBUTE, None)
    return options if isinstance(options, JobOptions) else None


def _update(target: F, **changes: Any) -> F:
    current = options_of(target) or JobOptions()
    setattr(target, OPTIONS_ATTRIBUTE, replace(current, **changes))
    return target


def queue(name: str) -> Callable[[F], F]:
    """Jobs of the decorated function run from the Celery queue ``name`` by default.

    As in Hangfire, the name may be a ``str.format`` template filled with the job's arguments:
    ``@queue("reports-{0}")`` sends ``call(f, "eu")`` to ``reports-eu``.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError("hfcelery.queue needs a queue name")
    if "{" not in name:  # a template is checked once filled, at enqueue
        problem = problem_with_job_queue(name)
        if problem is not None:
            raise ConfigurationError(f"hfcelery.queue: {problem}")
    return lambda target: _update(target, queue=name)


def display_name(template: str) -> Callable[[F], F]:
    """How jobs of the decorated function are listed: ``str.format`` with the job's arguments.

    ``"Send report {0}"`` shows the first positional argument; ``{name}`` a keyword argument.
    """
    if not isinstance(template, str) or not template:
        raise ConfigurationError("hfcelery.display_name needs a template string")
    return lambda target: _update(target, display_name=template)


def disable_concurrent_execution(
    timeout_seconds: float = 600, *, key: str | None = None
) -> Callable[[F], F]:
    """At most one run of the decorated function at a time, across every worker, as
    Hangfire's ``[DisableConcurrentExecution(timeoutInSeconds)]``.

    ``key`` narrows the resource to a ``str.format`` template filled with the job's arguments
    (``key="customer-{0}"``: one run at a time per customer). A run that finds the resource
    taken waits up to ``timeout_seconds`` for it, then fails with
    :class:`~hfcelery.errors.ConcurrentExecutionTimeoutError`, which automatic retry retries.
    The lock lives in the store and belongs to the running job: it is free as soon as that job
    ends, is requeued, or its worker stops heartbeating, so a killed worker never holds it.
    """
    if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, int | float):
        raise ConfigurationError("disable_concurrent_execution needs a timeout in seconds")
    if timeout_seconds < 0:
        raise ConfigurationError("disable_concurrent_execution needs a timeout >= 0")
    if key is not None and (not isinstance(key, str) or not key):
        raise ConfigurationError("disable_concurrent_execution's key must be a template string")
    limit = ConcurrencyLimit(float(timeout_seconds), key)
    return lambda target: _update(target, concurrency=limit)


def latency_timeout(seconds: float) -> Callable[[F], F]:
    """A job of the decorated function that has not started ``seconds`` after it was created
    is deleted instead of run, as Hangfire's ``[LatencyTimeout(timeoutInSeconds)]``: for work
    that is worthless late (a notification, a cache refresh)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ConfigurationError("hfcelery.latency_timeout needs a number of seconds >= 0")
    return lambda target: _update(target, latency_timeout=timedelta(seconds=seconds))


def retention(period: timedelta | float) -> Callable[[F], F]:
    """Succeeded and Deleted jobs of the decorated function are kept for ``period``."""
    seconds = period.total_seconds() if isinstance(period, timedelta) else float(period)
    if seconds < 0:
        raise ConfigurationError("hfcelery.retention needs a period >= 0")
    return lambda target: _update(target, retention=timedelta(seconds=seconds))


def automatic_retry(
    attempts: int = DEFAULT_RETRY_ATTEMPTS,
    *,
    delays: Sequence[float] | None = None,
    only_on: Iterable[type[BaseException]] = (),
    except_on: Iterable[type[BaseException]] = (),
    on_attempts_exceeded: AttemptsExceeded | str = AttemptsExceeded.FAIL,
) -> Callable[[F], F]:
    """Retry failed jobs of the decorated function, as Hangfire's ``AutomaticRetry``.

    ``attempts`` retries (0 turns retrying off) after ``delays`` seconds (the last one repeats)
    or Hangfire's growing back-off; only for exceptions in ``only_on`` (if given) and never
    for those in ``except_on``. When the last retry fails the job stays Failed, or is Deleted
    with ``on_attempts_exceeded="delete"``.
    """
    if not isinstance(attempts, int) or attempts < 0:
        raise ConfigurationError("automatic_retry attempts must be an integer >= 0")
    delays_seconds = tuple(float(d) for d in delays or ())
    if any(d < 0 for d in delays_seconds):
        raise ConfigurationError("automatic_retry delays must be >= 0")
    policy = RetryPolicy(
        attempts=attempts,
        delays_seconds=delays_seconds,
        only_on=_exception_types(only_on),
        except_on=_exception_types(except_on),
        on_attempts_exceeded=AttemptsExceeded(on_attempts_exceeded),
    )
    return lambda target: _update(target, retry=policy)


def _exception_types(types: Iterable[type[BaseException]]) -> tuple[type[BaseException], ...]:
    result = tuple(types)
    for t in result:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise ConfigurationError(f"{t!r} is not an exception type")
    return result
