"""Plain records the store returns and takes: jobs, states, servers, pages."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from hfcelery.states import State


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job about to be written: what it runs and its first state."""

    id: str
    function: str
    task_name: str
    args_json: str
    kwargs_json: str
    queue: str
    state: State
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    display_name: str | None = None
    due_at: datetime | None = None
    #: A plain Celery task that hfcelery only tracks.
    tracked: bool = False
    #: The stamp of the message that sends it (plain Celery tasks, see ``calls.STAMP_HEADER``).
    sent_stamp: str | None = None
    #: Job parameters written with it (set by client filters).
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change of one job's state that the store makes by itself: the scheduler's, a
    continuation's release, a recurring occurrence's, a requeue of a lost job. The store hands
    it to the job's elect-state filters (which may answer another one) and, once committed, to
    its apply-state filters."""

    job_id: str
    function: str
    task_name: str
    #: None for a job the change creates (a recurring occurrence).
    old_state: State | None
    new_state: State
    reason: str | None
    data: dict[str, Any] = field(default_factory=dict)
    #: When a Scheduled job falls due.
    due_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProcessingHolder:
    """A job's state and, while it is Processing, who runs it: its server and the number of
    the claim that started the run (a cancellation check compares them with its own)."""

    state: State
    server_id: str | None
    claim: int

    def held_by(self, server_id: str | None, claim: int | None) -> bool:
        """Whether the run of ``claim`` (any, if None) on ``server_id`` still holds the job."""
        return (
            self.state is State.PROCESSING
            and self.server_id == server_id
            and (claim is None or self.claim == claim)
        )


@dataclass(frozen=True, slots=True)
class JobHead:
    """What a change by request needs of a job: its state and what it runs."""

    state: State
    function: str
    task_name: str


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One entry of a job's state history."""

    state: State
    reason: str | None
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class JobSummary:
    """A job as lists show it."""

    id: str
    function: str
    task_name: str
    queue: str
    state: State
    created_at: datetime
    state_changed_at: datetime
    server_id: str | None
    retry_count: int
    display_name: str | None
    due_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobDetails:
    """A job with its arguments and its whole state history, oldest first."""

    id: str
    function: str
    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    state: State
    created_at: datetime
    state_changed_at: datetime
    expire_at: datetime | None
    server_id: str | None
    worker_id: str | None
    retry_count: int
    display_name: str | None
    due_at: datetime | None
    history: list[StateRecord]
    #: The jobs this one waits for (a continuation) or waited for.
    parent_ids: list[str] = field(default_factory=list)
    #: The continuations that wait (or waited) for this job.
    continuation_ids: list[str] = field(default_factory=list)
    #: The recurring job that created this one, and the occurrence it was created for.
    recurring_id: str | None = None
    scheduled_for: datetime | None = None
    #: Job parameters (set by filters and by the job), by name.
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of a list; pass ``next_cursor`` as ``after`` for the next one (None at the end)."""

    items: list[JobSummary]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """A running ``celery worker`` as the store knows it."""

    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """A job a worker has just moved to Processing."""

    created_at: datetime
    retry_count: int
    #: The claim's number: the worker finishes the job with it (see ``Store.finish``).
    number: int = 1


@dataclass(frozen=True, slots=True)
class Dispatch:
    """What is needed to (re)send a job's message."""

    id: str
    function: str
    task_name: str
    args_json: str
    kwargs_json: str
    queue: str
    tracked: bool = False


@dataclass(frozen=True, slots=True)
class RecurringDefinition:
    """What ``RecurringJob.add_or_update`` writes."""

    id: str
    function: str
    task_name: str
    args_json: str
    kwargs_json: str
    queue: str
    display_name: str | None
    cron: str
    time_zone: str
    misfire: str


@dataclass(frozen=True, slots=True)
class RecurringJobRecord:
    """A recurring job as the store knows it."""

    id: str
    function: str
    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    display_name: str | None
    cron: str
    time_zone: str
    misfire: str
    paused: bool
    revision: int
    created_at: datetime
    updated_at: datetime
    next_execution: datetime | None
    last_execution: datetime | None
    last_job_id: str | None
    last_job_state: State | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DroppedMessageRecord:
    """A message a worker acknowledged without running it or recording a job."""

    message_id: str
    task_name: str
    reason: str
    server_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a list shows: every condition given must hold (None: any)."""

    state: State | None = None
    #: The function's exact name, or a prefix of it ending in ``*`` (``reports.*``).
    function: str | None = None
    queue: str | None = None
    #: The last state change at or after ``since`` and before ``until``.
    since: datetime | None = None
    until: datetime | None = None
    #: Text the JSON of the arguments contains (case-insensitive).
    text: str | None = None
    #: Only jobs that failed before and wait for their next attempt (Scheduled, retried).
    retries: bool = False
    #: Only jobs in one of these states (empty: any): those an action over a filter can change.
    among: tuple[State, ...] = ()

    def changeable_by(self, transition: str) -> JobFilter:
        """This filter, narrowed to the jobs the named transition can leave from (see
        :data:`hfcelery.states.TRANSITIONS`): what an action over it can change."""
        from hfcelery.states import sources

        states = sources(transition)
        return self if len(states) == len(State) else replace(self, among=states)


@dataclass(frozen=True, slots=True)
class JobRow:
    """A list row: the job and what its current state says (exception, result, duration...)."""

    job: JobSummary
    reason: str | None
    data: dict[str, Any]
    #: Awaiting jobs: the parents they wait for.
    parent_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobRowPage:
    """A page of list rows; pass ``next_cursor`` as ``after`` for the next (None at the end)."""

    items: list[JobRow]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class JobProgress:
    """What a job reported with ``hfcelery.progress`` and ``hfcelery.log``."""

    fraction: float | None
    log: list[str]
    updated_at: datetime
