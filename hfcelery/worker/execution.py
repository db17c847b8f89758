"""Moving jobs through their states as a worker runs them.

``before_start`` claims the job (a compare-and-set in the store) and skips a message whose job
is finished, deleted or running elsewhere; Celery's signals record the outcome. Failures Celery
sees only in the worker's main process (a lost child, a hard time limit, a revoke) arrive there
through the same signals or through :class:`JobRequest`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import itertools
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery import Task, states
from celery._state import get_current_task
from celery.exceptions import Ignore, Reject
from celery.utils.saferepr import saferepr
from celery.utils.serialization import UnpickleableExceptionWrapper, get_pickled_exception
from celery.worker.request import Request

from hfcelery.calls import (
    JOB_HEADER,
    PERFORM_TASK_NAME,
    STAMP_HEADER,
    TRACKED_HEADER,
    load_function,
)
from hfcelery.errors import (
    ConcurrentExecutionTimeoutError,
    InvalidCallError,
    JobFailedError,
    JobPerformanceError,
    LostWorkerLimitError,
    StoreDataError,
    StoreError,
    StoreUnavailableError,
)
from hfcelery.extension import Extension, extension_of, find_extension
from hfcelery.filters import (
    ApplyStateContext,
    CandidateState,
    ElectStateContext,
    FilterSet,
    PerformedContext,
    PerformingContext,
    call_server_filter,
    filters_for,
)
from hfcelery.jsonutil import from_json, to_json, to_json_or_repr
from hfcelery.options import JobOptions, options_of
from hfcelery.publishing import publish
from hfcelery.records import Dispatch, NewJob
from hfcelery.states import State
from hfcelery.store.jobs import LOST_WORKER_REASON
from hfcelery.validation import (
    DEFAULT_MAX_TEXT_CHARS,
    problem_with_count,
    problem_with_function_path,
    problem_with_job_id,
    storable_text,
    storable_value,
)
from hfcelery.worker.context import parameter_store
from hfcelery.worker.health import ServiceHealth
from hfcelery.worker.running import ATTRIBUTE as RUNNING_ATTRIBUTE
from hfcelery.worker.running import RunningJob, running_job

logger = logging.getLogger(__name__)

#: Pause before handing a message back while the store is unreachable, to avoid a hot loop.
STORE_DOWN_BACKOFF_SECONDS = 1.0
#: hfcelery's own tasks that are not jobs.
INTERNAL_TASK_NAMES = frozenset({"hfcelery.recurring.fire"})
#: Why a job that Celery cut off (``Request.cancel``) is Enqueued again.
CANCELLED_REASON = (
    "Server stopped before the job ended (Celery cancelled the running task: a cold or soft "
    "shutdown, or a lost broker connection)"
)
#: Celery's own tasks: run as Celery runs them, never claimed as jobs.
CELERY_TASK_PREFIX = "celery."
#: What ``Task.replace()`` raises (as ``Ignore``) once it sent a group or chord in its place.
REPLACED_BY_GROUP = "Replaced by new task"
REPLACED_REASON = "Replaced by a group (Celery Task.replace); its tasks are jobs of their own"


def perform(task: Task, function_path: str, /, *args: Any, **kwargs: Any) -> Any:
    """The Celery task that performs a plain function job: ``function_path(*args, **kwargs)``.

    An ``async def`` function (or one that returns an awaitable) is awaited on the event loop
    of the worker thread, so loop-bound resources can be kept between jobs.
    """
    extension = extension_of(task.app)
    func = load_function(function_path, extension.module_allowed)
    job = running_job(task.request)
    if job is None:  # not claimed (an eager call, a worker without hfcelery's server)
        return _call(func, args, kwargs)
    job.options = options_of(func)
    filters = job.filters = filters_for(func)
    _check_latency(extension, task, job.options)
    _take_concurrency_lock(extension, task, job.options, function_path, args, kwargs)
    if not filters.server_filters:
        return _call(func, args, kwargs)
    context = _performing_context(extension, task, function_path, args, kwargs)
    performed = filters.perform(context, lambda: _call(func, args, kwargs))
    if performed.canceled:
        _cancel_by_filter(extension, task, context)
    return performed.result


def _call(func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        return _event_loop().run_until_complete(_awaited(result))
    return result


def _performing_context(
    extension: Extension, task: Task, function: str, args: Any, kwargs: Any
) -> PerformingContext:
    request = task.request
    return PerformingContext(
        request.id,
        function,
        list(args or ()),
        dict(kwargs or {}),
        _job(task).retry_count,
        parameter_store(extension, request),
    )


def _cancel_by_filter(extension: Extension, task: Task, context: PerformingContext) -> NoReturn:
    """A server filter canceled the run (``on_performing``): the job is Deleted, with
    Hangfire's reason, and its message acknowledged."""
    request = task.request
    reason = f"Canceled by filter '{context.items.get('canceled_by', '?')}'"
    _record(
        extension,
        task,
        CandidateState(State.DELETED, reason),
        retention=_retention(task, extension.config.deleted_retention_seconds),
    )
    _job(task).ended = True  # ended here: the task's end records nothing more
    raise SkippedMessage(request.id, State.DELETED.value, reason)


def _job(task: Task) -> RunningJob:
    """The job the task runs (it was claimed)."""
    job = running_job(task.request)
    assert job is not None, "not a claimed job"
    return job


_loops = threading.local()


