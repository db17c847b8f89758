"""Job filters: Hangfire's extension points, with Python names.

A filter is an object with any of these methods (subclass :class:`JobFilter` and override the
ones you need):

- client filters, as a job is created: ``on_creating(context)`` before anything is written
  (``context.canceled = True`` vetoes the job; ``context.set_parameter`` stores a value with
  it) and ``on_created(context)`` after;
- server filters, as a worker performs it: ``on_performing(context)`` before
  (``context.canceled = True`` deletes the job instead of running it) and
  ``on_performed(context)`` after, with its result or exception
  (``context.exception_handled = True`` turns the exception into a success);
- elect-state filters: ``on_state_election(context)`` may replace ``context.candidate_state``
  before a state is written, as automatic retry (:class:`AutomaticRetry`, itself a filter)
  replaces Failed with Scheduled;
- apply-state filters: ``on_state_applied(context)`` for the new state and
  ``on_state_unapplied(context)`` for the one it left, once the change is committed.

Filters come from three places, as in Hangfire: :data:`global_filters` (every job), a Celery
task class's ``hfcelery_filters`` attribute (its jobs), and the :func:`job_filter` decorator on
a function or task (its jobs). They run sorted by ``order`` and then by that scope (global,
task class, decorator); ``on_creating`` and ``on_performing`` run in that order and
``on_created`` and ``on_performed`` in reverse. A filter type with ``allow_multiple = False``
(automatic retry) is used once: the most specific one wins.

Exceptions, as in Hangfire: one raised by a client filter stops the creation (nothing is
written) and reaches the caller as :class:`~hfcelery.errors.JobCreationError`; one raised by a
server filter fails the job with ``JobPerformanceError`` (retried like any failure); one
raised by an elect-state filter stops that state change; one raised by an apply-state filter is
logged (the change is already committed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from hfcelery.errors import ConfigurationError, ForbiddenFunctionError
from hfcelery.states import State

if TYPE_CHECKING:
    from hfcelery.options import RetryPolicy

logger = logging.getLogger(__name__)

F = TypeVar("F")

#: Failures that no retry can mend. A function that is missing (FunctionNotFoundError) is
#: retried, as Hangfire does: during a deploy, an older worker may receive a newer job.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ForbiddenFunctionError,)

#: Attribute under which a function or task keeps the filters of :func:`job_filter`.
FILTERS_ATTRIBUTE = "__hfcelery_filters__"
#: The attribute of a Celery task class that lists filters for its jobs (Hangfire's type scope).
TASK_FILTERS_ATTRIBUTE = "hfcelery_filters"


class FilterScope(IntEnum):
    """Where a filter was registered; with equal ``order``, wider scopes run first."""

    GLOBAL = 10
    TASK = 20
    FUNCTION = 30


class JobFilter:
    """Base class of filters: every method does nothing until overridden.

    ``order`` sorts filters (lower first; Hangfire's default is -1); ``allow_multiple = False``
    keeps only the most specific filter of a type.
    """

    order: int = -1
    allow_multiple: bool = True

    def on_creating(self, context: CreatingContext) -> None:
        """Before a job is written; set ``context.canceled`` to veto it."""

    def on_created(self, context: CreatedContext) -> None:
        """After a job was written (or creation was canceled, or failed)."""

    def on_performing(self, context: PerformingContext) -> None:
        """Before a worker runs the job; set ``context.canceled`` to delete it instead."""

    def on_performed(self, context: PerformedContext) -> None:
        """After the job ran (``context.exception`` if it raised)."""

    def on_state_election(self, context: ElectStateContext) -> None:
        """Before a state is written; may replace ``context.candidate_state``."""

    def on_state_applied(self, context: ApplyStateContext) -> None:
        """After the job entered ``context.new_state``."""

    def on_state_unapplied(self, context: ApplyStateContext) -> None:
        """After the job left ``context.old_state``."""


_HOOKS = (
    "on_creating",
    "on_created",
    "on_performing",
    "on_performed",
    "on_state_election",
    "on_state_applied",
    "on_state_unapplied",
)


def _implements(instance: object, hook: str) -> bool:
    method = getattr(type(instance), hook, None)
    return method is not None and method is not getattr(JobFilter, hook)


def _check_filter(instance: object) -> object:
    if isinstance(instance, type):
        raise ConfigurationError(
            f"{instance.__name__} is a class: register an instance of it ({instance.__name__}())"
        )
    if not any(_implements(instance, hook) for hook in _HOOKS):
        raise ConfigurationError(
            f"{instance!r} is not a job filter: it has none of {', '.join(_HOOKS)}"
        )
    return instance


@dataclass(frozen=True, slots=True)
class RegisteredFilter:
    instance: Any
    order: int
    scope: FilterScope


class JobFilterCollection:
    """The global filters (:data:`global_filters`): ``add``, ``remove``, ``clear``, iteration."""

    def __init__(self) -> None:
        self._items: list[RegisteredFilter] = []
        self._lock = threading.Lock()
        #: Changes with every add/remove, so cached filter sets are rebuilt.
        self.version = 0

    def add(self, instance: object, order: int | None = None) -> None:
        """Register ``instance`` for every job; ``order`` overrides the filter's own."""
        _check_filter(instance)
        with self._lock:
            self._items.append(
                RegisteredFilter(instance, _order(instance, order), FilterScope.GLOBAL)
            )
            self.version += 1

    def remove(self, instance_or_type: object) -> None:
        """Unregister a filter instance, or every filter of a type."""
        with self._lock:
            self._items = [
                f
                for f in self._items
                if f.instance is not instance_or_type
                and not (
                    isinstance(instance_or_type, type) and isinstance(f.instance, instance_or_type)
                )
            ]
            self.version += 1

    def clear(self) -> None:
        with self._lock:
            self._items = []
            self.version += 1

    def registered(self) -> list[RegisteredFilter]:
        return list(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter([f.instance for f in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, instance: object) -> bool:
        return any(f.instance is instance for f in self._items)


def _order(instance: object, order: int | None) -> int:
    if order is not None:
        return order
    value = getattr(instance, "order", -1)
    return value if isinstance(value, int) else -1


#: Whether ``job_filter`` was used in this process (changes by request then look up the job's
#: own filters; otherwise the global ones suffice, without reading the job).
_decorated = [False]


def decorated_filters_exist() -> bool:
    return _decorated[0]


def job_filter(*filters: object) -> Callable[[F], F]:
    """Add filters for the jobs of the decorated function or Celery task."""
    for instance in filters:
        _check_filter(instance)
    _decorated[0] = True

    def decorate(target: F) -> F:
        current = tuple(getattr(target, FILTERS_ATTRIBUTE, ()))
        setattr(target, FILTERS_ATTRIBUTE, current + tuple(filters))
        return target

    return decorate


def function_filters(target: object) -> tuple[Any, ...]:
    """The filters :func:`job_filter` put on a function or task (or the function it wraps)."""
    found = getattr(target, FILTERS_ATTRIBUTE, None)
    if found is None:
        found = getattr(getattr(target, "run", None), FILTERS_ATTRIBUTE, None)
    return tuple(found or ())


# ---------------------------------------------------------------------------------------------
# Contexts


class _Parameters:
    """Job parameters as a filter or job sees them: small JSON values by name."""

    parameters: dict[str, Any]

    def get_parameter(self, name: str, default: Any = None) -> Any:
        return self.parameters.get(name, default)


@dataclass
class CreatingContext(_Parameters):
    """What ``on_creating`` sees: the job about to be written."""

    job_id: str
    function: str
    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    initial_state: State
    parameters: dict[str, Any] = field(default_factory=dict)
    canceled: bool = False
    items: dict[str, Any] = field(default_factory=dict)

    def set_parameter(self, name: str, value: Any) -> None:
        """Store ``value`` (JSON) with the job, in the same transaction as the job itself."""
        from hfcelery.validation import check_parameter

        self.parameters[check_parameter(name, value)] = value


@dataclass
class CreatedContext(_Parameters):
    """What ``on_created`` sees: the job written (``job_id``), or why not."""

    job_id: str | None
    function: str
    parameters: dict[str, Any]
    canceled: bool = False
    exception: BaseException | None = None
    exception_handled: bool = False
    items: dict[str, Any] = field(default_factory=dict)


@dataclass
class PerformingContext(_Parameters):
    """What ``on_performing`` sees: the claimed job about to run."""

    job_id: str
    function: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    parameter_store: Any = field(repr=False, default=None)
    canceled: bool = False
    items: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def parameters(self) -> dict[str, Any]:  # type: ignore[override]
        return dict(self.parameter_store.all()) if self.parameter_store is not None else {}

    def performed(self, **outcome: Any) -> PerformedContext:
        """The context ``on_performed`` sees, with the job's ``result`` or ``exception``."""
        post = PerformedContext(
            self.job_id,
            self.function,
            self.args,
            self.kwargs,
            self.attempt,
            self.parameter_store,
            items=self.items,
            **outcome,
        )
        if "parameters" in self.__dict__:  # read already: shared, not read again
            post.__dict__["parameters"] = self.parameters
        return post

    def set_parameter(self, name: str, value: Any) -> None:
        """Store ``value`` with the job now."""
        from hfcelery.validation import check_parameter

        check_parameter(name, value)
        if self.parameter_store is not None:
            self.parameter_store.set(name, value)
        self.parameters[name] = value


@dataclass
class PerformedContext(PerformingContext):
    """What ``on_performed`` sees: the job's result, or the exception it raised."""

    result: Any = None
    exception: BaseException | None = None
    exception_handled: bool = False


@dataclass(frozen=True)
class CandidateState:
    """A state a job may move to: what elect-state filters read and replace."""

    state: State
    reason: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    #: When a Scheduled job is due.
    due_at: datetime | None = None
    #: The exception of a Failed candidate (or of a Deleted one that gave up retrying).
    exception: BaseException | None = None

    @classmethod
    def scheduled(cls, delay: timedelta, reason: str | None = None) -> CandidateState:
        due_at = datetime.now(UTC) + delay
        return cls(State.SCHEDULED, reason, {"enqueue_at": due_at.isoformat()}, due_at)

    @classmethod
    def enqueued(cls, reason: str | None = None) -> CandidateState:
        return cls(State.ENQUEUED, reason)

    @classmethod
    def deleted(cls, reason: str | None = None) -> CandidateState:
        return cls(State.DELETED, reason)

    @classmethod
    def failed(cls, exception: BaseException, reason: str | None = None) -> CandidateState:
        return cls(State.FAILED, reason, {}, None, exception)


class ElectStateContext(_Parameters):
    """What ``on_state_election`` sees. Assigning ``candidate_state`` keeps the one it replaces
    in ``traversed_states``: they are written to the history too (Failed, then Scheduled)."""

    def __init__(
        self,
        job_id: str,
        function: str,
        current_state: State | None,
        candidate: CandidateState,
        *,
        retry_count: int = 0,
        tracked: bool = False,
        parameter_store: Any = None,
        config: Any = None,
    ) -> None:
        self.job_id = job_id
        self.function = function
        self.current_state = current_state
        self._candidate = candidate
        self.traversed_states: list[CandidateState] = []
        self.retry_count = retry_count
        #: A plain Celery task that hfcelery tracks (not created through hfcelery).
        self.tracked = tracked
        self.parameter_store = parameter_store
        #: The app's ``HfConfig`` (None outside an app).
        self.config = config

    @cached_property
    def parameters(self) -> dict[str, Any]:  # type: ignore[override]
        return dict(self.parameter_store.all()) if self.parameter_store is not None else {}

    @property
    def candidate_state(self) -> CandidateState:
        return self._candidate

    @candidate_state.setter
    def candidate_state(self, value: CandidateState) -> None:
        if not isinstance(value, CandidateState):
            raise TypeError(f"candidate_state takes a CandidateState, not {value!r}")
        self.traversed_states.append(self._candidate)
        self._candidate = value


@dataclass(frozen=True)
class ApplyStateContext:
    """What apply-state filters see: a committed change of one job's state."""

    job_id: str
    function: str
    old_state: State | None
    new_state: State
    reason: str | None
    data: Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# Filter sets


@dataclass(frozen=True)
class FilterSet:
    """The filters of one function or task, sorted, by kind."""

    filters: tuple[Any, ...]

    @cached_property
    def client_filters(self) -> tuple[Any, ...]:
        return self._with("on_creating", "on_created")

    @cached_property
    def server_filters(self) -> tuple[Any, ...]:
        return self._with("on_performing", "on_performed")

    @cached_property
    def elect_filters(self) -> tuple[Any, ...]:
        return self._with("on_state_election")

    @cached_property
    def creation_elect_filters(self) -> tuple[Any, ...]:
        """The elect-state filters that may act on a new job's first state (automatic retry
        only elects for a failure)."""
        return tuple(f for f in self.elect_filters if not isinstance(f, AutomaticRetry))

    @cached_property
    def apply_filters(self) -> tuple[Any, ...]:
        return self._with("on_state_applied", "on_state_unapplied")

    def _with(self, *hooks: str) -> tuple[Any, ...]:
        return tuple(f for f in self.filters if any(_implements(f, h) for h in hooks))

    # Running them --------------------------------------------------------------------------

    def create(self, context: CreatingContext, write: Callable[[], str]) -> CreatedContext:
        """Run the client filters around ``write`` (which writes the job, returning its id)."""
        filters = self.client_filters
        if not filters:
            return CreatedContext(write(), context.function, context.parameters)

        def invoke(index: int) -> CreatedContext:
            if index == len(filters):
                return CreatedContext(write(), context.function, context.parameters)
            instance = filters[index]
            _call_client(instance, "on_creating", context)
            if context.canceled:
                context.items.setdefault("canceled_by", type(instance).__name__)
                return CreatedContext(
                    None, context.function, context.parameters, canceled=True, items=context.items
                )
            try:
                post = invoke(index + 1)
            except Exception as exc:
                cause = exc.__cause__ if isinstance(exc, ClientFilterError) else exc
                post = CreatedContext(
                    None,
                    context.function,
                    context.parameters,
                    exception=cause if isinstance(cause, Exception) else exc,
                    items=context.items,
                )
                _call_client(instance, "on_created", post)
                if not post.exception_handled:
                    raise
                return post
            _call_client(instance, "on_created", post)
            return post

        return invoke(0)

    def perform(self, context: PerformingContext, run: Callable[[], Any]) -> PerformedContext:
        """Run the server filters around ``run``; an exception of a filter is raised as
        JobPerformanceError, one of the job as it is (unless a filter handled it)."""
        filters = self.server_filters

        performed = context.performed

        def invoke(index: int) -> PerformedContext:
            if index == len(filters):
                return performed(result=run())
            instance = filters[index]
            call_server_filter(instance, "on_performing", context)
            if context.canceled:
                context.items.setdefault("canceled_by", type(instance).__name__)
                return performed(canceled=True)
            try:
                post = invoke(index + 1)
            except Exception as exc:
                post = performed(exception=exc)
                call_server_filter(instance, "on_performed", post)
                if not post.exception_handled:
                    raise
                return post
            call_server_filter(instance, "on_performed", post)
            return post

        return invoke(0)

    def elect(self, context: ElectStateContext) -> CandidateState:
        """Run the elect-state filters; return the elected state."""
        for instance in self.elect_filters:
            instance.on_state_election(context)
        return context.candidate_state

    def applied(self, context: ApplyStateContext) -> None:
        """Call the apply-state filters for a committed change; their errors are logged."""
        for hook in ("on_state_unapplied", "on_state_applied"):
            if hook == "on_state_unapplied" and context.old_state is None:
                continue
            for instance in self.apply_filters:
                if not _implements(instance, hook):
                    continue
                try:
                    getattr(instance, hook)(context)
                except Exception:
                    logger.exception(
                        "hfcelery filter %s.%s failed for job %s (%s)",
                        type(instance).__name__,
                        hook,
                        context.job_id,
                        context.new_state,
                    )


class ClientFilterError(Exception):
    """Internal: marks an exception raised by a client filter (its ``__cause__``); the client
    raises JobCreationError from it."""


def _call(instance: object, hook: str, context: object) -> None:
    method = getattr(instance, hook, None)
    if method is not None:
        method(context)


def _call_client(instance: object, hook: str, context: object) -> None:
    try:
        _call(instance, hook, context)
    except ClientFilterError:
        raise
    except Exception as exc:
        raise ClientFilterError(f"{type(instance).__name__}.{hook}") from exc


def call_server_filter(instance: object, hook: str, context: object) -> None:
    from hfcelery.errors import JobPerformanceError

    try:
        _call(instance, hook, context)
    except Exception as exc:
        raise JobPerformanceError(
            f"An exception occurred during execution of one of the filters "
            f"({type(instance).__name__}.{hook}): {type(exc).__name__}: {exc}"
        ) from exc


def sorted_filters(registered: Iterable[RegisteredFilter]) -> tuple[Any, ...]:
    """Hangfire's order: by ``order``, then scope; of a type that does not allow multiple
    instances only the last (most specific) one stays."""
    ordered = sorted(registered, key=lambda f: (f.order, f.scope))
    seen: set[type] = set()
    kept: list[Any] = []
    for item in reversed(ordered):
        kind = type(item.instance)
        if kind in seen and not getattr(item.instance, "allow_multiple", True):
            continue
        seen.add(kind)
        kept.append(item.instance)
    return tuple(reversed(kept))


#: Filters for every job. Holds :class:`AutomaticRetry` by default (order 20, as in Hangfire);
#: replace it (``global_filters.remove(AutomaticRetry)``, then ``add(AutomaticRetry(...))``) to
#: change the default retry for every job.
global_filters = JobFilterCollection()

#: Filter sets by (function or task, task class, global version). The entry keeps its key
#: objects alive, so an id is never reused for another function while its entry stands.
_cache: dict[tuple[int, int, int], tuple[object, object, FilterSet]] = {}


def filters_for(target: object, task_class: type | None = None) -> FilterSet:
    """The sorted filters of a job: the global ones, its Celery task class's, its function's."""
    key = (id(target), id(task_class), global_filters.version)
    found = _cache.get(key)
    if found is not None and found[0] is target and found[1] is task_class:
        return found[2]
    registered = global_filters.registered()
    for instance in getattr(task_class, TASK_FILTERS_ATTRIBUTE, None) or ():
        _check_filter(instance)
        registered.append(RegisteredFilter(instance, _order(instance, None), FilterScope.TASK))
    for instance in function_filters(target):
        registered.append(RegisteredFilter(instance, _order(instance, None), FilterScope.FUNCTION))
    from hfcelery.options import options_of

    options = options_of(target)
    if options is not None and options.retry is not None:
        retry = AutomaticRetry.from_policy(options.retry)
        registered.append(RegisteredFilter(retry, retry.order, FilterScope.FUNCTION))
    result = FilterSet(sorted_filters(registered))
    if len(_cache) > 4096:
        _cache.clear()
    _cache[key] = (target, task_class, result)
    return result


# ---------------------------------------------------------------------------------------------
# Automatic retry


class AutomaticRetry(JobFilter):
    """Hangfire's ``AutomaticRetry`` as an elect-state filter: a Failed job with attempts left
    is Scheduled again (Enqueued at once for a zero delay); after the last, it stays Failed or
    is Deleted (``on_attempts_exceeded="delete"``).

    ``attempts=None`` reads ``hfcelery_default_retry_attempts`` (10). ``celery_tasks`` says
    whether it retries plain Celery tasks (sent with ``delay``/``apply_async``), which keep
    Celery's own semantics by default; ``@automatic_retry`` on a task always applies.
    """

    order = 20
    allow_multiple = False

    def __init__(
        self,
        attempts: int | None = None,
        *,
        delays: Iterable[float] | None = None,
        only_on: Iterable[type[BaseException]] = (),
        except_on: Iterable[type[BaseException]] = (),
        on_attempts_exceeded: str = "fail",
        celery_tasks: bool | None = None,
    ) -> None:
        from hfcelery.options import AttemptsExceeded, RetryPolicy, _exception_types

        if attempts is not None and (not isinstance(attempts, int) or attempts < 0):
            raise ConfigurationError("AutomaticRetry attempts must be an integer >= 0")
        delays_seconds = tuple(float(d) for d in delays or ())
        if any(d < 0 for d in delays_seconds):
            raise ConfigurationError("AutomaticRetry delays must be >= 0")
        self.attempts = attempts
        self.policy = RetryPolicy(
            attempts=attempts if attempts is not None else 0,
            delays_seconds=delays_seconds,
            only_on=_exception_types(only_on),
            except_on=_exception_types(except_on),
            on_attempts_exceeded=AttemptsExceeded(on_attempts_exceeded),
        )
        self.celery_tasks = celery_tasks
        #: Set on the filter of a function's or task's own ``@automatic_retry``.
        self.explicit = False

    @classmethod
    def from_policy(cls, policy: RetryPolicy) -> AutomaticRetry:
        instance = cls.__new__(cls)
        instance.attempts = policy.attempts
        instance.policy = policy
        instance.celery_tasks = True
        instance.explicit = True
        return instance

    def __repr__(self) -> str:
        return f"AutomaticRetry(attempts={self.attempts!r})"

    def on_state_election(self, context: ElectStateContext) -> None:
        from hfcelery.options import AttemptsExceeded

        candidate = context.candidate_state
        if candidate.state is not State.FAILED or candidate.exception is None:
            return
        if context.tracked and not self._applies_to_celery_tasks(context):
            return
        exception = candidate.exception
        policy = self._policy(context)
        if isinstance(exception, PERMANENT_ERRORS) or not policy.applies_to(exception):
            return
        attempt = context.retry_count + 1
        if attempt <= policy.attempts:
            delay = policy.delay_seconds(attempt)
            reason = f"Retry attempt {attempt} of {policy.attempts}: {_short(exception)}"
            data = {"attempt": attempt}
            if delay <= 0:
                context.candidate_state = CandidateState(State.ENQUEUED, reason, data)
            else:
                due_at = datetime.now(UTC) + timedelta(seconds=delay)
                data["enqueue_at"] = due_at.isoformat()  # type: ignore[assignment]
                context.candidate_state = CandidateState(State.SCHEDULED, reason, data, due_at)
            logger.warning(
                "hfcelery job %s failed (%s: %s); retry attempt %d of %d in %.0f s",
                context.job_id,
                type(exception).__name__,
                exception,
                attempt,
                policy.attempts,
                delay,
            )
        elif policy.on_attempts_exceeded is AttemptsExceeded.DELETE:
            context.candidate_state = CandidateState(
                State.DELETED,
                # Hangfire's wording; the exception stays in the state's data.
                "Exceeded the maximum number of retry attempts."
                if policy.attempts > 0
                else "Retries were disabled for this job.",
                {**candidate.data, "reason": candidate.reason},
                None,
                exception,
            )

    def _applies_to_celery_tasks(self, context: ElectStateContext) -> bool:
        if self.explicit:
            return True
        if self.celery_tasks is not None:
            return self.celery_tasks
        return bool(getattr(context.config, "retry_celery_tasks", False))

    def _policy(self, context: ElectStateContext) -> RetryPolicy:
        if self.attempts is not None:
            return self.policy
        from dataclasses import replace

        attempts = getattr(context.config, "default_retry_attempts", None)
        return replace(self.policy, attempts=int(attempts if attempts is not None else 10))


def _short(exception: BaseException) -> str:
    """The exception's message as Hangfire puts it in a retry reason: at most 50 characters."""
    text = str(exception)
    return text if len(text) <= 50 else text[:49] + "…"


global_filters.add(AutomaticRetry())
