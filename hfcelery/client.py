"""Creating and managing jobs: ``BackgroundJobClient`` and the ``BackgroundJob`` facade."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from celery import Celery, Task

from hfcelery.calls import Invocation, to_invocation
from hfcelery.continuations import JOIN_WITHOUT_RESULTS, PASSED_RESULTS, JobContinuationOptions
from hfcelery.elections import (
    StoredJobFilters,
    create_through_filters,
    creating_context,
    elect_first_state,
)
from hfcelery.errors import (
    InvalidArgumentError,
    InvalidCallError,
    InvalidScheduleError,
    JobCreationCanceledError,
    JobCreationError,
)
from hfcelery.extension import Extension, default_app, extension_of
from hfcelery.filters import (
    ApplyStateContext,
    CandidateState,
    CreatedContext,
    CreatingContext,
    ElectStateContext,
    FilterSet,
    filters_for,
)
from hfcelery.publishing import publish, publish_many
from hfcelery.records import Dispatch, NewJob
from hfcelery.states import State, parse_state
from hfcelery.validation import check_job_id, check_job_queue, check_queue, problem_with_job_id

#: The latest due time a job may have: a year short of the end of Python's calendar, so every
#: time computed from it (retention, time zones) stays in range.
LATEST_DUE_AT = datetime(9998, 12, 31, tzinfo=UTC)


#: How often a change by request goes through the job's filters again when the job moved to
#: another state while they ran.
REQUEST_ATTEMPTS = 5


logger = logging.getLogger(__name__)

#: (extension, module) pairs this process has warned about: once each, per app (two apps may
#: allow different modules).
_WARNED_MODULES: set[tuple[int, str]] = set()


def _warn_if_not_allowed(extension: Extension, function: str) -> None:
    """Say once per module when this app's own settings do not allow a job's function: workers
    with the same settings fail such a job with ForbiddenFunctionError."""
    module = function.partition(":")[0]
    key = (id(extension), module)
    if key in _WARNED_MODULES or extension.module_allowed(module):
        return
    _WARNED_MODULES.add(key)
    logger.warning(
        "hfcelery: %s is in module %r, which is neither a task module of this Celery app nor "
        "listed in its hfcelery_allowed_modules; workers with these settings will fail the job "
        "with ForbiddenFunctionError",
        function,
        module,
    )


class BackgroundJobClient:
    """Creates and manages jobs for one Celery app (which must have ``init_app`` applied)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._extension = extension_of(app)
        self._stored = StoredJobFilters(self._extension)

    def enqueue(self, the_call: object, *, queue: str | None = None) -> str:
        """Create a fire-and-forget job and send it to a worker; return its id.

        ``the_call`` is ``hfcelery.call(func, *args, **kwargs)``, a ``functools.partial``, a
        Celery signature, or a callable that takes no arguments. It is validated (importable,
        arguments fit and are JSON) before anything is written. The job is written Enqueued and
        its message sent with the job id as the Celery task id. If the broker is unreachable,
        the job is kept and a worker publishes it later.
        """
        job, invocation = self._new(the_call, queue, State.ENQUEUED)
        return self._create(job, invocation)

    def enqueue_many(self, calls: Iterable[object], *, queue: str | None = None) -> list[str]:
        """Create many fire-and-forget jobs at once; return their ids, in the order of
        ``calls``.

        Every call is validated, and every job's client filters run (``on_creating``), before
        anything is written: one bad call, a veto or a filter's error raises and writes nothing.
        The jobs are written in one transaction (one statement per 1,000 on PostgreSQL) and
        their messages sent in one broker round trip per 1,000 where the transport allows it
        (Redis pipelines), before the commit. If the broker cannot be reached the jobs are kept
        and a worker publishes them later, as for :meth:`enqueue`.
        """
        if isinstance(calls, str | bytes) or not isinstance(calls, Iterable):
            raise InvalidCallError("enqueue_many needs an iterable of calls")
        prepared = [self._new(the_call, queue, State.ENQUEUED) for the_call in calls]
        if not prepared:
            return []
        jobs: list[NewJob] = []
        pending: list[tuple[FilterSet, CreatingContext]] = []
        for job, invocation in prepared:
            filters = self._filters(invocation)
            if not (filters.client_filters or filters.creation_elect_filters):
                jobs.append(job)
                continue
            context = creating_context(job)
            for instance in filters.client_filters:
                try:
                    instance.on_creating(context)
                except Exception as exc:
                    raise JobCreationError(
                        f"Background job creation failed: a client filter raised {exc!r}"
                    ) from exc
                if context.canceled:
                    raise JobCreationCanceledError(type(instance).__name__, job.function)
            jobs.append(
                elect_first_state(
                    replace(job, parameters=dict(context.parameters)),
                    filters,
                    self._extension.config,
                )
            )
            pending.append((filters, context))
        store = self._extension.store
        enqueued = [job for job in jobs if job.state is State.ENQUEUED]
        if enqueued:
            store.create_jobs(enqueued, self._publish_many)
        others = [job for job in jobs if job.state is not State.ENQUEUED]
        if others:  # elected Scheduled by a filter
            store.create_jobs(others)
        for filters, context in pending:
            created = CreatedContext(context.job_id, context.function, context.parameters)
            for instance in reversed(filters.client_filters):
                instance.on_created(created)
        return [job.id for job in jobs]

    def schedule(
        self, the_call: object, delay: timedelta | datetime, *, queue: str | None = None
    ) -> str:
        """Create a job that is enqueued after ``delay`` (or at an aware ``datetime``).

        The job waits in the store as Scheduled, not in a broker message: it survives worker
        restarts, can be deleted or run early, and a worker enqueues it when it is due.
        Raises InvalidScheduleError for a negative delay or a naive datetime.
        """
        due_at = due_time(delay)
        job, invocation = self._new(the_call, queue, State.SCHEDULED, due_at)
        return self._create(job, invocation)

    def create(
        self,
        the_call: object,
        state: State | str = State.ENQUEUED,
        *,
        delay: timedelta | datetime | None = None,
        queue: str | None = None,
    ) -> str:
        """Create a job in ``state``, as Hangfire's ``Create(job, state)``: Enqueued (as
        :meth:`enqueue`) or Scheduled (as :meth:`schedule`, due after ``delay``). Awaiting jobs
        come from :meth:`continue_job_with`; other states are refused with InvalidArgumentError.
        """
        target = parse_state(state)
        if target is State.ENQUEUED:
            if delay is not None:
                raise InvalidArgumentError("an Enqueued job takes no delay; create it Scheduled")
            return self.enqueue(the_call, queue=queue)
        if target is State.SCHEDULED:
            if delay is None:
                raise InvalidArgumentError("a Scheduled job needs a delay or an aware datetime")
            return self.schedule(the_call, delay, queue=queue)
        raise InvalidArgumentError(
            f"create() makes Enqueued or Scheduled jobs, not {target.value}: "
            "use continue_job_with for Awaiting ones"
        )

    def change_state(
        self,
        job_id: str,
        state: State | str,
        *,
        expected_state: State | str | None = None,
        delay: timedelta | datetime | None = None,
    ) -> bool:
        """Move a job to ``state`` if it is in ``expected_state`` (any state when None), as
        Hangfire's ``ChangeState``; True if applied. Enqueued requeues it (:meth:`requeue`),
        Scheduled reschedules it after ``delay`` (:meth:`reschedule`), Deleted deletes it
        (:meth:`delete`). Other states are a worker's to record: InvalidArgumentError."""
        target = parse_state(state)
        if target is not State.SCHEDULED and delay is not None:
            raise InvalidArgumentError(f"a delay goes with Scheduled, not {target.value}")
        if target is State.ENQUEUED:
            return self.requeue(job_id, expected_state=expected_state)
        if target is State.DELETED:
            return self.delete(job_id, expected_state=expected_state)
        if target is State.SCHEDULED:
            if delay is None:
                raise InvalidArgumentError("a move to Scheduled needs a delay or a datetime")
            return self.reschedule(job_id, delay, expected_state=expected_state)
        raise InvalidArgumentError(
            f"change_state moves a job to Enqueued, Scheduled or Deleted, not {target.value}"
        )

    def continue_job_with(
        self,
        parent_id: str,
        the_call: object,
        *,
        options: JobContinuationOptions = JobContinuationOptions.ONLY_ON_SUCCEEDED_STATE,
        queue: str | None = None,
        pass_result: bool = False,
        pass_exception: bool = False,
        next_state: State | str = State.ENQUEUED,
        delay: timedelta | None = None,
    ) -> str:
        """Create a job that waits (Awaiting) for ``parent_id`` to finish; return its id.

        It is enqueued when the parent succeeds (by default; ``options`` may ask for deletion,
        or either), in the same store transaction that finishes the parent, and deleted with
        the reason "Continuation condition was not met" otherwise. Failed is not finished: the
        parent may still be retried. A parent that has finished already releases it at once.
        ``next_state="Scheduled"`` with a ``delay`` schedules it that long after the release
        instead (Hangfire's ``nextState``).
        ``pass_result=True`` appends the parent's result to the arguments (None if it was
        deleted); ``pass_exception=True`` appends the parent's exception (Hangfire's
        ``FromException``): None if it succeeded, else ``{"type": ..., "message": ...}`` from
        its Deleted state (the exception that made automatic retry give up, or type None and
        the reason when it was deleted otherwise). Both: the result, then the exception.
        Raises JobNotFoundError, writing nothing, if there is no such parent.
        """
        return self._continue(
            [parent_id],
            the_call,
            options,
            queue,
            "one" if pass_result else None,
            pass_exception,
            next_state,
            delay,
        )

    def continue_when_all(
        self,
        parent_ids: Sequence[str],
        the_call: object,
        *,
        options: JobContinuationOptions = JobContinuationOptions.ONLY_ON_SUCCEEDED_STATE,
        queue: str | None = None,
        pass_result: bool = False,
        pass_exception: bool = False,
        next_state: State | str = State.ENQUEUED,
        delay: timedelta | None = None,
    ) -> str:
        """Create a job that waits for every one of ``parent_ids`` (a join); return its id.

        ``options`` must hold for each parent. With ``pass_result=True`` the list of the
        parents' results is appended to the arguments, with ``pass_exception=True`` the list
        of their exceptions (each as for :meth:`continue_job_with`), both in the order of
        ``parent_ids``; a parent given more than once counts once, at its first place (so its
        result is in the list once). ``next_state`` and ``delay`` as for
        :meth:`continue_job_with`.
        """
        return self._continue(
            parent_ids,
            the_call,
            options,
            queue,
            # A join passing exceptions alone says so; otherwise None, as older versions read.
            "all" if pass_result else (JOIN_WITHOUT_RESULTS if pass_exception else None),
            pass_exception,
            next_state,
            delay,
        )

    def _continue(
        self,
        parent_ids: Sequence[str],
        the_call: object,
        options: JobContinuationOptions,
        queue: str | None,
        pass_result: str | None,
        pass_exception: bool = False,
        next_state: State | str = State.ENQUEUED,
        delay: timedelta | None = None,
    ) -> str:
        if isinstance(parent_ids, str | bytes) or not isinstance(parent_ids, Iterable):
            raise InvalidCallError("continue_when_all needs a list of parent job ids")
        parent_ids = list(parent_ids)  # a generator is read once, here
        if not parent_ids:
            raise InvalidCallError("continue_when_all needs a non-empty list of parent job ids")
        for parent_id in parent_ids:
            problem = problem_with_job_id(parent_id)
            if problem is not None:
                raise InvalidCallError(f"invalid parent job id {parent_id!r:.80}: {problem}")
        if not isinstance(options, int) or int(options) not in range(4):
            raise InvalidArgumentError(f"invalid continuation options {options!r}")
        delay_seconds: float | None = None
        target = parse_state(next_state)
        if target is State.SCHEDULED:
            if delay is None:
                raise InvalidArgumentError("a Scheduled next state needs a delay")
            if not isinstance(delay, timedelta) or delay < timedelta(0):
                raise InvalidScheduleError(f"the delay must be a timedelta >= 0, got {delay!r}")
            delay_seconds = delay.total_seconds()
        elif target is State.ENQUEUED:
            if delay is not None:
                raise InvalidArgumentError("a delay goes with next_state='Scheduled'")
        else:
            raise InvalidArgumentError(
                f"a continuation's next state is Enqueued or Scheduled, not {target.value}"
            )
        extra = (pass_result in PASSED_RESULTS) + bool(pass_exception)
        job, invocation = self._new(the_call, queue, State.AWAITING, extra_arguments=extra)
        parents = list(dict.fromkeys(parent_ids))  # in the order given, each once
        data: dict[str, object] = {
            "parent_ids": parents,
            "options": JobContinuationOptions(options).name or "ON_ANY_FINISHED_STATE",
            "next_state": target.value,
            "queue": job.queue,
        }
        if delay_seconds is not None:
            data["next_delay_seconds"] = delay_seconds
        job = replace(job, data=data)

        def write(job: NewJob) -> None:
            self._extension.store.add_continuation(
                job,
                parents,
                int(options),
                pass_result=pass_result,
                pass_exception=bool(pass_exception),
                next_state=None if target is State.ENQUEUED else target,
                next_delay_seconds=delay_seconds,
            )

        return self._create(job, invocation, write)

    def _create(
        self,
        job: NewJob,
        invocation: Invocation,
        write: Callable[[NewJob], object] | None = None,
    ) -> str:
        """Write a new job through its filters: client filters around the write (a veto or a
        filter's error writes nothing), elect-state filters on its first state, apply-state
        filters after."""
        filters = self._filters(invocation)
        if write is None:
            store = self._extension.store

            def write(job: NewJob) -> object:
                return store.create_job(job, self._publish if job.state is State.ENQUEUED else None)

        if not (filters.client_filters or filters.creation_elect_filters or filters.apply_filters):
            write(job)
            return job.id

        def written(job: NewJob) -> bool:
            write(job)
            return True

        final = create_through_filters(job, filters, self._extension.config, written)
        if final is not None and filters.apply_filters:
            filters.applied(
                ApplyStateContext(
                    final.id, final.function, None, final.state, final.reason, final.data
                )
            )
        return job.id

    @staticmethod
    def _filters(invocation: Invocation) -> FilterSet:
        runs = invocation.runs
        return filters_for(runs, type(runs) if isinstance(runs, Task) else None)

    def delete(
        self,
        job_id: str,
        *,
        expected_state: State | str | None = None,
        terminate: bool = False,
    ) -> bool:
        """Move a job to Deleted; True if applied.

        A deleted Enqueued or Scheduled job never runs. A running job goes on until it checks
        ``hfcelery.cancellation_requested()``, or, with ``terminate=True``, until the worker
        running it kills its process (within its maintenance interval).
        """
        return self._by_request(
            check_job_id(job_id),
            CandidateState(State.DELETED, "Deleted by request"),
            _state_or_none(expected_state),
            terminate=terminate,
        )

    def requeue(self, job_id: str, *, expected_state: State | str | None = None) -> bool:
        """Move a job to Enqueued and send it again; True if applied."""
        return self._by_request(
            check_job_id(job_id),
            CandidateState(State.ENQUEUED, "Requeued by request"),
            _state_or_none(expected_state),
        )

    def enqueue_now(self, job_id: str) -> bool:
        """Run a Scheduled job now instead of at its due time; True if it was Scheduled."""
        return self.requeue(job_id, expected_state=State.SCHEDULED)

    def reschedule(
        self,
        job_id: str,
        delay: timedelta | datetime,
        *,
        expected_state: State | str | None = None,
    ) -> bool:
        """Move a job to Scheduled, due after ``delay`` (or at an aware datetime); True if
        applied."""
        due_at = due_time(delay)
        return self._by_request(
            check_job_id(job_id),
            CandidateState(State.SCHEDULED, "Rescheduled by request", {}, due_at),
            _state_or_none(expected_state),
        )

    def _by_request(
        self,
        job_id: str,
        candidate: CandidateState,
        expected_state: State | None,
        *,
        terminate: bool = False,
    ) -> bool:
        """Apply a change asked for by a caller (or the pages): its elect-state filters may
        change the state (Enqueued, Scheduled or Deleted), its apply-state filters see it once
        it is committed. The change applies only if the job is still in the state the filters
        saw; when it moved meanwhile (a worker claimed or finished it), the filters are asked
        again about the state it is in now, unless the caller named an ``expected_state``."""
        filters = filters_for(None)
        if not (
            filters.creation_elect_filters
            or filters.apply_filters
            or self._stored.own_filters_exist()
        ):
            return self._apply_by_request(job_id, candidate, expected_state, terminate)
        for _ in range(REQUEST_ATTEMPTS):
            head = self._extension.store.job_head(job_id)
            if head is None or (expected_state is not None and head.state != expected_state):
                return False
            filters = self._stored.of(head.function, head.task_name)
            elected = candidate
            if filters.creation_elect_filters:
                context = ElectStateContext(
                    job_id, head.function, head.state, candidate, config=self._extension.config
                )
                elected = filters.elect(context)
                if elected.state not in (State.ENQUEUED, State.SCHEDULED, State.DELETED):
                    raise InvalidArgumentError(
                        f"a filter elected {elected.state.value} for job {job_id}: a change by "
                        "request leads to Enqueued, Scheduled or Deleted"
                    )
            if self._apply_by_request(job_id, elected, head.state, terminate):
                if filters.apply_filters:
                    filters.applied(
                        ApplyStateContext(
                            job_id, head.function, head.state, elected.state, elected.reason,
                            dict(elected.data),
                        )
                    )  # fmt: skip
                return True
        return False

    def _apply_by_request(
        self, job_id: str, elected: CandidateState, expected: State | None, terminate: bool
    ) -> bool:
        store = self._extension.store
        if elected.state is State.DELETED:
            return store.delete_job(
                job_id,
                reason=elected.reason or "Deleted by request",
                expected_state=expected,
                retention=timedelta(seconds=self._extension.config.deleted_retention_seconds),
                terminate=terminate,
            )
        if elected.state is State.ENQUEUED:
            return store.requeue_job(
                job_id,
                reason=elected.reason or "Requeued by request",
                expected_state=expected,
                publish=self._publish,
            )
        if elected.due_at is None:
            raise InvalidArgumentError("a filter elected Scheduled without a due time")
        return store.reschedule_job(
            job_id,
            elected.due_at,
            reason=elected.reason or "Rescheduled by request",
            expected_state=expected,
        )

    def new_job(
        self,
        the_call: object,
        queue: str | None,
        state: State,
        due_at: datetime | None = None,
        *,
        extra_arguments: int = 0,
    ) -> NewJob:
        """Validate the call and describe the job it makes (nothing is written)."""
        return self._new(the_call, queue, state, due_at, extra_arguments=extra_arguments)[0]

    def _new(
        self,
        the_call: object,
        queue: str | None,
        state: State,
        due_at: datetime | None = None,
        *,
        extra_arguments: int = 0,
    ) -> tuple[NewJob, Invocation]:
        if queue is not None:
            check_job_queue(queue)
        # The function must be one a worker may call (defined where its name says, see
        # calls.resolve_function); whether its module is allowed is the workers' setting: a
        # client's app may be configured apart from theirs (a web process's own Celery app).
        invocation = to_invocation(the_call, extra_arguments=extra_arguments)
        if invocation.is_plain_function:
            _warn_if_not_allowed(self._extension, invocation.function)
        # A name given to hfcelery (queue=, @queue) follows Hangfire's rule; one that comes
        # from the project's Celery routing (a signature's queue, the default) is the project's.
        decorated = invocation.queue()
        if queue is None and decorated is not None:
            queue = check_job_queue(decorated)
        queue = check_queue(
            queue or invocation.options.get("queue") or self._default_queue(invocation)
        )
        data: dict[str, object] = {"queue": queue}
        if due_at is not None:
            data = {"enqueue_at": due_at.isoformat(), "queue": queue}
        job = NewJob(
            id=str(uuid4()),
            function=invocation.function,
            task_name=invocation.task_name,
            args_json=invocation.args_json,
            kwargs_json=invocation.kwargs_json,
            queue=queue,
            state=state,
            data=data,
            display_name=invocation.display_name(),
            due_at=due_at,
        )
        return job, invocation

    def _publish(
        self, dispatch: Dispatch, *, before_send: Callable[[], object] | None = None
    ) -> None:
        publish(self.app, dispatch, before_send=before_send)

    def _publish_many(
        self, dispatches: Sequence[Dispatch], *, before_flush: Callable[[], object] | None = None
    ) -> None:
        publish_many(self.app, dispatches, before_flush=before_flush)

    def _default_queue(self, invocation: Invocation) -> str:
        route = self.app.amqp.router.route({}, invocation.task_name, invocation.args)
        queue = route.get("queue")
        return str(getattr(queue, "name", queue) or self.app.conf.task_default_queue)