def _event_loop() -> asyncio.AbstractEventLoop:
    """The event loop of this worker thread, made anew in a forked process."""
    loop: asyncio.AbstractEventLoop | None = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed() or getattr(_loops, "pid", None) != os.getpid():
        loop = asyncio.new_event_loop()
        _loops.loop, _loops.pid = loop, os.getpid()
    return loop


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def worker_id() -> str:
    """Which worker of a server runs the current job: the process and thread."""
    return f"{os.getpid()}.{threading.get_native_id()}"


def before_start(extension: Extension, task: Task, task_id: str, args: Any, kwargs: Any) -> None:
    """Claim the job before the task runs; raise Ignore to skip it (the message is acked)."""
    request = task.request
    if extension.server_id is None or request.is_eager:
        return
    if task.name in INTERNAL_TASK_NAMES or task.name.startswith(CELERY_TASK_PREFIX):
        # Celery's own tasks (chord_unlock, accumulate, ...) are never jobs, even when Celery
        # gives one a job's id: ``replace()`` with a group finishes with ``celery.accumulate``
        # under the replaced task's id.
        return
    problem = message_problem(task, request, args)
    if problem is not None and _settle_invalid_message(
        extension, task, request, args, kwargs, problem
    ):
        return  # a plain Celery task whose id the store cannot hold: it runs untracked
    try:
        claimed = extension.store.claim(
            task_id,
            server_id=extension.server_id,
            worker_id=worker_id(),
            server_timeout=timedelta(seconds=extension.config.server_timeout_seconds),
            attempt=int(request.retries or 0),
            stamp=_stamp(request),
            untracked=functools.partial(_untracked_job, task, task_id, args, kwargs, request),
        )
    except StoreDataError as exc:
        _settle_invalid_message(extension, task, request, args, kwargs, str(exc))
        raise AssertionError("unreachable") from exc  # the settle raised Ignore
    except StoreError as exc:
        _hand_back(task_id, exc)
    _CLAIM_STORE.answered()
    if claimed is None:
        raise _skipped(extension, task_id)
    job = RunningJob(
        id=task_id,
        claim=claimed.number,
        created_at=claimed.created_at,
        retry_count=claimed.retry_count,
        started=time.monotonic(),
        started_at=datetime.now(UTC),
    )
    setattr(request, RUNNING_ATTRIBUTE, job)
    if task.name == PERFORM_TASK_NAME:
        return  # the function's options and filters are read in perform()
    options = job.options = options_of(task)
    if options is not None:  # a Celery task's own decorators
        _check_latency(extension, task, options)
        _take_concurrency_lock(extension, task, options, task.name, args, kwargs)
    filters = job.filters = filters_for(task, type(task))
    if filters.server_filters:
        # A Celery task runs Celery's way: its server filters are called around it (here and
        # as it ends), and an exception they mark handled stays Celery's failure.
        # As in Hangfire, on_performed runs only for the filters whose on_performing ran.
        context = job.performing = _performing_context(extension, task, task.name, args, kwargs)
        for instance in filters.server_filters:
            job.performed_filters = (instance, *job.performed_filters)
            call_server_filter(instance, "on_performing", context)
            if context.canceled:
                context.items.setdefault("canceled_by", type(instance).__name__)
                _performed_filters(task, canceled=True, skip=instance)
                _cancel_by_filter(extension, task, context)


def _check_latency(extension: Extension, task: Task, options: JobOptions | None) -> None:
    """``@latency_timeout``: a job that started too long after it was created is Deleted
    instead of run (Hangfire's wording in the reason)."""
    limit = options.latency_timeout if options is not None else None
    request = task.request
    if limit is None or running_job(request) is None:
        return
    job = _job(task)
    waited = datetime.now(UTC) - job.created_at
    if waited <= limit:
        return
    seconds = f"{limit.total_seconds():g}"
    reason = f"Background job has exceeded latency timeout of {seconds} second(s)"
    logger.warning("hfcelery job %s waited %s; deleted: %s", request.id, waited, reason)
    latency = {"latency_ms": round(waited / timedelta(milliseconds=1), 3)}
    _finish(
        extension, request.id, State.DELETED, reason, latency,
        worker=worker_id(), claim=job.claim,
        retention=_retention(task, extension.config.deleted_retention_seconds),
    )  # fmt: skip
    job.ended = True  # ended here: the task's end records nothing more
    raise SkippedMessage(request.id, State.DELETED.value, reason)


#: How often a run under ``@disable_concurrent_execution`` looks whether the lock is free.
CONCURRENCY_POLL_SECONDS = 0.25


def _take_concurrency_lock(
    extension: Extension,
    task: Task,
    options: JobOptions | None,
    function: str,
    args: Any,
    kwargs: Any,
) -> None:
    """Hold the store lock of ``@disable_concurrent_execution`` for this run, waiting up to
    its timeout; raise ConcurrentExecutionTimeoutError (retried by automatic retry) after."""
    limit = options.concurrency if options is not None else None
    if limit is None or running_job(task.request) is None:
        return
    resource = function
    if limit.key is not None:
        try:
            resource = f"{function}:{limit.key.format(*(args or ()), **(kwargs or {}))}"
        except (IndexError, KeyError, ValueError, AttributeError) as exc:
            raise InvalidCallError(
                f"the disable_concurrent_execution key {limit.key!r} of {function} does not "
                f"fit its arguments: {exc!r}"
            ) from exc
    name = f"concurrency:{resource}"
    if len(name) > LOCK_NAME_LENGTH:
        name = "concurrency:" + hashlib.sha256(resource.encode()).hexdigest()
    server_timeout = timedelta(seconds=extension.config.server_timeout_seconds)
    deadline = time.monotonic() + limit.timeout_seconds
    logged = False
    while not _until_stored(
        extension,
        f"the lock of job {task.request.id}",
        lambda: extension.store.try_job_lock(name, task.request.id, server_timeout),
    ):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConcurrentExecutionTimeoutError(resource, limit.timeout_seconds)
        if not logged:
            logger.info("hfcelery job %s waits for another run of %s", task.request.id, resource)
            logged = True
        time.sleep(min(CONCURRENCY_POLL_SECONDS, remaining))
    _job(task).lock = name


