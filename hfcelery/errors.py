"""The exceptions hfcelery raises.

Every error derives from :class:`HfceleryError`, so ``except HfceleryError`` catches all of them.
Errors raised for bad input happen before anything is written to the store or sent to the broker.
"""

from __future__ import annotations


class HfceleryError(Exception):
    """Root of every hfcelery error.

    Errors whose constructor takes other arguments than a message define ``_reduce_args`` so
    they pickle intact across Celery's process boundaries (Celery otherwise reports the nearest
    picklable base class).
    """

    def _reduce_args(self) -> tuple[object, ...]:
        return self.args

    def __reduce__(self) -> tuple[type[HfceleryError], tuple[object, ...]]:
        return type(self), self._reduce_args()


class ConfigurationError(HfceleryError):
    """hfcelery is not set up, or its settings are invalid."""


class NotInitializedError(ConfigurationError):
    """``hfcelery.init_app(app)`` was not called for the app in use."""

    def __init__(self, app_name: str | None) -> None:
        if app_name is None:
            message = (
                "hfcelery is not initialised in this process: call hfcelery.init_app(app) "
                "where the Celery app is created (and import that module before using "
                "BackgroundJob)"
            )
        else:
            message = (
                f"hfcelery is not initialised for Celery app {app_name!r}: "
                "call hfcelery.init_app(app) where the app is created"
            )
        super().__init__(message)
        self.app_name = app_name

    def _reduce_args(self) -> tuple[object, ...]:
        return (self.app_name,)


class InvalidCallError(HfceleryError, TypeError):
    """The call given to enqueue cannot be performed by a worker.

    Raised at enqueue time for lambdas, nested functions, bound methods of instances, functions
    defined in ``__main__``, canvas primitives, or arguments that do not fit the function.
    """

    def __init__(self, message: str, *, target: object = None) -> None:
        super().__init__(message)
        self.target = target

    def _reduce_args(self) -> tuple[object, ...]:
        return (str(self),)  # the target may be a lambda, which does not pickle


class ArgumentSerializationError(InvalidCallError):
    """An argument or keyword argument of the call cannot be carried as JSON."""

    def __init__(self, message: str, *, target: object = None, value: object = None) -> None:
        super().__init__(message, target=target)
        self.value = value


class InvalidArgumentError(HfceleryError, ValueError):
    """An argument of an hfcelery call has a value it does not accept (a state name, a
    continuation option, a page size or cursor)."""


class InvalidScheduleError(HfceleryError, ValueError):
    """A delay or due time is invalid (negative, or a naive datetime)."""


class InvalidCronError(InvalidScheduleError):
    """A cron expression croniter cannot parse (or with a field count other than 5 or 6)."""


class InvalidTimeZoneError(InvalidScheduleError):
    """A time zone name that is not in the IANA database."""


class ForbiddenFunctionError(HfceleryError):
    """A worker was asked to perform a function it must not run.

    The worker performs only functions (and static or class methods of classes) *defined* in the
    app's own task modules and in the modules listed in ``hfcelery_allowed_modules``, under
    exactly the name the job gives; anything else (``os.system``, or ``proj:os.system`` reached
    through an allowed module) fails the job with this error before anything is called.
    """

    def __init__(self, function_path: str, module: str, reason: str | None = None) -> None:
        if reason is None:
            reason = (
                f"module {module!r} is neither a task module of this Celery app nor listed in "
                "hfcelery_allowed_modules"
            )
        super().__init__(f"function {function_path!r} is not allowed: {reason}")
        self.function_path = function_path
        self.module = module
        self.reason = reason

    def _reduce_args(self) -> tuple[object, ...]:
        return (self.function_path, self.module, self.reason)


class FunctionNotFoundError(HfceleryError):
    """A worker could not import the function a job names."""

    def __init__(self, function_path: str, reason: str) -> None:
        super().__init__(f"cannot load function {function_path!r}: {reason}")
        self.function_path = function_path
        self.reason = reason

    def _reduce_args(self) -> tuple[object, ...]:
        return (self.function_path, self.reason)


class JobFailedError(HfceleryError):
    """A job ended Failed without a Celery task outcome of its own (an invalid message, a task
    no worker knows): what Celery's result backend holds for its task, with the job's reason."""

    def __init__(self, job_id: str, reason: str | None) -> None:
        # The arguments are the exception's args, so that a result backend's JSON copy
        # (type, module and args) turns back into this error for ``AsyncResult.get()``.
        super().__init__(job_id, reason)
        self.job_id = job_id
        self.reason = reason

    def __str__(self) -> str:
        return f"job {self.job_id} is Failed: {self.reason or 'no reason recorded'}"


