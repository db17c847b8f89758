"""The job store: the only module that opens sessions and issues queries.

Every state change is a compare-and-set ``UPDATE`` on the job row followed by an ``INSERT`` into
its state history, in one transaction. The worker path costs four statements per job: the claim
(update + history) and the finish (update + history).

On PostgreSQL, transactions commit asynchronously (``synchronous_commit=off``) unless they are
marked durable: a crash of the database server may then forget the last fraction of a second of
commits, and each such loss is repaired rather than prevented. A lost job row is written again
from its message by the worker that receives it (:meth:`Store.claim`); a lost outcome leaves the
job Processing on a live server, which requeues it (:meth:`Store.requeue_orphans`); a lost claim
is recognised when the outcome is recorded (:meth:`Store.finish`). What has no other record (a
job whose message could not be sent, an operator's delete or requeue) commits durably.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Row, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Update, UpdateBase
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import Select

from hfcelery.continuations import JobContinuationOptions
from hfcelery.errors import HfceleryError, InvalidArgumentError, JobNotFoundError, StoreError
from hfcelery.jsonutil import from_json, to_json
from hfcelery.records import (
    Claim,
    Dispatch,
    JobDetails,
    JobPage,
    JobSummary,
    NewJob,
    RecurringDefinition,
    RecurringJobRecord,
    ServerRecord,
    StateRecord,
)
from hfcelery.states import State
from hfcelery.store import schema
from hfcelery.store.models import (
    Continuation,
    Job,
    JobState,
    Lock,
    RecurringJob,
    Server,
    UTCDateTime,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
ReturningDML = UpdateBase

#: Errors of a publish that mean "the broker is unreachable", not "the message is wrong".
BROKER_UNAVAILABLE = (BrokerOperationalError, OSError)
SQLITE_BUSY_TIMEOUT_SECONDS = 30
DEFAULT_DELETED_RETENTION = timedelta(days=1)
ASYNC_COMMIT_CONNECT_ARGS = {"options": "-c synchronous_commit=off"}

_DISPATCH_COLUMNS = (
    Job.id, Job.function, Job.task_name, Job.args, Job.kwargs, Job.queue, Job.tracked,
)  # fmt: skip


def utcnow() -> datetime:
    return datetime.now(UTC)


def normalise_url(url: str | URL) -> URL:
    """Parse a store URL; a bare ``postgresql://`` URL uses psycopg (version 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