#: The store's limit on lock names (longer resources are hashed).
LOCK_NAME_LENGTH = 100


class SkippedMessage(Ignore):  # type: ignore[misc]
    """``before_start`` skipped a message: its job is finished, deleted, running elsewhere or
    was sent again since. Acknowledged like Celery's :class:`Ignore`; it carries the job's state
    to the worker's main process, where :class:`JobRequestMixin` announces the final state of a
    finished job to Flower, ``celery events`` and the result backend."""

    def __init__(self, job_id: str, state: str | None = None, reason: str | None = None) -> None:
        super().__init__(job_id, state, reason)
        self.job_id = job_id
        self.state = state
        self.reason = reason

    def __str__(self) -> str:
        return f"job {self.job_id} skipped: it is {self.state or 'gone'}"


def _skipped(extension: Extension, task_id: str) -> SkippedMessage:
    try:
        outcome = extension.store.job_outcome(task_id)
    except StoreError:
        outcome = None
    state, reason = outcome if outcome is not None else (None, None)
    if state is State.PROCESSING:
        why = "it is Processing (were its worker dead, maintenance requeues it)"
    elif state is not None and state.is_final:
        why = f"it is {state.value}"
    else:
        why = "the message is older than the job's latest send"
    logger.info("hfcelery skipped job %s: %s", task_id, why)
    return SkippedMessage(task_id, state.value if state is not None else None, reason)


#: The store as this worker process's claims see it: an outage is logged once per process,
#: not once per message handed back.
_CLAIM_STORE = ServiceHealth("store (claims)")


class HandedBack(Reject):  # type: ignore[misc]
    """A message given back to the broker because the store could not take its claim."""


class _QuietHandBacks(logging.Filter):
    """Celery logs every rejected message at WARNING, with its traceback: during a store
    outage that is a traceback per message and redelivery. A hand-back is logged by
    :data:`_CLAIM_STORE` instead (once when the outage starts, then once a minute) and at
    DEBUG per message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], HandedBack))


_QUIET_HAND_BACKS = _QuietHandBacks()


def quiet_hand_backs() -> None:
    """Keep Celery's tracer from logging hand-backs (once per process, idempotent)."""
    logging.getLogger("celery.app.trace").addFilter(_QUIET_HAND_BACKS)


def _hand_back(task_id: object, exc: BaseException) -> NoReturn:
    """The store is unreachable: give the message back to the broker after a pause."""
    _CLAIM_STORE.failed(exc, "claim")
    logger.debug("hfcelery cannot claim job %r, message handed back: %s", task_id, exc)
    time.sleep(STORE_DOWN_BACKOFF_SECONDS)
    raise HandedBack(exc, requeue=True) from exc


def message_problem(task: Task, request: Any, args: Any) -> str | None:
    """What makes a message impossible to record as a job, or None.

    Checked before the store sees the message: its id, the function a ``hfcelery.perform``
    message names, and the ``retries`` header.
    """
    problem = problem_with_job_id(request.id)
    if problem is not None:
        return problem
    if task.name == PERFORM_TASK_NAME:
        function = args[0] if isinstance(args, list | tuple) and args else None
        if not isinstance(function, str):
            return "a hfcelery.perform message must name its function first"
        problem = problem_with_function_path(function)
        if problem is not None:
            return problem
    return problem_with_count(request.retries or 0, "retries header")


def _settle_invalid_message(
    extension: Extension, task: Task, request: Any, args: Any, kwargs: Any, problem: str
) -> bool:
    """Settle a message the store cannot record as it is, so it is never handed back forever.

    A plain Celery task whose id the store cannot hold runs as Celery would run it, untracked
    (True is returned). Otherwise the job is recorded Failed with storable fields and the
    reason, when its id can key a row; if not, the message is noted as dropped. Either way
    :class:`Ignore` is raised, so the message is acknowledged without running.
    """
    is_job = task.name == PERFORM_TASK_NAME or getattr(request, JOB_HEADER, False)
    reason = f"Invalid message: {problem}"
    if problem_with_job_id(request.id) is not None:
        if not is_job:
            logger.warning(
                "hfcelery runs task %r (%s) without tracking it: %s", request.id, task.name, problem
            )
            return True
        _drop(extension, request.id, task.name, reason)
    else:
        try:
            recorded = extension.store.fail_invalid_message(
                _invalid_job(task, request, args, kwargs), reason
            )
        except StoreDataError as exc:
            _drop(extension, request.id, task.name, f"{reason}; not recordable: {exc}")
        except StoreError as exc:
            _hand_back(request.id, exc)
        else:
            logger.error(
                "hfcelery did not run message %r (%s): %s%s",
                request.id,
                task.name,
                reason,
                "" if recorded else " (its job is in another state and was left alone)",
            )
    raise Ignore()