def due_time(delay: timedelta | datetime) -> datetime:
    """The aware UTC due time of a delay or datetime; raises InvalidScheduleError."""
    if isinstance(delay, datetime):
        if delay.tzinfo is None or delay.utcoffset() is None:
            raise InvalidScheduleError(
                f"{delay!r} is a naive datetime: give it a time zone (datetime.now(UTC) + ...)"
            )
        try:
            due_at = delay.astimezone(UTC)
        except OverflowError as exc:
            raise InvalidScheduleError(f"{delay!r} is out of range in UTC") from exc
    elif isinstance(delay, timedelta):
        if delay < timedelta(0):
            raise InvalidScheduleError(f"the delay {delay} is negative")
        try:
            due_at = datetime.now(UTC) + delay
        except OverflowError as exc:
            raise InvalidScheduleError(f"the delay {delay} reaches past year 9999") from exc
    else:
        raise InvalidScheduleError(f"expected a timedelta or an aware datetime, got {delay!r}")
    if due_at > LATEST_DUE_AT:
        raise InvalidScheduleError(f"the due time {due_at.isoformat()} is past year 9998")
    return due_at


def _state_or_none(state: State | str | None) -> State | None:
    return None if state is None else parse_state(state)


_clients: weakref.WeakKeyDictionary[Celery, BackgroundJobClient] = weakref.WeakKeyDictionary()