class LostWorkerLimitError(HfceleryError):
    """A job's worker process was lost ``hfcelery_max_lost_worker_processes`` times (the job
    keeps killing the process that runs it): the job is Failed and its message acknowledged,
    instead of being redelivered forever under ``task_reject_on_worker_lost``."""

    def __init__(self, job_id: str, losses: int, last: str) -> None:
        super().__init__(job_id, losses, last)  # as JobFailedError: args survive JSON
        self.job_id = job_id
        self.losses = losses
        self.last = last

    def __str__(self) -> str:
        return (
            f"job {self.job_id} was given up after {self.losses} lost worker processes; "
            f"the last: {self.last}"
        )


class ConcurrentExecutionTimeoutError(HfceleryError):
    """A job of a function under ``@disable_concurrent_execution`` waited its timeout for the
    run before it to end (Hangfire's ``DistributedLockTimeoutException``); automatic retry
    retries it."""

    def __init__(self, resource: str, timeout_seconds: float) -> None:
        super().__init__(resource, timeout_seconds)  # args survive a result backend's JSON
        self.resource = resource
        self.timeout_seconds = timeout_seconds

    def __str__(self) -> str:
        return (
            f"another run of {self.resource} still held it after {self.timeout_seconds:g} s "
            "(disable_concurrent_execution)"
        )


class JobAbortedError(HfceleryError):
    """Raised by ``current_job().cancellation_token.throw_if_cancellation_requested()``: the
    running job was deleted, requeued or taken over, and should stop (Hangfire's
    ``JobAbortedException``)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"job {self.job_id} was aborted: it was deleted, requeued or taken over"


class JobCreationError(HfceleryError):
    """A client filter raised while a job was being created (Hangfire's
    ``BackgroundJobClientException``): nothing was written; the filter's exception is the
    ``__cause__``."""


class JobCreationCanceledError(HfceleryError):
    """A client filter vetoed the job (``context.canceled = True`` in ``on_creating``): nothing
    was written. Hangfire returns a null id here; a Python caller gets this error instead."""

    def __init__(self, filter_name: str, function: str) -> None:
        super().__init__(filter_name, function)
        self.filter_name = filter_name
        self.function = function

    def __str__(self) -> str:
        return f"the job of {self.function} was canceled by filter {self.filter_name!r}"


class JobPerformanceError(HfceleryError):
    """A server filter raised while a job was performed (Hangfire's
    ``JobPerformanceException``): the job fails with it, and automatic retry applies."""


class StoreError(HfceleryError):
    """The job store failed (a database error, wrapped)."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached or cannot work right now (connection refused or lost, the
    database restarting, a lock timeout): trying again later may succeed."""


class StoreDataError(StoreError):
    """The store refused the data it was given (text it cannot hold, a number out of range, a
    constraint): trying the same write again will fail the same way."""


class SchemaOutOfDateError(StoreError):
    """The store's schema is not at the version this hfcelery needs."""

    def __init__(self, current: str | None, head: str) -> None:
        super().__init__(
            f"the hfcelery store schema is at {current or 'nothing'}, this version needs {head}: "
            "run `celery -A <your app> hf migrate`"
        )
        self.current = current
        self.head = head

    def _reduce_args(self) -> tuple[object, ...]:
        return (self.current, self.head)


class SchemaTooNewError(SchemaOutOfDateError):
    """The store's schema was migrated by a newer hfcelery than this one (a deploy rolled
    back): this version cannot use it, and ``hf migrate`` cannot help."""

    def __init__(self, current: str | None, head: str) -> None:
        StoreError.__init__(
            self,
            f"the hfcelery store schema is at {current}, which this version of hfcelery does "
            f"not know (it needs {head}): a newer hfcelery migrated the store. Run that "
            "version, or downgrade the store's schema with it before running this one",
        )
        self.current = current
        self.head = head


class JobNotFoundError(HfceleryError, LookupError):
    """No job with the given id exists in the store."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id

    def _reduce_args(self) -> tuple[object, ...]:
        return (self.job_id,)


class RecurringJobNotFoundError(HfceleryError, LookupError):
    """No recurring job with the given id exists in the store."""

    def __init__(self, recurring_id: str) -> None:
        super().__init__(f"no recurring job with id {recurring_id!r}")
        self.recurring_id = recurring_id

    def _reduce_args(self) -> tuple[object, ...]:
        return (self.recurring_id,)