def _drop(extension: Extension, message_id: object, task_name: str, reason: str) -> None:
    logger.error("hfcelery dropped message %r (%s): %s", message_id, task_name, reason)
    try:
        extension.store.record_dropped_message(message_id, task_name, reason, extension.server_id)
    except StoreError:
        logger.exception("hfcelery could not note the dropped message %r", message_id)


def _invalid_job(task: Task, request: Any, args: Any, kwargs: Any) -> NewJob:
    """The job of an invalid message, every field made storable."""
    args = list(args) if isinstance(args, list | tuple) else [args]
    function: object = task.name
    if task.name == PERFORM_TASK_NAME and args:
        function, args = args[0], args[1:]
    queue = (request.delivery_info or {}).get("routing_key") or task.app.conf.task_default_queue
    return NewJob(
        id=str(request.id),
        function=storable_text(function if isinstance(function, str) else repr(function), 200),
        task_name=storable_text(task.name, 200),
        args_json=to_json_or_repr(args),
        kwargs_json=to_json_or_repr(kwargs if isinstance(kwargs, dict) else {}),
        queue=storable_text(str(queue), 200),
        state=State.FAILED,
        tracked=not getattr(request, JOB_HEADER, False),
    )


def _stamp(request: Any) -> str | None:
    """The send stamp a message carries (see ``calls.STAMP_HEADER``), if it is a usable one."""
    stamp = getattr(request, STAMP_HEADER, None)
    return stamp if isinstance(stamp, str) and 0 < len(stamp) <= 32 else None


def _untracked_job(task: Task, task_id: str, args: Any, kwargs: Any, request: Any) -> NewJob:
    args = list(args or ())
    function = task.name
    if task.name == PERFORM_TASK_NAME and args and isinstance(args[0], str):
        function, args = args[0], args[1:]
    queue = (request.delivery_info or {}).get("routing_key") or task.app.conf.task_default_queue
    return NewJob(
        id=task_id,
        function=function,
        task_name=task.name,
        args_json=to_json_or_repr(args),
        kwargs_json=to_json_or_repr(dict(kwargs or {})),
        queue=str(queue),
        state=State.ENQUEUED,
        reason="Recorded by the worker: the message arrived without a stored job",
        data={"queue": queue},
        sent_stamp=_stamp(request),
    )


def _claimed(task: Task) -> Extension | None:
    if running_job(task.request) is None:
        return None
    return find_extension(task.app)


def _options(task: Task) -> JobOptions:
    """The decorator options of the running job's function (perform) or task."""
    job = running_job(task.request)
    return (job.options if job is not None else None) or options_of(task) or JobOptions()


def _retention(task: Task, configured_seconds: float) -> timedelta:
    return _options(task).retention or timedelta(seconds=configured_seconds)


def cancellation_requested() -> bool:
    """Whether the running job was deleted, requeued or taken over while it runs (a requeued
    job claimed again, by this worker too, is another run).

    Call it now and then from a long job and return early when it says True. Outside a job it
    is False.
    """
    task = get_current_task()
    job = running_job(task.request) if task is not None else None
    if task is None or job is None:
        return False
    extension = find_extension(task.app)
    if extension is None:
        return False
    holder = extension.store.processing_holder(task.request.id)
    return holder is None or not holder.held_by(extension.server_id, job.claim)


def on_task_success(extension: Extension, sender: Task, result: Any) -> None:
    """A task returned: the job is Succeeded, or what its elect-state filters elect."""
    if running_job(sender.request) is None or extension.server_id is None:
        return
    job = _job(sender)
    duration_ms = round((time.monotonic() - job.started) * 1000, 3)
    latency_ms = round((job.started_at - job.created_at).total_seconds() * 1000, 3)
    data = {"duration_ms": duration_ms, "latency_ms": latency_ms}
    data.update(result_data(result, extension.config.max_stored_text_chars))
    candidate = CandidateState(State.SUCCEEDED, None, data)
    _performed_filters(sender, result=result)
    _record(
        extension,
        sender,
        candidate,
        retention=_retention(sender, extension.config.succeeded_retention_seconds),
    )


def _performed_filters(
    task: Task,
    *,
    result: Any = None,
    exception: BaseException | None = None,
    canceled: bool = False,
    skip: object = None,
) -> PerformedContext | None:
    """The ``on_performed`` half of a Celery task's server filters (see before_start), in
    reverse order; an exception of a filter is logged (the task's outcome stands)."""
    job = running_job(task.request)
    context = job.performing if job is not None else None
    if job is None or context is None or job.filters is None:
        return None
    job.performing = None
    performed = context.performed(result=result, exception=exception, canceled=canceled)
    for instance in job.performed_filters:  # the latest first
        if instance is skip:  # the filter that canceled: no on_performed, as in Hangfire
            continue
        try:
            call_server_filter(instance, "on_performed", performed)
        except JobPerformanceError:
            logger.exception("hfcelery job %s: a server filter failed", context.job_id)
    return performed