class Store:
    """The job store over one SQLAlchemy engine.

    The engine is created lazily and again after a fork, so a store made in a prefork worker's
    parent is safe to use in its children. A SQLite store creates or upgrades its schema on first
    use; a PostgreSQL store must be migrated with ``celery hf migrate``.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        auto_upgrade: bool | None = None,
        publisher: Callable[[Dispatch], None] | None = None,
        deleted_retention: timedelta = DEFAULT_DELETED_RETENTION,
    ) -> None:
        self.url = normalise_url(url)
        #: How long continuations deleted because their condition was not met are kept.
        self.deleted_retention = deleted_retention
        #: Sends the messages of continuations released by a store operation (without one,
        #: they wait, unpublished, for a worker's maintenance loop).
        self.publisher = publisher
        self.dialect = self.url.get_backend_name()
        self.auto_upgrade = self.dialect == "sqlite" if auto_upgrade is None else auto_upgrade
        self._engine: Engine | None = None
        self._pid = 0
        self._schema_checked = False

    # -- engine ---------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine of this process, its schema checked (or, for SQLite, upgraded) once."""
        engine = self._process_engine()
        if not self._schema_checked:
            schema.ensure(engine, auto_upgrade=self.auto_upgrade)
            self._schema_checked = True
        return engine

    def _process_engine(self) -> Engine:
        # After a fork, leave the parent's pooled connections alone and start a new pool.
        pid = os.getpid()
        if self._engine is None or self._pid != pid:
            if self._engine is not None:
                self._engine.dispose(close=False)
            self._engine = self._create_engine()
            self._pid = pid
        return self._engine

    def _create_engine(self) -> Engine:
        if self.dialect == "sqlite":
            if self.url.database in (None, "", ":memory:"):
                raise StoreError("an in-memory SQLite store cannot be shared with workers")
            engine = create_engine(
                self.url,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            _configure_sqlite(engine)
            return engine
        connect_args = {} if "options" in self.url.query else ASYNC_COMMIT_CONNECT_ARGS
        return create_engine(
            self.url, pool_size=5, max_overflow=10, pool_recycle=3600, connect_args=connect_args
        )

    def dispose(self) -> None:
        """Close every pooled connection of this process."""
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None

    def schema_revision(self) -> str | None:
        """The schema version the store is at (None before the first migration)."""
        return schema.current_revision(self._process_engine())

    def migrate(self) -> str:
        """Bring the schema to the newest version; return that version."""
        schema.upgrade(self._process_engine())
        self._schema_checked = True
        return schema.head_revision()

    def _run(
        self, work: Callable[[Connection], T], *, durable: bool = False, single: bool = False
    ) -> T:
        """Run ``work`` in one transaction; retry once on a connection the server dropped.

        ``durable`` transactions wait for the commit to reach disk on PostgreSQL. ``single``
        work issues one statement on PostgreSQL, which runs in autocommit mode: atomic by
        itself, without the round trips of BEGIN and COMMIT.
        """
        for attempt in (1, 2):
            try:
                if single and self.dialect == "postgresql":
                    with self.engine.connect() as conn:
                        conn.execution_options(isolation_level="AUTOCOMMIT")
                        return work(conn)
                with self.engine.begin() as conn:
                    if durable:
                        self._make_durable(conn)
                    return work(conn)
            except DBAPIError as exc:
                if exc.connection_invalidated and attempt == 1:
                    logger.warning("hfcelery store connection lost, retrying: %s", exc.orig)
                    continue
                raise StoreError(f"hfcelery store operation failed: {exc}") from exc
        raise AssertionError("unreachable")

    def _change(
        self,
        conn: Connection,
        job_update: ReturningDML,
        state: State,
        reason: str | None,
        data: dict[str, Any],
        now: datetime,
        params: dict[str, Any] | None = None,
        with_history: Select[Any] | None = None,
    ) -> Sequence[Row[Any]]:
        """Write job rows (``job_update`` returns ``Job.id`` first) and their history entries.

        On PostgreSQL both happen in one statement (``with_history``, or one built from
        ``job_update``); SQLite takes two.
        """
        entry = _state_row(None, state, reason, data, now)
        if self.dialect != "postgresql":
            rows = conn.execute(job_update, params or {}).all()
            if rows:
                conn.execute(insert(JobState), [{**entry, "job_id": row[0]} for row in rows])
            return rows
        statement = with_history if with_history is not None else _with_history(job_update)
        history = {f"h_{key}": value for key, value in entry.items() if key != "job_id"}
        return conn.execute(statement, {**(params or {}), **history}).all()

    # -- writing jobs -----------------------------------------------------------------------

    def create_job(self, job: NewJob, publish: Callable[[Dispatch], None] | None = None) -> bool:
        """Write a job and its first state; if ``publish`` is given, send its message too.

        The message is sent inside the transaction, before the commit: a job is never committed
        as published without its message. A worker that receives the message before the commit
        waits for it (see :meth:`claim`), and one whose job was never committed writes the job
        from the message. If the broker cannot be reached the job is committed, durably, as
        unpublished, and a worker's maintenance loop publishes it later; any other publishing
        error rolls the job back and is raised. Returns whether the message was sent.
        """
        now = utcnow()
        row = {f"p_{k}": v for k, v in _job_row(job, now, published=publish is not None).items()}

        def work(conn: Connection) -> bool:
            self._change(
                conn, _INSERT_JOB, job.state, job.reason, job.data, now, row, _INSERT_JOB_H
            )
            if publish is None:
                return False
            try:
                publish(_dispatch_of(job))
            except BROKER_UNAVAILABLE as exc:
                _log_unpublished(1, exc)
                self._make_durable(conn)
                conn.execute(update(Job).where(Job.id == job.id).values(published=False))
                return False
            return True

        # Without a message the store is the job's only record: commit it durably.
        return self._run(work, durable=publish is None)

    def mark_published(self, job_ids: Sequence[str]) -> None:
        """Record that the messages of Enqueued jobs reached the broker."""
        if not job_ids:
            return

        stmt = (
            update(Job)
            .where(Job.id.in_(job_ids), Job.state == State.ENQUEUED)
            .values(published=True)
        )
        self._run(lambda conn: conn.execute(stmt), single=True)

    def claim(
        self,
        job_id: str,
        *,
        server_id: str,
        worker_id: str,
        server_timeout: timedelta,
        attempt: int = 0,
        untracked: Callable[[], NewJob] | None = None,
    ) -> Claim | None:
        """Move a job to Processing if it may start; None means skip it.

        A job may start when it is Enqueued, or Processing on a server whose heartbeat stopped,
        or Processing or Scheduled for an earlier ``attempt`` (the message of a Celery
        ``self.retry()``).
        ``untracked`` returns the description of a job that has a message but no row (its
        writer died between publishing and committing, or the store was down when a plain
        Celery task was sent): it is written now, already Processing.
        """
        now = utcnow()
        params = {
            "p_id": job_id,
            "p_server": server_id,
            "p_worker": worker_id,
            "p_now": now,
            "p_alive_after": now - server_timeout,
            "p_attempt": attempt,
        }
        data = {"server_id": server_id, "worker_id": worker_id, "started_at": now.isoformat()}

        def claim_once() -> Claim | None:
            rows = self._run(
                lambda conn: self._change(
                    conn, _CLAIM, State.PROCESSING, None, data, now, params, _CLAIM_H
                ),
                single=True,
            )
            return Claim(rows[0].created_at, rows[0].retry_count) if rows else None

        def record(conn: Connection) -> bool:
            """Write the job from its message; False if its row exists (by now)."""
            if untracked is None or self._job_exists(conn, job_id):
                return False
            job = untracked()
            row = _job_row(job, now, published=True)
            row.update(state=State.PROCESSING, server_id=server_id, worker_id=worker_id)
            # On PostgreSQL this insert waits for a writer that has not committed yet.
            if not self._insert_ignoring_conflict(conn, row):
                return False
            conn.execute(
                insert(JobState),
                [
                    _state_row(job_id, job.state, job.reason, job.data, now),
                    _state_row(job_id, State.PROCESSING, None, data, now),
                ],
            )
            return True

        claimed = claim_once()
        if claimed is not None or untracked is None:
            return claimed
        # No row, or a row the claim could not see yet: its writer may have committed since.
        if self._run(record):
            return Claim(now, 0)
        return claim_once()

    def finish(
        self,
        job_id: str,
        *,
        server_id: str,
        worker_id: str | None = None,
        state: State,
        reason: str | None,
        data: dict[str, Any],
        retention: timedelta | None = None,
        started_at: datetime | None = None,
        due_at: datetime | None = None,
    ) -> bool:
        """Move a job this server (and worker, if given) is processing to ``state``.

        Returns False when the job was taken away meanwhile (deleted, requeued, or claimed
        again after a retry), and nothing is written then. With ``started_at``, a job found
        still Enqueued as it was before that time is finished too: its claim was lost.
        """
        now = utcnow()
        params = {
            "p_id": job_id,
            "p_server": server_id,
            "p_worker": worker_id,
            "p_state": state,
            "p_now": now,
            "p_expire_at": None if retention is None else now + retention,
            "p_started_at": started_at,
            "p_due_at": due_at,
        }

        def apply(change: ReturningDML, with_history: Select[Any]) -> bool:
            return bool(
                self._run(
                    lambda conn: self._change(
                        conn, change, state, reason, data, now, params, with_history
                    ),
                    single=True,
                )
            )

        if apply(_FINISH_ALONE, _FINISH_ALONE_H) or self._finish_with_continuations(
            _FINISH, state, reason, data, now, params
        ):
            return True
        if started_at is None:
            return False
        if not (
            apply(_FINISH_LOST_CLAIM_ALONE, _FINISH_LOST_CLAIM_ALONE_H)
            or self._finish_with_continuations(_FINISH_LOST_CLAIM, state, reason, data, now, params)
        ):
            return False
        logger.warning("hfcelery job %s: its claim was lost; recorded %s", job_id, state)
        return True

    def _finish_with_continuations(
        self,
        finish: Update,
        state: State,
        reason: str | None,
        data: dict[str, Any],
        now: datetime,
        params: dict[str, Any],
    ) -> bool:
        """The finish of a job that has continuations: released in the same transaction."""
        unrestricted = finish.where(Job.continuation_count > 0)  # the fast path's complement
        released: list[Dispatch] = []

        def work(conn: Connection) -> bool:
            rows = self._change(conn, unrestricted, state, reason, data, now, params)
            if rows and state.is_final:
                released.extend(self._release_children(conn, [rows[0][0]], now))
            return bool(rows)

        finished = self._run(work)
        self._send_released(released)
        return finished

    def change_state(
        self,
        job_id: str,
        state: State,
        *,
        reason: str | None,
        data: dict[str, Any] | None = None,
        expected_state: State | None = None,
        from_states: Sequence[State] | None = None,
        retention: timedelta | None = None,
        due_at: datetime | None = None,
        publish: Callable[[Dispatch], None] | None = None,
        terminate: bool = False,
    ) -> bool:
        """Change a job's state if it is in ``expected_state`` (or any of ``from_states``).

        Moving to Enqueued with ``publish`` sends the job's message again; moving to Scheduled
        takes ``due_at``; ``terminate`` asks the server running the job to kill it. Returns
        whether the change was applied.
        """
        now = utcnow()
        conditions = [Job.id == job_id]
        if expected_state is not None:
            conditions.append(Job.state == expected_state)
        if from_states is not None:
            conditions.append(Job.state.in_(list(from_states)))
        stmt = (
            update(Job)
            .where(*conditions)
            .values(
                state=state,
                state_changed_at=now,
                server_id=None,
                worker_id=None,
                published=False,
                expire_at=None if retention is None else now + retention,
                due_at=due_at,
                terminate=terminate,
            )
            .returning(*_DISPATCH_COLUMNS, Job.continuation_count)
        )

        released: list[Dispatch] = []

        def work(conn: Connection) -> Sequence[Row[Any]]:
            rows = self._change(conn, stmt, state, reason, data or {}, now)
            if rows and state.is_final and rows[0].continuation_count:
                released.extend(self._release_children(conn, [job_id], now))
            return rows

        rows = self._run(work, durable=True)
        if rows and publish is not None:
            self._send([_dispatch_from_row(rows[0])], publish)
        self._send_released(released)
        return bool(rows)

    def add_continuation(
        self,
        job: NewJob,
        parent_ids: Sequence[str],
        options: int,
        *,
        pass_result: str | None = None,
    ) -> State:
        """Write a job that waits (Awaiting) until all of ``parent_ids`` have finished.

        Each parent is locked (in a fixed order) while the continuation is added, so a parent
        finishing at the same moment either sees the continuation and releases it in its own
        transaction, or has finished before, and the continuation is released here at once.
        Raises JobNotFoundError (writing nothing) if a parent does not exist. Returns the
        state the job is in when this returns.
        """
        now = utcnow()
        released: list[Dispatch] = []

        def work(conn: Connection) -> State:
            waiting = 0
            finished: dict[str, bool] = {}
            for parent_id in sorted(set(parent_ids)):
                state = conn.execute(
                    update(Job)
                    .where(Job.id == parent_id)
                    .values(continuation_count=Job.continuation_count + 1)
                    .returning(Job.state)
                ).scalar()
                if state is None:
                    raise JobNotFoundError(parent_id)
                finished[parent_id] = State(state).is_final
                waiting += not finished[parent_id]
            row = _job_row(job, now, published=False)
            row["awaiting_parents"] = waiting
            conn.execute(insert(Job), [row])
            conn.execute(
                insert(JobState), [_state_row(job.id, State.AWAITING, job.reason, job.data, now)]
            )
            conn.execute(
                insert(Continuation),
                [
                    {
                        "parent_id": p,
                        "child_id": job.id,
                        "options": options,
                        "pass_result": pass_result,
                        "counted": finished[p],
                    }
                    for p in sorted(set(parent_ids))
                ],
            )
            if waiting:
                return State.AWAITING
            dispatch, state = self._release(conn, job.id, now, "Its parents had already finished")
            if dispatch is not None:
                released.append(dispatch)
            return state

        # Durable: a continuation has no message to be rebuilt from. A JobNotFoundError rolls
        # everything back.
        final_state = self._run(work, durable=True)
        self._send_released(released)
        return final_state

    def _release_children(
        self, conn: Connection, parent_ids: list[str], now: datetime
    ) -> list[Dispatch]:
        """Count finished parents down for their Awaiting continuations; release those with
        none left (Enqueued, or Deleted when the condition was not met, which finishes them
        too and so releases their own). Returns the Enqueued ones, to publish after commit."""
        to_publish: list[Dispatch] = []
        frontier = list(parent_ids)
        while frontier:
            parent_id = frontier.pop()
            # Each parent counts once, even when it finishes again after a requeue.
            newly_counted = (
                conn.execute(
                    update(Continuation)
                    .where(Continuation.parent_id == parent_id, Continuation.counted.is_(False))
                    .values(counted=True)
                    .returning(Continuation.child_id)
                )
                .scalars()
                .all()
            )
            if not newly_counted:
                continue
            ready = conn.execute(
                update(Job)
                .where(Job.id.in_(newly_counted), Job.state == State.AWAITING)
                .values(awaiting_parents=Job.awaiting_parents - 1)
                .returning(Job.id, Job.awaiting_parents)
            ).all()
            for child_id, waiting in ready:
                if waiting > 0:
                    continue
                reason = f"Continuation of {parent_id}"
                dispatch, state = self._release(conn, child_id, now, reason)
                if dispatch is not None:
                    to_publish.append(dispatch)
                elif state is State.DELETED:
                    frontier.append(child_id)
        return to_publish

    def _release(
        self, conn: Connection, child_id: str, now: datetime, reason: str
    ) -> tuple[Dispatch | None, State]:
        """Release an Awaiting job whose parents have all finished."""
        parents = conn.execute(
            select(Job.id, Job.state, Continuation.options, Continuation.pass_result)
            .join(Continuation, Continuation.parent_id == Job.id)
            .where(Continuation.child_id == child_id)
            .order_by(Job.id)
        ).all()
        options = JobContinuationOptions(parents[0].options) if parents else None
        met = options is not None and options.met_by(State(p.state) for p in parents)
        values: dict[str, Any] = {"state_changed_at": now, "published": False}
        if met:
            values["state"] = State.ENQUEUED
            if parents[0].pass_result:
                values["args"] = self._args_with_results(
                    conn, child_id, [p.id for p in parents], as_list=parents[0].pass_result == "all"
                )
        else:
            values["state"] = State.DELETED
            values["expire_at"] = now + self.deleted_retention
            reason = "Continuation condition was not met"
        row = conn.execute(
            update(Job)
            .where(Job.id == child_id, Job.state == State.AWAITING)
            .values(**values)
            .returning(*_DISPATCH_COLUMNS, Job.continuation_count)
        ).first()
        if row is None:
            return None, State.AWAITING
        data = {"parents": {p.id: p.state for p in parents}}
        conn.execute(insert(JobState), [_state_row(child_id, values["state"], reason, data, now)])
        if met:
            return _dispatch_from_row(row), State.ENQUEUED
        return None, State.DELETED

    def _args_with_results(
        self, conn: Connection, child_id: str, parent_ids: list[str], *, as_list: bool
    ) -> str:
        results = []
        for parent_id in parent_ids:
            data = conn.execute(
                select(JobState.data)
                .where(JobState.job_id == parent_id, JobState.state == State.SUCCEEDED)
                .order_by(JobState.id.desc())
                .limit(1)
            ).scalar()
            results.append(from_json(data).get("result") if data else None)
        args = from_json(conn.execute(select(Job.args).where(Job.id == child_id)).scalar_one())
        args.append(results if as_list else results[0])
        return to_json(args)

    def _send_released(self, released: Sequence[Dispatch]) -> None:
        if released and self.publisher is not None:
            self._send(released, self.publisher)

    def release_processing(self, job_id: str, *, server_id: str, reason: str) -> bool:
        """Put a job back to Enqueued whose worker process was lost.

        Celery usually redelivers its message, but not always (a success already stored, the
        retries for lost workers used up): it is left unpublished, so the maintenance loop sends
        it again if it is still Enqueued after the grace period.
        """
        conditions = [Job.id == job_id, Job.state == State.PROCESSING, Job.server_id == server_id]
        return self._requeue_where(conditions, reason=reason, published=False) == 1

    def retry(
        self,
        job_id: str,
        *,
        server_id: str,
        worker_id: str | None,
        due_at: datetime,
        failed_reason: str,
        failed_data: dict[str, Any],
        reason: str,
        started_at: datetime | None = None,
    ) -> bool:
        """Record a failed attempt and schedule the next: Processing -> Failed -> Scheduled.

        With ``started_at``, a job found still Enqueued as before that time is retried too:
        its claim was lost (see :meth:`finish`).
        """
        now = utcnow()
        holder = [Job.state == State.PROCESSING, Job.server_id == server_id]
        if worker_id is not None:
            holder.append(Job.worker_id == worker_id)
        mine = and_(*holder)
        if started_at is not None:
            lost_claim = and_(Job.state == State.ENQUEUED, Job.state_changed_at < started_at)
            mine = or_(mine, lost_claim)
        stmt = (
            update(Job)
            .where(Job.id == job_id, mine)
            .values(
                state=State.SCHEDULED,
                server_id=None,
                worker_id=None,
                state_changed_at=now,
                due_at=due_at,
                published=False,
                retry_count=Job.retry_count + 1,
            )
            .returning(Job.retry_count)
        )

        def work(conn: Connection) -> bool:
            attempt = conn.execute(stmt).scalar()
            if attempt is None:
                return False
            scheduled = {"due_at": due_at.isoformat(), "attempt": attempt}
            conn.execute(
                insert(JobState),
                [
                    _state_row(job_id, State.FAILED, failed_reason, failed_data, now),
                    _state_row(job_id, State.SCHEDULED, reason, scheduled, now),
                ],
            )
            return True

        return self._run(work)

    def enqueue_due(
        self, *, limit: int, grace: timedelta, publish: Callable[[Dispatch], None]
    ) -> int:
        """Move due Scheduled jobs to Enqueued and send them; return how many moved.

        Concurrent schedulers take disjoint batches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
        SQLite's single writer), and the compare-and-set on the state moves each job once. A
        job that already has a message on its way (a Celery ``self.retry()``) is taken only
        ``grace`` after it fell due, in case that message was lost.
        """
        now = utcnow()
        due = (
            select(Job.id)
            .where(
                Job.state == State.SCHEDULED,
                or_(
                    and_(Job.published.is_(False), Job.due_at <= now),
                    Job.due_at <= now - grace,
                ),
            )
            .order_by(Job.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        move = (
            update(Job)
            .where(Job.id.in_(due.scalar_subquery()), Job.state == State.SCHEDULED)
            .values(
                state=State.ENQUEUED,
                state_changed_at=now,
                due_at=None,
                published=False,
                # Taking over a Celery self.retry() whose message is late: that message must
                # not claim the job again once this run has started.
                retry_count=case((Job.published, Job.retry_count + 1), else_=Job.retry_count),
            )
            .returning(*_DISPATCH_COLUMNS)
        )

        rows = self._run(
            lambda conn: self._change(
                conn, move, State.ENQUEUED, "Triggered by the scheduler", {}, now
            )
        )
        # Should this process die before publishing, the maintenance loop publishes them.
        self._send([_dispatch_from_row(row) for row in rows], publish)
        return len(rows)

    def next_due_at(self) -> datetime | None:
        """When the next Scheduled job without a message on its way falls due."""
        stmt = select(func.min(Job.due_at)).where(
            Job.state == State.SCHEDULED, Job.published.is_(False), Job.due_at.is_not(None)
        )
        return self._run(lambda conn: conn.execute(stmt).scalar(), single=True)

    def delete_expired(self, *, limit: int) -> int:
        """Remove up to ``limit`` expired jobs with their history; return how many."""
        expired = select(Job.id).where(Job.expire_at < utcnow()).limit(limit)
        return self._delete_jobs(expired)

    def trim_failed(self, *, older_than: timedelta | None, keep: int | None, limit: int) -> int:
        """Remove Failed jobs older than ``older_than`` or beyond the newest ``keep``.

        A Failed job that continuations wait for is kept: it may still be requeued.
        """
        waited_for_by_none = and_(Job.state == State.FAILED, Job.continuation_count == 0)
        removed = 0
        if older_than is not None:
            cutoff = utcnow() - older_than
            removed += self._delete_jobs(
                select(Job.id).where(waited_for_by_none, Job.state_changed_at < cutoff).limit(limit)
            )
        if keep is not None:
            removed += self._delete_jobs(
                select(Job.id)
                .where(waited_for_by_none)
                .order_by(Job.state_changed_at.desc(), Job.id.desc())
                .offset(keep)
                .limit(limit)
            )
        return removed

    def _delete_jobs(self, ids: Select[Any]) -> int:
        # Select first: neither dialect deletes with LIMIT, and a short transaction per batch
        # holds its locks briefly. The history goes with the job (ON DELETE CASCADE).
        def work(conn: Connection) -> int:
            batch = conn.execute(ids).scalars().all()
            if batch:
                conn.execute(delete(Job).where(Job.id.in_(batch)))
            return len(batch)

        return self._run(work)

    def processing_holder(self, job_id: str) -> tuple[State, str | None] | None:
        """A job's state and the server processing it (for cancellation checks)."""
        stmt = select(Job.state, Job.server_id).where(Job.id == job_id)
        row = self._run(lambda conn: conn.execute(stmt).first(), single=True)
        return None if row is None else (State(row.state), row.server_id)

    # -- recurring jobs -------------------------------------------------------------------------

    def upsert_recurring(self, definition: RecurringDefinition) -> None:
        """Create a recurring job, or replace its definition in place (keeping its history)."""
        now = utcnow()
        values = {
            "function": definition.function,
            "task_name": definition.task_name,
            "args": definition.args_json,
            "kwargs": definition.kwargs_json,
            "queue": definition.queue,
            "display_name": definition.display_name,
            "cron": definition.cron,
            "time_zone": definition.time_zone,
            "misfire": definition.misfire,
            "updated_at": now,
        }

        compared = {k: v for k, v in values.items() if k != "updated_at"}
        current_values = select(*(getattr(RecurringJob, k) for k in compared)).where(
            RecurringJob.id == definition.id
        )

        def work(conn: Connection) -> None:
            current = conn.execute(current_values).first()
            if current is None:
                row = {"id": definition.id, "paused": False, "revision": 1, "created_at": now}
                if not self._insert_ignoring_conflict(conn, {**row, **values}, RecurringJob):
                    raise StoreError(f"recurring job {definition.id!r} was created concurrently")
            elif tuple(current) != tuple(compared.values()):
                conn.execute(
                    update(RecurringJob)
                    .where(RecurringJob.id == definition.id)
                    .values(revision=RecurringJob.revision + 1, **values)
                )
            # else: the same definition again (a deploy re-registering it) keeps its revision,
            # so beat keeps its schedule and catches up its misfires.

        self._run(work, durable=True)

    def remove_recurring(self, recurring_id: str) -> bool:
        """Remove a recurring job's definition (its jobs stay); False if there was none."""
        stmt = delete(RecurringJob).where(RecurringJob.id == recurring_id)
        return bool(self._run(lambda conn: conn.execute(stmt).rowcount, durable=True))

    def set_recurring_paused(self, recurring_id: str, paused: bool) -> bool:
        """Pause or resume a recurring job; False if there is none."""
        stmt = (
            update(RecurringJob)
            .where(RecurringJob.id == recurring_id)
            .values(paused=paused, revision=RecurringJob.revision + 1, updated_at=utcnow())
        )
        return bool(self._run(lambda conn: conn.execute(stmt).rowcount, durable=True))

    def recurring_revisions(self) -> dict[str, tuple[int, bool]]:
        """Every recurring job's revision and whether it is paused (what beat syncs)."""
        stmt = select(RecurringJob.id, RecurringJob.revision, RecurringJob.paused)
        return self._run(
            lambda conn: {r.id: (r.revision, r.paused) for r in conn.execute(stmt)}, single=True
        )

    def recurring_job(self, recurring_id: str) -> RecurringJobRecord | None:
        """One recurring job, or None."""
        found = self._recurring_records(RecurringJob.id == recurring_id)
        return found[0] if found else None

    def recurring_jobs(self) -> list[RecurringJobRecord]:
        """Every recurring job, by id."""
        return self._recurring_records()

    def _recurring_records(self, *conditions: Any) -> list[RecurringJobRecord]:
        last_job = Job.__table__.alias("last_job")
        stmt = (
            select(RecurringJob, last_job.c.state.label("last_job_state"))
            .outerjoin(last_job, last_job.c.id == RecurringJob.last_job_id)
            .where(*conditions)
            .order_by(RecurringJob.id)
        )
        now = utcnow()

        def work(conn: Connection) -> list[RecurringJobRecord]:
            return [_recurring_record(r, now) for r in conn.execute(stmt)]

        return self._run(work)

    def create_recurring_job(
        self,
        recurring_id: str,
        *,
        job_id: str,
        scheduled_for: datetime | None,
        reason: str,
        publish: Callable[[Dispatch], None],
        when_paused: bool = False,
    ) -> str | None:
        """Create the job of one occurrence (``scheduled_for``) of a recurring job, or of a
        manual trigger (None). Returns its id; None when that occurrence has a job already,
        or the recurring job is gone (or paused, unless ``when_paused``)."""
        now = utcnow()

        def work(conn: Connection) -> str | None:
            definition = conn.execute(
                select(RecurringJob).where(RecurringJob.id == recurring_id)
            ).first()
            if definition is None or (definition.paused and not when_paused):
                return None
            job = NewJob(
                id=job_id,
                function=definition.function,
                task_name=definition.task_name,
                args_json=definition.args,
                kwargs_json=definition.kwargs,
                queue=definition.queue,
                state=State.ENQUEUED,
                reason=reason,
                data={
                    "queue": definition.queue,
                    "recurring_id": recurring_id,
                    "scheduled_for": None if scheduled_for is None else scheduled_for.isoformat(),
                },
                display_name=definition.display_name,
            )
            row = _job_row(job, now, published=True)
            row.update(recurring_id=recurring_id, scheduled_for=scheduled_for)
            if not self._insert_ignoring_conflict(conn, row):
                return None  # another beat (or a redelivery) created this occurrence's job
            conn.execute(insert(JobState), [_state_row(job.id, job.state, reason, job.data, now)])
            conn.execute(
                update(RecurringJob)
                .where(RecurringJob.id == recurring_id)
                .values(last_execution=now, last_job_id=job.id, last_error=None)
            )
            try:
                publish(_dispatch_of(job))
            except BROKER_UNAVAILABLE as exc:
                _log_unpublished(1, exc)
                self._make_durable(conn)
                conn.execute(update(Job).where(Job.id == job.id).values(published=False))
            return job.id

        return self._run(work)

    def record_recurring_error(self, recurring_id: str, error: str) -> None:
        """Remember why a recurring job could not run (shown in its listing)."""
        stmt = (
            update(RecurringJob)
            .where(RecurringJob.id == recurring_id)
            .values(last_error=error[:4000])
        )
        self._run(lambda conn: conn.execute(stmt))

    # -- servers and recovery ---------------------------------------------------------------

    def register_server(self, server: ServerRecord) -> None:
        """Add a server (or refresh it if it is already known)."""
        row = {
            "id": server.id,
            "hostname": server.hostname,
            "pid": server.pid,
            "queues": to_json(server.queues),
            "concurrency": server.concurrency,
            "started_at": server.started_at,
            "heartbeat_at": server.heartbeat_at,
        }

        def work(conn: Connection) -> None:
            conn.execute(delete(Server).where(Server.id == server.id))
            conn.execute(insert(Server), [row])

        self._run(work)

    def heartbeat(self, server_id: str) -> bool:
        """Record that a server is alive; False if its row is gone (it was declared dead)."""
        stmt = update(Server).where(Server.id == server_id).values(heartbeat_at=utcnow())
        return self._run(lambda conn: conn.execute(stmt).rowcount == 1)

    def remove_server(self, server_id: str, *, reason: str) -> int:
        """Remove a stopping server; requeue (unpublished) any job it still held."""
        requeued = self._requeue_where(
            [Job.state == State.PROCESSING, Job.server_id == server_id],
            reason=reason,
            published=False,
        )
        self._run(lambda conn: conn.execute(delete(Server).where(Server.id == server_id)))
        return requeued

    def recover_dead_servers(self, server_timeout: timedelta) -> int:
        """Forget servers whose heartbeat stopped; requeue the jobs they held. Returns the count.

        The requeued jobs are left unpublished for :meth:`unpublished_jobs` to send.
        """
        cutoff = utcnow() - server_timeout
        dead = self._run(
            lambda conn: (
                conn.execute(
                    delete(Server).where(Server.heartbeat_at < cutoff).returning(Server.id)
                )
                .scalars()
                .all()
            )
        )
        for server_id in dead:
            logger.warning("hfcelery server %s stopped sending heartbeats", server_id)
        orphaned = ~exists(select(Server.id).where(Server.id == Job.server_id))
        return self._requeue_where(
            [Job.state == State.PROCESSING, orphaned, Job.state_changed_at < cutoff],
            reason="Server that processed the job stopped responding",
            published=False,
        )

    def terminations(self, running: Sequence[str]) -> list[str]:
        """Of the jobs ``running`` here, those deleted with their process to be terminated."""
        if not running:
            return []
        stmt = select(Job.id).where(
            Job.id.in_(list(running)), Job.state == State.DELETED, Job.terminate.is_(True)
        )
        return list(self._run(lambda conn: conn.execute(stmt).scalars().all(), single=True))

    def requeue_orphans(self, server_id: str, running: Sequence[str], older_than: timedelta) -> int:
        """Requeue jobs Processing on this server that it is not running (their outcome was
        lost, or could not be written); they are published again by :meth:`unpublished_jobs`.
        """
        conditions = [
            Job.state == State.PROCESSING,
            Job.server_id == server_id,
            Job.state_changed_at < utcnow() - older_than,
        ]
        if running:
            conditions.append(Job.id.not_in(list(running)))
        return self._requeue_where(
            conditions, reason="The worker that processed the job lost its outcome", published=False
        )

    def unpublished_jobs(self, older_than: timedelta, limit: int) -> list[Dispatch]:
        """Enqueued jobs whose message may never have reached the broker."""
        cutoff = utcnow() - older_than
        stmt = (
            select(*_DISPATCH_COLUMNS)
            .where(
                Job.state == State.ENQUEUED,
                Job.published.is_(False),
                Job.state_changed_at < cutoff,
            )
            .order_by(Job.state_changed_at)
            .limit(limit)
        )
        return self._run(lambda conn: [_dispatch_from_row(row) for row in conn.execute(stmt)])

    def servers(self) -> list[ServerRecord]:
        """Every server the store knows, oldest first."""
        stmt = select(Server).order_by(Server.started_at)

        def work(conn: Connection) -> list[ServerRecord]:
            return [
                ServerRecord(
                    id=r.id,
                    hostname=r.hostname,
                    pid=r.pid,
                    queues=from_json(r.queues),
                    concurrency=r.concurrency,
                    started_at=r.started_at,
                    heartbeat_at=r.heartbeat_at,
                )
                for r in conn.execute(stmt)
            ]

        return self._run(work)

    # -- locks --------------------------------------------------------------------------------

    def try_lock(self, name: str, owner: str, ttl: timedelta) -> bool:
        """Take or renew the lease ``name`` for ``owner``; False while someone else holds it."""
        now = utcnow()

        def work(conn: Connection) -> bool:
            taken = conn.execute(
                update(Lock)
                .where(Lock.name == name, or_(Lock.owner == owner, Lock.expires_at < now))
                .values(owner=owner, expires_at=now + ttl)
            ).rowcount
            if taken == 1:
                return True
            row = {"name": name, "owner": owner, "expires_at": now + ttl}
            return self._insert_ignoring_conflict(conn, row, table=Lock)

        return self._run(work)

    def release_lock(self, name: str, owner: str) -> None:
        """Give up the lease ``name`` if ``owner`` holds it."""
        stmt = delete(Lock).where(Lock.name == name, Lock.owner == owner)
        self._run(lambda conn: conn.execute(stmt))

    # -- reading --------------------------------------------------------------------------------

    def job(self, job_id: str) -> JobDetails | None:
        """A job with its state history, or None."""

        def work(conn: Connection) -> JobDetails | None:
            r = conn.execute(select(Job).where(Job.id == job_id)).first()
            if r is None:
                return None
            history = [
                StateRecord(State(h.state), h.reason, from_json(h.data), h.created_at)
                for h in conn.execute(
                    select(JobState).where(JobState.job_id == job_id).order_by(JobState.id)
                )
            ]
            parents = conn.execute(
                select(Continuation.parent_id)
                .where(Continuation.child_id == job_id)
                .order_by(Continuation.parent_id)
            ).scalars()
            children = conn.execute(
                select(Continuation.child_id)
                .where(Continuation.parent_id == job_id)
                .order_by(Continuation.child_id)
            ).scalars()
            return JobDetails(
                id=r.id,
                function=r.function,
                task_name=r.task_name,
                args=from_json(r.args),
                kwargs=from_json(r.kwargs),
                queue=r.queue,
                state=State(r.state),
                created_at=r.created_at,
                state_changed_at=r.state_changed_at,
                expire_at=r.expire_at,
                server_id=r.server_id,
                worker_id=r.worker_id,
                retry_count=r.retry_count,
                display_name=r.display_name,
                due_at=r.due_at,
                history=history,
                parent_ids=list(parents),
                continuation_ids=list(children),
                recurring_id=r.recurring_id,
                scheduled_for=r.scheduled_for,
            )

        return self._run(work)

    def state_counts(self) -> dict[State, int]:
        """The number of jobs in each state (every state present, zero or not)."""
        stmt = select(Job.state, func.count()).group_by(Job.state)
        counts = dict.fromkeys(State, 0)
        for state, n in self._run(lambda conn: conn.execute(stmt).all()):
            counts[State(state)] = n
        return counts

    def jobs(self, state: State, *, limit: int = 20, after: str | None = None) -> JobPage:
        """Jobs in ``state``, most recently changed first, a page at a time (keyset paging)."""
        stmt = (
            select(
                Job.id,
                Job.function,
                Job.task_name,
                Job.queue,
                Job.state,
                Job.created_at,
                Job.state_changed_at,
                Job.server_id,
                Job.retry_count,
                Job.display_name,
                Job.due_at,
            )
            .where(Job.state == state)
            .order_by(Job.state_changed_at.desc(), Job.id.desc())
            .limit(limit + 1)
        )
        if after is not None:
            changed_at, last_id = _decode_cursor(after)
            stmt = stmt.where(tuple_(Job.state_changed_at, Job.id) < tuple_(changed_at, last_id))

        def work(conn: Connection) -> JobPage:
            rows = conn.execute(stmt).all()
            items = [
                JobSummary(
                    id=r.id,
                    function=r.function,
                    task_name=r.task_name,
                    queue=r.queue,
                    state=State(r.state),
                    created_at=r.created_at,
                    state_changed_at=r.state_changed_at,
                    server_id=r.server_id,
                    retry_count=r.retry_count,
                    display_name=r.display_name,
                    due_at=r.due_at,
                )
                for r in rows[:limit]
            ]
            more = len(rows) > limit and items
            cursor = _encode_cursor(items[-1].state_changed_at, items[-1].id) if more else None
            return JobPage(items, cursor)

        return self._run(work)

    # -- internals ------------------------------------------------------------------------------

    def _make_durable(self, conn: Connection) -> None:
        if self.dialect == "postgresql":
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO ON")

    def _send(self, dispatches: Sequence[Dispatch], publish: Callable[[Dispatch], None]) -> int:
        """Publish committed Enqueued jobs and mark them published; return how many were sent.

        Jobs moved to Enqueued are published only after that commit: a worker that received a
        message before would still see the old state and skip it. When the broker cannot be
        reached the rest stay unpublished, made durable, for the maintenance loop; any other
        error is raised.
        """
        sent: list[str] = []
        try:
            for dispatch in dispatches:
                publish(dispatch)
                sent.append(dispatch.id)
        except BROKER_UNAVAILABLE as exc:
            _log_unpublished(len(dispatches) - len(sent), exc)
            # The store is now their only record: flush it to disk (a durable commit flushes
            # the asynchronous ones before it).
            pending = [d.id for d in dispatches if d.id not in sent]
            stmt = update(Job).where(Job.id.in_(pending)).values(published=False)
            self._run(lambda conn: conn.execute(stmt), durable=True)
        finally:
            self.mark_published(sent)
        return len(sent)

    def _requeue_where(self, conditions: list[Any], *, reason: str, published: bool) -> int:
        now = utcnow()
        stmt = (
            update(Job)
            .where(*conditions)
            .values(
                state=State.ENQUEUED,
                server_id=None,
                worker_id=None,
                state_changed_at=now,
                published=published,
            )
            .returning(Job.id)
        )

        return len(
            self._run(lambda conn: self._change(conn, stmt, State.ENQUEUED, reason, {}, now))
        )

    def _job_exists(self, conn: Connection, job_id: str) -> bool:
        return conn.execute(select(Job.id).where(Job.id == job_id)).first() is not None

    def _insert_ignoring_conflict(
        self, conn: Connection, row: dict[str, Any], table: type[Any] = Job
    ) -> bool:
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        primary_key = sa_inspect(table).primary_key
        stmt = dialect_insert(table).values(**row).on_conflict_do_nothing().returning(*primary_key)
        return conn.execute(stmt).first() is not None


# -- statements of the worker path, built once ---------------------------------------------------
# Bind parameter names carry a prefix: SQLAlchemy reserves the plain column names.


def _param(name: str, type_: Any) -> BindParameter[Any]:
    param: BindParameter[Any] = bindparam(name, type_=type_)
    return param


def _with_history(job_update: ReturningDML) -> Select[Any]:
    """PostgreSQL: ``job_update`` and the insert of its history entries, as one statement."""
    changed = job_update.cte("changed")
    history = insert(JobState).from_select(
        ["job_id", "state", "reason", "data", "created_at"],
        select(
            changed.c.id,
            _param("h_state", JobState.state.type),
            _param("h_reason", JobState.reason.type),
            _param("h_data", JobState.data.type),
            _param("h_created_at", JobState.created_at.type),
        ),
    )
    return select(changed).add_cte(history.cte("history"))


_NEW_JOB_COLUMNS = (
    "id", "function", "task_name", "args", "kwargs", "queue", "state",
    "created_at", "state_changed_at", "published", "retry_count", "display_name", "due_at",
    "awaiting_parents", "continuation_count", "tracked", "terminate",
)  # fmt: skip
_INSERT_JOB = (
    insert(Job)
    .values({name: _param(f"p_{name}", Job.__table__.c[name].type) for name in _NEW_JOB_COLUMNS})
    .returning(Job.id)
)
_ATTEMPT = _param("p_attempt", Integer())
_CLAIM = (
    update(Job)
    .where(
        Job.id == _param("p_id", Job.id.type),
        or_(
            Job.state == State.ENQUEUED,
            and_(
                Job.state == State.PROCESSING,
                ~exists(
                    select(Server.id).where(
                        Server.id == Job.server_id,
                        Server.heartbeat_at >= _param("p_alive_after", UTCDateTime()),
                    )
                ),
            ),
            # The message of a later attempt of a Celery self.retry().
            and_(Job.state.in_((State.PROCESSING, State.SCHEDULED)), Job.retry_count < _ATTEMPT),
        ),
    )
    .values(
        state=State.PROCESSING,
        server_id=_param("p_server", Job.server_id.type),
        worker_id=_param("p_worker", Job.worker_id.type),
        state_changed_at=_param("p_now", UTCDateTime()),
        published=True,
        due_at=None,
        terminate=False,
        retry_count=case((Job.retry_count < _ATTEMPT, _ATTEMPT), else_=Job.retry_count),
    )
    .returning(Job.id, Job.created_at, Job.retry_count)
)
_FINISHED_VALUES = {
    "state": _param("p_state", Job.state.type),
    "server_id": None,
    "worker_id": None,
    "state_changed_at": _param("p_now", UTCDateTime()),
    "expire_at": _param("p_expire_at", UTCDateTime()),
    "due_at": _param("p_due_at", UTCDateTime()),
}
_FINISH = (
    update(Job)
    .where(
        Job.id == _param("p_id", Job.id.type),
        Job.state == State.PROCESSING,
        Job.server_id == _param("p_server", Job.server_id.type),
        or_(
            _param("p_worker", Job.worker_id.type).is_(None),
            Job.worker_id == _param("p_worker", Job.worker_id.type),
        ),
    )
    .values(_FINISHED_VALUES)
    .returning(Job.id)
)
#: The one-statement finish, for the (common) job without continuations.
_FINISH_ALONE = _FINISH.where(Job.continuation_count == 0)
#: A job still Enqueued as it was before its run started: its claim was lost (see module doc).
_FINISH_LOST_CLAIM = (
    update(Job)
    .where(
        Job.id == _param("p_id", Job.id.type),
        Job.state == State.ENQUEUED,
        Job.state_changed_at < _param("p_started_at", UTCDateTime()),
    )
    .values(_FINISHED_VALUES)
    .returning(Job.id)
)
_FINISH_LOST_CLAIM_ALONE = _FINISH_LOST_CLAIM.where(Job.continuation_count == 0)
_INSERT_JOB_H = _with_history(_INSERT_JOB)
_CLAIM_H = _with_history(_CLAIM)
_FINISH_ALONE_H = _with_history(_FINISH_ALONE)
_FINISH_LOST_CLAIM_ALONE_H = _with_history(_FINISH_LOST_CLAIM_ALONE)


def _job_row(job: NewJob, now: datetime, *, published: bool) -> dict[str, Any]:
    return {
        "id": job.id,
        "function": job.function,
        "task_name": job.task_name,
        "args": job.args_json,
        "kwargs": job.kwargs_json,
        "queue": job.queue,
        "state": job.state,
        "created_at": now,
        "state_changed_at": now,
        "published": published,
        "retry_count": 0,
        "display_name": job.display_name,
        "due_at": job.due_at,
        "awaiting_parents": 0,
        "continuation_count": 0,
        "tracked": job.tracked,
        "terminate": False,
    }


def _log_unpublished(count: int, exc: BaseException) -> None:
    logger.warning(
        "hfcelery could not publish %d job(s) (%s); a worker will publish them later", count, exc
    )


def _state_row(
    job_id: str | None,
    state: State,
    reason: str | None,
    data: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "state": state,
        "reason": reason,
        "data": to_json(data),
        "created_at": now,
    }


def _recurring_record(row: Any, now: datetime) -> RecurringJobRecord:
    from hfcelery.recurring.cron import CronExpression

    r = row
    try:
        next_execution = None if r.paused else CronExpression(r.cron, r.time_zone).next_after(now)
    except HfceleryError:
        next_execution = None
    return RecurringJobRecord(
        id=r.id,
        function=r.function,
        task_name=r.task_name,
        args=from_json(r.args),
        kwargs=from_json(r.kwargs),
        queue=r.queue,
        display_name=r.display_name,
        cron=r.cron,
        time_zone=r.time_zone,
        misfire=r.misfire,
        paused=r.paused,
        revision=r.revision,
        created_at=r.created_at,
        updated_at=r.updated_at,
        next_execution=next_execution,
        last_execution=r.last_execution,
        last_job_id=r.last_job_id,
        last_job_state=None if row.last_job_state is None else State(row.last_job_state),
        last_error=r.last_error,
    )


def _dispatch_from_row(row: Any) -> Dispatch:
    return Dispatch(
        row.id, row.function, row.task_name, row.args, row.kwargs, row.queue, row.tracked
    )


def _dispatch_of(job: NewJob) -> Dispatch:
    return Dispatch(
        job.id, job.function, job.task_name, job.args_json, job.kwargs_json, job.queue, job.tracked
    )


def _encode_cursor(changed_at: datetime, job_id: str) -> str:
    raw = f"{changed_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        changed_at, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        when = datetime.fromisoformat(changed_at)
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise InvalidArgumentError(f"invalid page cursor {cursor!r}") from exc
    if when.tzinfo is None:
        raise InvalidArgumentError(f"invalid page cursor {cursor!r}")
    return when, job_id


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, and ``BEGIN IMMEDIATE`` so writers queue instead of failing."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    """Collect the SQL statements ``engine`` executes inside the block (tests, benchmarks)."""
    seen: list[str] = []

    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement != "BEGIN IMMEDIATE":  # SQLite's transaction start, not a query
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", _count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", _count)
