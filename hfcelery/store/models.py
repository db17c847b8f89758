"""The store's tables. Changes to them ship as Alembic migrations in ``store/migrations``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TABLE_PREFIX = "hfcelery_"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back as an aware UTC datetime.

    SQLite keeps no zone, PostgreSQL converts to the session zone; this makes both the same.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("hfcelery stores aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Job(Base):
    """One background job: what it runs and its current state."""

    __tablename__ = TABLE_PREFIX + "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: ``module:qualname`` of a plain function, or the Celery task name.
    function: Mapped[str] = mapped_column(String(255))
    #: How lists show the job (``@hfcelery.display_name``), if not by its function.
    display_name: Mapped[str | None] = mapped_column(String(255))
    #: A plain Celery task that hfcelery tracks (it keeps Celery's semantics, e.g. no retries).
    tracked: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Deleted while running, with its worker process to be terminated.
    terminate: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The Celery task the message is addressed to.
    task_name: Mapped[str] = mapped_column(String(255))
    #: JSON text, as the message serializer writes it.
    args: Mapped[str] = mapped_column(Text)
    kwargs: Mapped[str] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: False while the job is Enqueued but its message may not have reached the broker.
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Server and worker holding a Processing job.
    server_id: Mapped[str | None] = mapped_column(String(255))
    worker_id: Mapped[str | None] = mapped_column(String(64))
    #: When a Scheduled job is due.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: When a final job may be removed.
    expire_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Number of times the job has failed and been retried.
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Number of times a worker has claimed the job. Each claim hands the new number to its
    #: worker, which finishes only that claim: never one a requeue or another worker made since.
    claims: Mapped[int] = mapped_column(Integer, default=0)
    #: The stamp of the newest send of a plain Celery task (see ``calls.STAMP_HEADER``): only a
    #: message carrying it may start the job.
    sent_stamp: Mapped[str | None] = mapped_column(String(32))
    #: Awaiting: how many parents have not finished yet.
    awaiting_parents: Mapped[int] = mapped_column(Integer, default=0)
    #: How many continuations wait for this job (0 keeps its finish on the fast path).
    continuation_count: Mapped[int] = mapped_column(Integer, default=0)
    #: The recurring job that created this one, and the occurrence it was created for.
    recurring_id: Mapped[str | None] = mapped_column(String(100))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # Partial indexes: most jobs have no due time, expiry or server, and pay for no entry.
    __table_args__ = (
        # One job per occurrence of a recurring job, however many beats fire it.
        Index(
            None,
            "recurring_id",
            "scheduled_for",
            unique=True,
            postgresql_where=text("recurring_id IS NOT NULL"),
            sqlite_where=text("recurring_id IS NOT NULL"),
        ),
        Index(None, "state", "state_changed_at", "id"),
        # The pages' lists across states, per queue and per function (keyset paging).
        Index(None, "state_changed_at", "id"),
        Index(None, "queue", "state", "state_changed_at", "id"),
        Index(None, "function", "state_changed_at", "id"),
        Index(
            None,
            "due_at",
            postgresql_where=text("due_at IS NOT NULL"),
            sqlite_where=text("due_at IS NOT NULL"),
        ),
        Index(
            None,
            "expire_at",
            postgresql_where=text("expire_at IS NOT NULL"),
            sqlite_where=text("expire_at IS NOT NULL"),
        ),
        Index(
            None,
            "server_id",
            postgresql_where=text("server_id IS NOT NULL"),
            sqlite_where=text("server_id IS NOT NULL"),
        ),
    )


class JobState(Base):
    """One entry of a job's state history."""

    __tablename__ = TABLE_PREFIX + "job_states"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    # No foreign key: its check would cost every state change a lookup of the job row (about
    # a third of the worker path's database time). The store deletes history with its job.
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    #: JSON object with the state's data (queue, server, duration, exception, ...).
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Continuation(Base):
    """A job (child) that waits for another (parent) to finish."""

    __tablename__ = TABLE_PREFIX + "continuations"

    parent_id: Mapped[str] = mapped_column(
        String(64), ForeignKey(Job.id, ondelete="CASCADE"), primary_key=True
    )
    child_id: Mapped[str] = mapped_column(
        String(64), ForeignKey(Job.id, ondelete="CASCADE"), primary_key=True, index=True
    )
    #: ``JobContinuationOptions`` flags.
    options: Mapped[int] = mapped_column(Integer)
    #: Append the parents' results to the child's arguments when it is released: "one"
    #: appends the parent's result, "all" the list of every parent's (a join); "join" none,
    #: but a join's exceptions (``pass_exception``) go as a list too; None neither.
    pass_result: Mapped[str | None] = mapped_column(String(8))
    #: Append the parents' exceptions too (Hangfire's ``FromException``): None for a parent
    #: that succeeded, else its exception's type and message.
    pass_exception: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The state the child moves to when released: None (Enqueued) or "Scheduled".
    next_state: Mapped[str | None] = mapped_column(String(16))
    #: The delay of a "Scheduled" next state, in seconds from the release.
    next_delay_seconds: Mapped[float | None] = mapped_column(Float)
    #: Whether this parent's finish has been counted down for the child (once only, even if
    #: the parent is finished again after a requeue).
    counted: Mapped[bool] = mapped_column(Boolean)
    #: This parent's place in the list the child was created with (0 first): a join's results
    #: and exceptions are passed in this order. Rows from before it was kept are all 0 (then
    #: the parents' ids decide, as they did).
    position: Mapped[int] = mapped_column(Integer, default=0)