def on_task_failure(
    extension: Extension,
    sender: Task,
    task_id: str,
    exception: BaseException,
    einfo: ExceptionInfo | None,
) -> None:
    """Record Failed, in the child (task raised) or the main process (lost, time limit)."""
    if extension.server_id is None or sender.name in INTERNAL_TASK_NAMES:
        return
    request = sender.request
    in_child = running_job(request) is not None and request.id == task_id
    if in_child:
        # Still inside Celery's except block: the original exception, not the picklable copy.
        exception = sys.exc_info()[1] or exception
    max_chars = extension.config.max_stored_text_chars
    data = exception_data(exception, einfo, max_chars)
    reason = storable_text(f"{type(exception).__name__}: {safe_str(exception)}", max_chars)
    if in_child:
        _performed_filters(sender, exception=exception)
        _record(extension, sender, CandidateState(State.FAILED, reason, data, None, exception))
        return
    _finish(extension, task_id, State.FAILED, reason, data, worker=None, claim=None)


def _job_filters(task: Task) -> FilterSet:
    """The running job's filters: its function's or task's (see perform and before_start),
    else the global ones (a function that could not be loaded)."""
    job = running_job(task.request)
    found = job.filters if job is not None else None
    return found if found is not None else filters_for(None)


def _is_tracked(request: Any) -> bool:
    """Whether the job is a plain Celery task that hfcelery tracks (not created by it)."""
    return not getattr(request, JOB_HEADER, False) or bool(getattr(request, TRACKED_HEADER, False))


def _record(
    extension: Extension,
    task: Task,
    candidate: CandidateState,
    *,
    retention: timedelta | None = None,
) -> None:
    """Elect the running job's next state with its elect-state filters (automatic retry is
    one), write it (with the states it traversed), then call its apply-state filters."""
    request = task.request
    filters = _job_filters(task)
    function = _function_name(task)
    context = ElectStateContext(
        request.id,
        function,
        State.PROCESSING,
        candidate,
        retry_count=_job(task).retry_count,
        tracked=_is_tracked(request),
        parameter_store=parameter_store(extension, request),
        config=extension.config,
    )
    try:
        elected = filters.elect(context)
    except Exception as exc:
        # Hangfire would requeue the job and run it again; a filter that always fails would
        # then run it forever. Here it ends Failed, with the filter's error, not retried.
        logger.exception("hfcelery job %s: an elect-state filter failed", request.id)
        elected = CandidateState(
            State.FAILED,
            storable_text(f"An elect-state filter failed: {type(exc).__name__}: {safe_str(exc)}"),
            exception_data(exc, None, extension.config.max_stored_text_chars),
            None,
            exc,
        )
        context = ElectStateContext(request.id, function, State.PROCESSING, elected)
    final = elected.state
    if final in (State.SUCCEEDED, State.DELETED) and retention is None:
        configured = (
            extension.config.succeeded_retention_seconds
            if final is State.SUCCEEDED
            else extension.config.deleted_retention_seconds
        )
        retention = _retention(task, configured)
    elif not final.is_final:
        retention = None
    data = dict(elected.data)
    if not context.traversed_states and final is not State.ENQUEUED:
        applied = _finish(
            extension,
            request.id,
            final,
            elected.reason,
            data,
            worker=worker_id(),
            retention=retention,
            claim=_job(task).claim,
            due_at=elected.due_at,
        )
    else:
        states = [(c.state, c.reason, dict(c.data)) for c in context.traversed_states]
        states.append((final, elected.reason, data))
        assert extension.server_id is not None
        server_id = extension.server_id
        try:
            applied = _until_stored(
                extension,
                f"the outcome of job {request.id} ({final.value})",
                lambda: extension.store.finish_elected(
                    request.id,
                    states,
                    server_id=server_id,
                    worker_id=worker_id(),
                    claim=_job(task).claim,
                    due_at=elected.due_at,
                    retention=retention,
                    publish=_publisher(task.app) if final is State.ENQUEUED else None,
                ),
            )
        except StoreError as exc:  # the job stays Processing; the maintenance loop requeues it
            logger.error("hfcelery gave up recording job %s as %s: %s", request.id, final, exc)
            return
        if not applied:
            logger.info(
                "hfcelery: job %s changed state while running; %s not recorded", request.id, final
            )
    if applied and filters.apply_filters:
        filters.applied(
            ApplyStateContext(request.id, function, State.PROCESSING, final, elected.reason, data)
        )


def _function_name(task: Task) -> str:
    if task.name == PERFORM_TASK_NAME and task.request.args:
        return str(task.request.args[0])
    return str(task.name)


def _publisher(app: Any) -> Callable[[Dispatch], None]:
    return functools.partial(publish, app)


def record_celery_retry(job_id: object, eta: object, retries: object) -> None:
    """A Celery ``self.retry()`` of the running job is publishing its next attempt's message:
    record the job Scheduled now, before that message can reach any worker.

    Only the job this worker process runs is changed, and only with its own claim, so a
    message that merely carries a ``retries`` header changes nothing. A message claims a
    Scheduled job only once it is due (see ``Store.claim``).
    """
    task = get_current_task()
    if task is None or task.request.id != job_id or not isinstance(retries, int):
        return
    extension = _claimed(task)
    if extension is None or extension.server_id is None:
        return
    request = task.request
    due_at = _retry_due_at(eta)
    exception = sys.exc_info()[1]  # self.retry() is usually called while handling one
    cause = f": {safe_str(exception)}" if exception is not None else ""
    _finish(
        extension,
        request.id,
        State.SCHEDULED,
        storable_text(
            f"Celery retry attempt {retries}{cause}", extension.config.max_stored_text_chars
        ),
        {"attempt": retries, "enqueue_at": due_at.isoformat()},
        worker=worker_id(),
        claim=_job(task).claim,
        due_at=due_at,
    )
    _job(task).retry_recorded = True


