"""Filters around the job changes no caller and no run makes: the store's own.

The scheduler moving a due job to Enqueued, a continuation released by its parents, a
recurring occurrence's new job and a lost job's requeue are made by the store, in bulk, with no
client call or worker run around them. As in Hangfire (where its state changer runs them for
the DelayedJobScheduler, continuations and recurring jobs), each job's filters see them:

- elect-state filters, in the change's transaction, and may elect another state (written to
  the history after the one they replaced);
- apply-state filters, after the commit;
- client filters, for a recurring occurrence's new job, around its insert.

A requeue of a lost job (its worker died, or its outcome was lost) is not put to election: the
job runs again whatever a filter would elect. Its apply-state filters see it.

The client shares the creation path (:func:`create_through_filters`) for the jobs it writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

from hfcelery.calls import PERFORM_TASK_NAME, load_function
from hfcelery.errors import (
    HfceleryError,
    InvalidArgumentError,
    JobCreationCanceledError,
    JobCreationError,
)
from hfcelery.filters import (
    TASK_FILTERS_ATTRIBUTE,
    ApplyStateContext,
    CandidateState,
    ClientFilterError,
    CreatingContext,
    ElectStateContext,
    FilterSet,
    decorated_filters_exist,
    filters_for,
)
from hfcelery.jsonutil import from_json
from hfcelery.parameters import JobParameterStore
from hfcelery.records import NewJob, StateChange
from hfcelery.states import State

if TYPE_CHECKING:
    from hfcelery.config import HfConfig
    from hfcelery.extension import Extension


class StoredJobFilters:
    """The filters of stored jobs, for one app's store (see :class:`~hfcelery.store.base.
    StateFilters`): a job's function's or task's filters when this process can load it, else
    the global ones."""

    def __init__(self, extension: Extension) -> None:
        self._extension = extension

    def of(self, function: str, task_name: str) -> FilterSet:
        """The filters of a stored job: its Celery task's, or its function's when this
        process may load it (an allowed module); else the global ones."""
        if task_name != PERFORM_TASK_NAME:
            task = self._extension.app.tasks.get(task_name)
            return filters_for(task, type(task)) if task is not None else filters_for(None)
        try:
            func = load_function(function, self._extension.module_allowed)
        except HfceleryError:
            return filters_for(None)
        return filters_for(func)

    def own_filters_exist(self) -> bool:
        """Whether any function or task of this process has filters of its own."""
        return decorated_filters_exist() or any(
            getattr(type(task), TASK_FILTERS_ATTRIBUTE, None)
            for task in self._extension.app.tasks.values()
        )

    def active(self) -> bool:
        found = filters_for(None)
        return (
            bool(found.client_filters or found.creation_elect_filters or found.apply_filters)
            or self.own_filters_exist()
        )

    def elect(self, change: StateChange) -> StateChange | None:
        filters = self.of(change.function, change.task_name)
        if not filters.creation_elect_filters:
            return None
        candidate = CandidateState(
            change.new_state, change.reason, dict(change.data), change.due_at
        )
        context = ElectStateContext(
            change.job_id,
            change.function,
            change.old_state,
            candidate,
            parameter_store=JobParameterStore(self._extension, change.job_id),
            config=self._extension.config,
        )
        elected = filters.elect(context)
        if elected is candidate:
            return None
        return replace(
            change,
            new_state=elected.state,
            reason=elected.reason,
            data=dict(elected.data),
            due_at=elected.due_at,
        )

    def applied(self, changes: Sequence[StateChange]) -> None:
        for change in changes:
            filters = self.of(change.function, change.task_name)
            if filters.apply_filters:
                filters.applied(
                    ApplyStateContext(
                        change.job_id, change.function, change.old_state, change.new_state,
                        change.reason, dict(change.data),
                    )
                )  # fmt: skip

    def retention(self, state: State) -> timedelta | None:
        config = self._extension.config
        seconds = {
            State.SUCCEEDED: config.succeeded_retention_seconds,
            State.DELETED: config.deleted_retention_seconds,
            State.FAILED: config.failed_retention_seconds,
        }.get(state)
        return None if seconds is None else timedelta(seconds=seconds)

    def create(self, job: NewJob, write: Callable[[NewJob], bool]) -> NewJob | None:
        """Run a recurring occurrence's insert through its job's client filters and the
        election of its first state (see :func:`create_through_filters`)."""
        filters = self.of(job.function, job.task_name)
        return create_through_filters(job, filters, self._extension.config, write)


def creating_context(job: NewJob) -> CreatingContext:
    return CreatingContext(
        job.id,
        job.function,
        job.task_name,
        from_json(job.args_json),
        from_json(job.kwargs_json),
        job.queue,
        job.state,
    )


def create_through_filters(
    job: NewJob,
    filters: FilterSet,
    config: HfConfig | None,
    write: Callable[[NewJob], bool],
    *,
    elect: bool = True,
) -> NewJob | None:
    """Write a new job through its client filters, its first state elected by its
    elect-state filters (unless not ``elect``): ``on_creating``, the election, ``write``,
    ``on_created``. Returns the job as written; None when ``write`` wrote nothing (it was
    there already).

    A veto raises :class:`JobCreationCanceledError`, a filter's exception
    :class:`JobCreationError`; either way nothing is written.
    """
    context = creating_context(job)
    written: list[NewJob] = []

    def elect_and_write() -> str:
        final = elect_first_state(
            replace(job, parameters=dict(context.parameters)), filters, config
        )
        if write(final):
            written.append(final)
        return final.id

    try:
        created = filters.create(context, elect_and_write)
    except ClientFilterError as exc:
        raise JobCreationError(
            f"Background job creation failed: a client filter raised {exc.__cause__!r}"
        ) from exc.__cause__
    if created.canceled or created.job_id is None:
        raise JobCreationCanceledError(str(context.items.get("canceled_by", "?")), job.function)
    return written[0] if written else None


def elect_first_state(job: NewJob, filters: FilterSet, config: HfConfig | None) -> NewJob:
    """Let elect-state filters change a new job's first state: Enqueued or Scheduled (one
    waiting for parents stays Awaiting)."""
    if not filters.creation_elect_filters:
        return job
    candidate = CandidateState(job.state, job.reason, dict(job.data), job.due_at)
    context = ElectStateContext(job.id, job.function, None, candidate, config=config)
    context.__dict__["parameters"] = job.parameters
    try:
        elected = filters.elect(context)
    except Exception as exc:
        raise JobCreationError(
            f"Background job creation failed: an elect-state filter raised {exc!r}"
        ) from exc
    if elected is candidate:
        return job
    if job.state is State.AWAITING or elected.state not in (State.ENQUEUED, State.SCHEDULED):
        raise InvalidArgumentError(
            f"a filter elected {elected.state.value} as the first state of a new "
            f"{job.state.value} job; a new job can start Enqueued or Scheduled"
        )
    data = {**elected.data, "queue": job.queue}
    due_at = elected.due_at
    if elected.state is State.SCHEDULED:
        if due_at is None:
            raise InvalidArgumentError("a filter elected Scheduled without a due time")
        data.setdefault("enqueue_at", due_at.isoformat())
    return replace(
        job,
        state=elected.state,
        reason=elected.reason,
        data=data,
        due_at=due_at if elected.state is State.SCHEDULED else None,
    )