class JobParameter(Base):
    """A small named value stored with a job (Hangfire's job parameters), set by filters and
    by the job itself; gone with the job."""

    __tablename__ = TABLE_PREFIX + "job_parameters"

    job_id: Mapped[str] = mapped_column(
        String(64), ForeignKey(Job.id, ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    #: JSON.
    value: Mapped[str] = mapped_column(Text)


class RecurringJob(Base):
    """A recurring job's definition: what to run, when, and what happened last."""

    __tablename__ = TABLE_PREFIX + "recurring_jobs"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    function: Mapped[str] = mapped_column(String(255))
    task_name: Mapped[str] = mapped_column(String(255))
    args: Mapped[str] = mapped_column(Text)
    kwargs: Mapped[str] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    cron: Mapped[str] = mapped_column(String(100))
    time_zone: Mapped[str] = mapped_column(String(64))
    misfire: Mapped[str] = mapped_column(String(16))
    paused: Mapped[bool] = mapped_column(Boolean)
    #: Bumped by every change, so beat knows which schedules to reset.
    revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_execution: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_job_id: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)


class Server(Base):
    """A worker process group (a ``celery worker``) and its heartbeat."""

    __tablename__ = TABLE_PREFIX + "servers"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(Text)
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Lock(Base):
    """A named lease, so that one worker at a time runs a maintenance step."""

    __tablename__ = TABLE_PREFIX + "locks"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DroppedMessage(Base):
    """A message the worker acknowledged without running it or recording a job, because the
    store cannot hold what it carries (an id that is too long or not text, say)."""

    __tablename__ = TABLE_PREFIX + "dropped_messages"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    #: The message's id as it came, made storable (escaped, cut to length).
    message_id: Mapped[str] = mapped_column(String(255))
    task_name: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    server_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Statistic(Base):
    """A counter: hourly ("succeeded" at an hour) or cumulative (at ``STATISTIC_TOTAL_HOUR``).

    Rolled up from the state history by the maintenance loop, so the pages never count jobs
    for history and the worker's path writes nothing more.
    """

    __tablename__ = TABLE_PREFIX + "statistics"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class JobProgress(Base):
    """What a running job reported with ``hfcelery.progress`` and ``hfcelery.log``."""

    __tablename__ = TABLE_PREFIX + "job_progress"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fraction: Mapped[float | None] = mapped_column(Float)
    #: JSON list of the newest log lines (bounded).
    log: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