def on_task_retry(extension: Extension, sender: Task, request: Any, reason: Any) -> None:
    """A Celery ``self.retry()`` whose message went out without being recorded (it is recorded
    as the message is published, see :func:`record_celery_retry`): Scheduled now."""
    if running_job(sender.request) is None or extension.server_id is None or request is None:
        return
    if _job(sender).retry_recorded:
        return
    attempt = int(request.retries or 0) + 1
    due_at = _retry_due_at(getattr(reason, "when", None))
    _finish(
        extension,
        request.id,
        State.SCHEDULED,
        f"Celery retry attempt {attempt}: {getattr(reason, 'exc', None) or reason}",
        {"attempt": attempt, "enqueue_at": due_at.isoformat()},
        worker=worker_id(),
        claim=_job(sender).claim,
        due_at=due_at,
    )


def _retry_due_at(when: Any) -> datetime:
    now = datetime.now(UTC)
    if isinstance(when, int | float):
        return now + timedelta(seconds=when)
    if isinstance(when, str):  # the ``eta`` header
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            return now
    if isinstance(when, datetime):
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return now


def on_task_postrun(
    extension: Extension, sender: Task, task_id: str, retval: Any, state: str
) -> None:
    """A task that ended by raising ``Reject`` or ``Ignore`` (no success or failure signal).

    ``Reject(requeue=True)``: the broker hands the same message back, so the job goes back to
    Enqueued for it. ``Reject`` without requeue: Failed. ``Ignore``: Deleted, unless the job
    was taken away meanwhile (``self.replace()`` sends the job again before it ignores), or
    ``self.replace()`` put a group in its place: Succeeded, as Celery's result says.
    """
    request = sender.request
    if running_job(request) is None or extension.server_id is None or request.id != task_id:
        return
    lock = _job(sender).lock
    if lock is not None:  # free anyway once the job leaves Processing; this tidies the row
        try:
            extension.store.release_lock(lock, task_id)
        except StoreError:
            logger.debug("hfcelery could not release lock %s", lock, exc_info=True)
    if state == states.REJECTED:
        requeue = bool(getattr(retval, "requeue", False))
        text = storable_text(f"Rejected by the task: {safe_str(getattr(retval, 'reason', retval))}")
        if requeue:
            try:
                extension.store.release_processing(
                    task_id, server_id=extension.server_id, reason=f"{text}; message requeued"
                )
            except StoreError:
                logger.exception("hfcelery could not requeue rejected job %s", task_id)
            return
        _finish(
            extension, task_id, State.FAILED, text,
            {"exception_type": "celery.exceptions.Reject"},
            worker=worker_id(), claim=_job(sender).claim,
        )  # fmt: skip
    elif state == states.IGNORED and str(retval) == REPLACED_BY_GROUP:
        # ``replace()`` with a group or chord: the group runs under other ids and Celery's
        # ``celery.accumulate`` ends this id with SUCCESS, so the job has done its part.
        _finish(
            extension, task_id, State.SUCCEEDED, REPLACED_REASON, {},
            worker=worker_id(), claim=_job(sender).claim,
            retention=_retention(sender, extension.config.succeeded_retention_seconds),
        )  # fmt: skip
    elif state == states.IGNORED:
        reason = "Ignored by the task (celery.exceptions.Ignore)"
        _finish(
            extension, task_id, State.DELETED, reason, {},
            worker=worker_id(), claim=_job(sender).claim,
            retention=_retention(sender, extension.config.deleted_retention_seconds),
        )  # fmt: skip


def on_task_revoked(extension: Extension, request: Any, terminated: bool) -> None:
    """A revoked message is not run (or was terminated): the job is Deleted."""
    if request is None:
        return
    extension.store.revoke(
        request.id,
        reason="Terminated by a revoke" if terminated else "Revoked",
        retention=timedelta(seconds=extension.config.deleted_retention_seconds),
    )


def on_task_unknown(extension: Extension, name: str, id: str) -> None:
    """A message for a task this worker does not know: its job, if any, fails."""
    if not id:
        return
    extension.store.fail_enqueued(
        id,
        reason=f"Unknown task {name!r}: no worker on this queue has it registered",
        data={"exception_type": "celery.exceptions.NotRegistered", "task": name},
        transition="unknown_task",
    )


def _finish(
    extension: Extension,
    job_id: str,
    state: State,
    reason: str | None,
    data: dict[str, Any],
    *,
    worker: str | None,
    retention: timedelta | None = None,
    claim: int | None = None,
    due_at: datetime | None = None,
) -> bool:
    """Write a job's outcome; whether it was recorded (False: it was taken away meanwhile, or
    the store could not take it)."""
    assert extension.server_id is not None
    server_id = extension.server_id
    data.setdefault("server_id", server_id)
    try:
        applied = _until_stored(
            extension,
            f"the outcome of job {job_id} ({state.value})",
            lambda: extension.store.finish(
                job_id,
                server_id=server_id,
                worker_id=worker,
                state=state,
                reason=reason,
                data=data,
                retention=retention,
                claim=claim,
                due_at=due_at,
            ),
        )
    except StoreDataError as exc:
        # The outcome itself cannot be stored; retrying it would fail forever, and leaving the
        # job Processing would make it run again. Record that instead.
        logger.error("hfcelery cannot store the outcome of job %s (%s): %s", job_id, state, exc)
        if state is State.FAILED and data.get("exception_type") == _UNSTORABLE:
            return False
        _finish(
            extension,
            job_id,
            State.FAILED,
            f"The job's outcome ({state}) could not be stored: {exc}",
            {"exception_type": _UNSTORABLE, "exception_message": str(exc)},
            worker=worker,
            claim=claim,
        )
        return False
    except StoreError as exc:
        # Given up: the job stays Processing; this server's maintenance loop requeues it once
        # the task is no longer running, and it runs again. Celery must not see the error: it
        # would turn a success into a failure.
        logger.error("hfcelery gave up recording job %s as %s: %s", job_id, state.value, exc)
        return False
    if applied:
        return True
    if _rewrite_lost_job(extension, job_id, state, reason, data, retention):
        return True
    logger.info("hfcelery: job %s changed state while running; %s not recorded", job_id, state)
    return False