def client_of(app: Celery) -> BackgroundJobClient:
    """The client of ``app`` (one per app, made on first use)."""
    client = _clients.get(app)
    if client is None:
        client = _clients.setdefault(app, BackgroundJobClient(app))
    return client


class _BackgroundJobFacade:
    """``BackgroundJob``: the methods of :class:`BackgroundJobClient` for the app that
    ``init_app`` was called on (see :func:`hfcelery.extension.default_app`), from any thread."""

    @staticmethod
    def client() -> BackgroundJobClient:
        """The client of the app ``init_app`` was called on (the default one, if several)."""
        return client_of(default_app())

    def enqueue(self, the_call: object, *, queue: str | None = None) -> str:
        return self.client().enqueue(the_call, queue=queue)

    def enqueue_many(self, calls: Iterable[object], *, queue: str | None = None) -> list[str]:
        return self.client().enqueue_many(calls, queue=queue)

    def schedule(
        self, the_call: object, delay: timedelta | datetime, *, queue: str | None = None
    ) -> str:
        return self.client().schedule(the_call, delay, queue=queue)

    def create(
        self,
        the_call: object,
        state: State | str = State.ENQUEUED,
        *,
        delay: timedelta | datetime | None = None,
        queue: str | None = None,
    ) -> str:
        return self.client().create(the_call, state, delay=delay, queue=queue)

    def change_state(
        self,
        job_id: str,
        state: State | str,
        *,
        expected_state: State | str | None = None,
        delay: timedelta | datetime | None = None,
    ) -> bool:
        return self.client().change_state(job_id, state, expected_state=expected_state, delay=delay)

    def delete(
        self, job_id: str, *, expected_state: State | str | None = None, terminate: bool = False
    ) -> bool:
        return self.client().delete(job_id, expected_state=expected_state, terminate=terminate)

    def requeue(self, job_id: str, *, expected_state: State | str | None = None) -> bool:
        return self.client().requeue(job_id, expected_state=expected_state)

    def enqueue_now(self, job_id: str) -> bool:
        return self.client().enqueue_now(job_id)

    def reschedule(
        self,
        job_id: str,
        delay: timedelta | datetime,
        *,
        expected_state: State | str | None = None,
    ) -> bool:
        return self.client().reschedule(job_id, delay, expected_state=expected_state)

    def continue_job_with(
        self,
        parent_id: str,
        the_call: object,
        *,
        options: JobContinuationOptions = JobContinuationOptions.ONLY_ON_SUCCEEDED_STATE,
        queue: str | None = None,
        pass_result: bool = False,
        pass_exception: bool = False,
        next_state: State | str = State.ENQUEUED,
        delay: timedelta | None = None,
    ) -> str:
        return self.client().continue_job_with(
            parent_id,
            the_call,
            options=options,
            queue=queue,
            pass_result=pass_result,
            pass_exception=pass_exception,
            next_state=next_state,
            delay=delay,
        )

    def continue_when_all(
        self,
        parent_ids: Sequence[str],
        the_call: object,
        *,
        options: JobContinuationOptions = JobContinuationOptions.ONLY_ON_SUCCEEDED_STATE,
        queue: str | None = None,
        pass_result: bool = False,
        pass_exception: bool = False,
        next_state: State | str = State.ENQUEUED,
        delay: timedelta | None = None,
    ) -> str:
        return self.client().continue_when_all(
            parent_ids,
            the_call,
            options=options,
            queue=queue,
            pass_result=pass_result,
            pass_exception=pass_exception,
            next_state=next_state,
            delay=delay,
        )


for _name in (
    "enqueue",
    "enqueue_many",
    "schedule",
    "delete",
    "requeue",
    "enqueue_now",
    "reschedule",
    "continue_job_with",
    "continue_when_all",
):
    getattr(_BackgroundJobFacade, _name).__doc__ = getattr(BackgroundJobClient, _name).__doc__

#: Static facade over the client of the app ``init_app`` was called on, as Hangfire's
#: ``BackgroundJob``.
BackgroundJob = _BackgroundJobFacade()