def _rewrite_lost_job(
    extension: Extension,
    job_id: str,
    state: State,
    reason: str | None,
    data: dict[str, Any],
    retention: timedelta | None,
) -> bool:
    """A finish that found no job at all: the store lost its row while it ran (an asynchronous
    commit a database crash forgot). Write it from the running task's message, finished."""
    task = get_current_task()
    if task is None or task.request.id != job_id or not state.is_final:
        return False
    request = task.request
    job = _untracked_job(task, job_id, request.args, request.kwargs, request)
    try:
        written = extension.store.record_lost_outcome(
            job, state=state, reason=reason, data=data, retention=retention
        )
    except StoreError as exc:
        logger.error("hfcelery could not rewrite lost job %s: %s", job_id, exc)
        return False
    if written:
        logger.warning("hfcelery: the store lost job %s while it ran; rewritten %s", job_id, state)
    return written


_UNSTORABLE = "hfcelery.errors.StoreDataError"
#: Pauses between attempts to record an outcome while the store is unreachable.
OUTCOME_RETRY_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)

T = TypeVar("T")


def _until_stored(extension: Extension, what: str, write: Callable[[], T]) -> T:
    """Run ``write`` until the store takes it, for at most ``hfcelery_outcome_retry_seconds``.

    A job's outcome is worth waiting for: the task's message stays unacknowledged meanwhile (the
    worker acknowledges it when this returns), so an outcome is never lost to a database
    restart, and the job never runs again for it. Logged once when it starts waiting and once
    when it is stored.
    """
    deadline = time.monotonic() + extension.config.outcome_retry_seconds
    started = time.monotonic()
    for attempt in itertools.count():
        try:
            result = write()
        except StoreUnavailableError as exc:
            if time.monotonic() >= deadline:
                raise
            if attempt == 0:
                logger.warning(
                    "hfcelery cannot record %s yet (%s); retrying for up to %.0f s",
                    what,
                    exc,
                    extension.config.outcome_retry_seconds,
                )
            pause = OUTCOME_RETRY_BACKOFF_SECONDS[
                min(attempt, len(OUTCOME_RETRY_BACKOFF_SECONDS) - 1)
            ]
            time.sleep(max(min(pause, deadline - time.monotonic()), 0))
            continue
        if attempt:
            logger.warning("hfcelery recorded %s after %.1f s", what, time.monotonic() - started)
        return result
    raise AssertionError("unreachable")


def result_data(result: Any, max_chars: int) -> dict[str, Any]:
    """The Succeeded state's ``result``, as it can be stored and read back.

    A result JSON cannot carry, that does not read back (kombu's decoder refuses some
    objects), or whose JSON is longer than ``max_chars`` is kept as its (cut) repr, with a
    ``result_note`` saying so.
    """
    if result is None or isinstance(result, bool | int | float):
        return {"result": result}
    try:
        text = to_json(result)
        from_json(text)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        note = f"stored as its repr: JSON cannot carry it ({type(exc).__name__})"
    else:
        if len(text) <= max_chars:
            return {"result": storable_value(result, max_chars)}
        note = f"stored as its repr, cut: its JSON has {len(text)} characters"
    return {"result": storable_text(safe_repr(result), max_chars), "result_note": note}


def safe_str(value: object) -> str:
    """``str(value)``, or a placeholder when its ``__str__`` fails."""
    try:
        return str(value)
    except Exception as exc:  # an exception's own __str__ may be broken
        return f"<{type(value).__name__}: str() failed with {type(exc).__name__}>"


def safe_repr(value: object) -> str:
    """``repr(value)``, or a placeholder when its ``__repr__`` fails or recurses too deep."""
    try:
        return repr(value)
    except (Exception, RecursionError) as exc:
        return f"<{type(value).__name__}: repr() failed with {type(exc).__name__}>"


def exception_data(
    exception: BaseException,
    einfo: ExceptionInfo | None,
    max_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> dict[str, Any]:
    """Hangfire's failed-state data: exception type, message and details (traceback), each
    made storable (see :func:`hfcelery.validation.storable_text`)."""
    if isinstance(exception, UnpickleableExceptionWrapper):
        # Celery could not pickle the task's exception; it kept its name and arguments.
        exc_type = f"{exception.exc_module}.{exception.exc_cls_name}"
        message = ", ".join(safe_str(a) for a in exception.exc_args)
    else:
        exception = get_pickled_exception(exception)
        cls = type(exception)
        exc_type, message = f"{cls.__module__}.{cls.__qualname__}", safe_str(exception)
    details = einfo.traceback if einfo is not None else None
    if not details:
        try:
            details = "".join(traceback.format_exception(exception))
        except Exception:  # a broken __str__ inside the chain
            details = f"{exc_type}: {message}"
    return {
        "exception_type": storable_text(exc_type, 200),
        "exception_message": storable_text(message, max_chars),
        "exception_details": storable_text(str(details), max_chars),
    }


class JobRequestMixin:
    """Added to a task's Request class (Celery's or the project's own): a job whose worker
    process was lost goes back to Enqueued.

    Celery requeues such a message (``task_reject_on_worker_lost``) without any signal; unless
    the job leaves Processing first, the redelivered message would be skipped as running.
    """

    id: str
    task: Task

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> Any:
        """Celery cuts a running task off (a cold or soft shutdown, or a lost broker connection
        with ``worker_cancel_long_running_tasks_on_connection_loss``): its job goes back to
        Enqueued at once, with the reason, for another worker."""
        running = bool(getattr(self, "time_start", None))
        result = super().cancel(pool, signal, emit_retry=emit_retry)  # type: ignore[misc]
        extension = find_extension(self.task.app)
        if running and extension is not None and extension.server_id is not None:
            try:
                extension.store.release_processing(
                    self.id, server_id=extension.server_id, reason=CANCELLED_REASON
                )
            except StoreError as exc:  # the server's sign-off or recovery requeues it
                logger.warning("hfcelery could not requeue cancelled job %s: %s", self.id, exc)
        return result

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        cancelled = getattr(self, "_already_cancelled", False) or getattr(
            self, "_already_revoked", False
        )
        requeued = (
            isinstance(exc, WorkerLostError | SystemExit)
            and not cancelled
            and self.task.acks_late
            and self.task.reject_on_worker_lost
        )
        extension = find_extension(self.task.app)
        if isinstance(exc, SkippedMessage):
            _announce_skipped(self, exc)
        elif requeued and extension is not None and extension.server_id is not None:
            max_losses = extension.config.max_lost_worker_processes
            try:
                state = extension.store.release_processing(
                    self.id,
                    server_id=extension.server_id,
                    reason=f"{LOST_WORKER_REASON} ({exc}); message requeued",
                    max_losses=max_losses,
                )
            except StoreError:
                logger.exception("hfcelery could not requeue job %s after a lost worker", self.id)
            else:
                if state is State.FAILED:
                    # Not redelivered again: Celery acknowledges the message, stores FAILURE,
                    # sends task_failure and task-failed, as for any task that failed.
                    exc_info = _lost_worker_limit(self.id, max_losses, exc)
        super().on_failure(  # type: ignore[misc]
            exc_info, send_failed_event=send_failed_event, return_ok=return_ok
        )


def _lost_worker_limit(job_id: str, losses: int, exc: BaseException) -> ExceptionInfo:
    error = LostWorkerLimitError(job_id, losses, str(exc))
    try:
        raise error from exc
    except LostWorkerLimitError:
        info = ExceptionInfo()
    # As the pool hands an exception over: the error itself, not billiard's wrapper (which
    # Celery's task-failed event would show as "ExceptionWithTraceback()").
    info.exception = error
    return info


def _announce_skipped(request: Request, skipped: SkippedMessage) -> None:
    """Tell Flower, ``celery events`` and the result backend the final state of a finished job
    whose message was skipped, as Celery would have had it run: the stored outcome when the
    backend has one, else the job's own (Deleted is a revoke; Failed a :class:`JobFailedError`).
    A job running elsewhere or sent again says nothing: its own run announces its end."""
    if skipped.state not in _FINISHED:
        return
    task = request.task
    try:
        meta = task.backend.get_task_meta(request.id)
    except Exception:  # the backend is down: the events still go out
        logger.debug("hfcelery could not read the result of job %s", request.id, exc_info=True)
        meta = {}
    status = meta.get("status")
    try:
        if status == states.SUCCESS:
            result = saferepr(meta.get("result"), task.resultrepr_maxsize)
            request.send_event("task-succeeded", result=result, runtime=None)
        elif status == states.FAILURE:
            exception = safe_repr(meta.get("result"))
            request.send_event("task-failed", exception=exception, traceback=meta.get("traceback"))
        elif status == states.REVOKED or skipped.state == State.DELETED.value:
            if status != states.REVOKED:
                task.backend.mark_as_revoked(
                    request.id,
                    skipped.reason or "deleted",
                    request=request._context,
                    store_result=request.store_errors,
                )
            request.send_event("task-revoked", terminated=False, signum=None, expired=False)
        elif skipped.state == State.FAILED.value:
            error = JobFailedError(request.id, skipped.reason)
            task.backend.mark_as_failure(
                request.id, error, request=request._context, store_result=request.store_errors
            )
            request.send_event("task-failed", exception=safe_repr(error), traceback=None)
        else:  # Succeeded with no result kept (ignore_result)
            request.send_event("task-succeeded", result=None, runtime=None)
    except Exception:
        logger.warning("hfcelery could not announce skipped job %s", request.id, exc_info=True)


_FINISHED = frozenset({State.SUCCEEDED.value, State.FAILED.value, State.DELETED.value})


class JobRequest(JobRequestMixin, Request):  # type: ignore[misc]
    """Celery's own Request class with :class:`JobRequestMixin`."""
