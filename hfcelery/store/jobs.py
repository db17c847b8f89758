"""Jobs in the store: every state change is a compare-and-set on the job row plus a row of
state history, in one transaction (one statement on PostgreSQL for the worker path)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from kombu.exceptions import BatchPublishError
from sqlalchemy import (
    Connection,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.selectable import Select

from hfcelery.errors import JobNotFoundError
from hfcelery.jsonutil import from_json_or_raw, to_json
from hfcelery.records import (
    Claim,
    Dispatch,
    JobHead,
    NewJob,
    ProcessingHolder,
    StateChange,
)
from hfcelery.states import TRANSITIONS, State, sources
from hfcelery.store.base import (
    _DISPATCH_COLUMNS,
    BROKER_UNAVAILABLE,
    Changes,
    _dispatch_from_row,
    _dispatch_of,
    _job_row,
    _log_unpublished,
    _state_row,
    utcnow,
)
from hfcelery.store.continuations import ContinuationStore
from hfcelery.store.fast import StaleConnectionError
from hfcelery.store.models import (
    Job,
    JobParameter,
    JobState,
)
from hfcelery.store.sends import CelerySend
from hfcelery.store.statements import (
    _CLAIM,
    _CLAIM_H,
    _FINISH,
    _FINISH_ALONE,
    _FINISH_ALONE_H,
    _FINISH_LOST_CLAIM,
    _FINISH_LOST_CLAIM_ALONE,
    _FINISH_LOST_CLAIM_ALONE_H,
    _INSERT_JOB,
    _INSERT_JOB_H,
    _NEW_JOB_COLUMNS,
    _RECORD_SEND_H,
    _SYNCHRONOUS_COMMIT,
    _UNPUBLISHED,
    ReturningDML,
)

logger = logging.getLogger(__name__)


#: How the history's reason starts when a job's worker process was lost.
LOST_WORKER_REASON = "Worker process was lost"
#: The history's reason when Celery sends a known job id again.
RESENT_REASON = "Sent again by Celery with the same id (replaced, re-applied or re-used)"
LOST_ROW_REASON = (
    "Rewritten by the worker that ran it: the store lost the job while it ran (a database crash)"
)
#: Jobs per statement of :meth:`JobStore.create_jobs` (PostgreSQL takes at most 65,535 bind
#: parameters in one statement).
BATCH_ROWS = 1000
#: How early a Scheduled job's retry message may claim it (the clocks of different machines).
DUE_TOLERANCE = timedelta(seconds=2)


def _array_type(column: Any) -> str:
    return f"{column.type.compile(dialect=postgresql.dialect())}[]"  # type: ignore[no-untyped-call]


_NEW_STATE_COLUMNS = ("job_id", "state", "reason", "data", "created_at")

#: PostgreSQL: many jobs and their first states in one statement, with one array parameter
#: per column (``unnest``): compiled once, whatever the number of jobs.
_INSERT_JOBS_UNNEST = text(
    f"WITH written AS (INSERT INTO {Job.__tablename__} ({', '.join(_NEW_JOB_COLUMNS)}) "
    "SELECT * FROM unnest("
    + ", ".join(
        f"CAST(:j_{name} AS {_array_type(Job.__table__.c[name])})" for name in _NEW_JOB_COLUMNS
    )
    + f") RETURNING id), entries AS (INSERT INTO {JobState.__tablename__} "
    f"({', '.join(_NEW_STATE_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(
        f"CAST(:h_{name} AS {_array_type(JobState.__table__.c[name])})"
        for name in _NEW_STATE_COLUMNS
    )
    + ")) SELECT count(*) FROM written"
)


def _record_of(table: Any, columns: Sequence[str]) -> str:
    """The record type ``json_to_recordset`` reads ``columns`` of ``table`` as."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return ", ".join(f'"{name}" {table.c[name].type.compile(dialect=dialect)}' for name in columns)


def _names(columns: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in columns)


#: PostgreSQL: up to :data:`BATCH_ROWS` jobs and their first states in one statement, each
#: set of rows one JSON parameter (sent as text, parsed by the server): the form
#: :meth:`JobStore.create_jobs` sends ahead of its publish.
_INSERT_JOBS_JSON = text(
    f"WITH written AS (INSERT INTO {Job.__tablename__} ({_names(_NEW_JOB_COLUMNS)}) "
    f"SELECT {_names(_NEW_JOB_COLUMNS)} FROM json_to_recordset(CAST(:p_jobs AS json)) "
    f"AS j({_record_of(Job.__table__, _NEW_JOB_COLUMNS)}) RETURNING id), "
    f"entries AS (INSERT INTO {JobState.__tablename__} ({_names(_NEW_STATE_COLUMNS)}) "
    f"SELECT {_names(_NEW_STATE_COLUMNS)} FROM json_to_recordset(CAST(:p_states AS json)) "
    f"AS s({_record_of(JobState.__table__, _NEW_STATE_COLUMNS)})) "
    "SELECT count(*) AS written FROM written"
)
#: The jobs of a JSON list of ids, unpublished (the broker was away).
_UNPUBLISHED_JSON = text(
    f"UPDATE {Job.__tablename__} SET published = false "
    "WHERE id IN (SELECT json_array_elements_text(CAST(:p_ids AS json)))"
)


class PublishOne(Protocol):
    """Sends a job's message. ``before_send``, if given, is called once the message is built
    and before it leaves for the broker (see :func:`hfcelery.publishing.publish`)."""

    def __call__(
        self, dispatch: Dispatch, /, *, before_send: Callable[[], object] | None = None
    ) -> None: ...


class PublishMany(Protocol):
    """Sends many jobs' messages. ``before_flush``, if given, is called once every message
    is built and before any leaves for the broker (see :func:`hfcelery.publishing.publish_many`)."""

    def __call__(
        self, dispatches: Sequence[Dispatch], *, before_flush: Callable[[], object] | None = None
    ) -> None: ...


def _rows_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_json_value, ensure_ascii=False, separators=(",", ":"))


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")


def _again_if_stale(write: Callable[[], bool]) -> bool:
    """Run ``write`` (a new job's transaction on the store's own connections), once more if its
    connection was found dropped by the server before anything was written (a restart)."""
    try:
        return write()
    except StaleConnectionError:
        return write()


def _columns_of(
    job_rows: Sequence[dict[str, Any]], state_rows: Sequence[dict[str, Any]]
) -> dict[str, list[Any]]:
    """The rows as one list per column (str values for the states), for ``unnest``."""
    params: dict[str, list[Any]] = {}
    for prefix, names, rows in (
        ("j", _NEW_JOB_COLUMNS, job_rows),
        ("h", _NEW_STATE_COLUMNS, state_rows),
    ):
        for name in names:
            values = [row[name] for row in rows]
            if name == "state":
                values = [str(v) for v in values]
            params[f"{prefix}_{name}"] = values
    return params


class JobStore(ContinuationStore):
    """Writing jobs: creation, claims, outcomes, state changes, scheduling, retention."""

    def create_job(self, job: NewJob, publish: PublishOne | None = None) -> bool:
        """Write a job and its first state; if ``publish`` is given, send its message too.

        The message is sent inside the transaction, before the commit: a job is never committed
        as published without its message. A worker that receives the message before the commit
        waits for it (see :meth:`claim`), and one whose job was never committed writes the job
        from the message. On PostgreSQL the COMMIT after the message has left is not waited for
        (``FastStatements._commit_later``): should it fail, that worker repairs it, and the
        enqueue does not raise. If the broker cannot be reached the job is committed, durably, as
        unpublished, and a worker's maintenance loop publishes it later; any other publishing
        error rolls the job back and is raised. Returns whether the message was sent.
        """
        now = utcnow()
        row = {f"p_{k}": v for k, v in _job_row(job, now, published=publish is not None).items()}
        if publish is not None and not job.parameters and self.dialect == "postgresql":
            return self._create_and_publish(job, row, publish, now)

        def work(conn: Connection) -> bool:
            self._change(
                conn, _INSERT_JOB, job.state, job.reason, job.data, now, row, _INSERT_JOB_H
            )
            self._insert_parameters(conn, job)
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

    def _create_and_publish(
        self, job: NewJob, row: dict[str, Any], publish: PublishOne, now: datetime
    ) -> bool:
        """:meth:`create_job` on PostgreSQL, on this thread's own connection (``store.fast``):
        the insert goes out (after its BEGIN) without waiting, the message is built meanwhile
        and leaves once the insert is done (``before_send``), then the COMMIT."""
        entry = _state_row(None, job.state, job.reason, job.data, now)
        params = {**row, **{f"h_{key}": value for key, value in entry.items() if key != "job_id"}}
        fast = self._fast_statements()

        def attempt() -> bool:
            with fast.sent_ahead(_INSERT_JOB_H, params) as inserted:
                try:
                    publish(_dispatch_of(job), before_send=inserted.result)
                except BROKER_UNAVAILABLE as exc:
                    inserted.result()  # the job itself was written (or raise)
                    _log_unpublished(1, exc)
                    inserted.run(_SYNCHRONOUS_COMMIT, {})
                    inserted.run(_UNPUBLISHED, {"p_id": job.id})
                    return False
                inserted.sent = 1
                return True

        return _again_if_stale(attempt)

    def create_jobs(
        self,
        jobs: Sequence[NewJob],
        publish_many: PublishMany | None = None,
    ) -> bool:
        """Write many new jobs and their first states in one transaction (one statement per
        :data:`BATCH_ROWS` jobs on PostgreSQL) and, with ``publish_many``, send their messages
        in one batch before the commit, as :meth:`create_job` does for one. If the broker cannot
        be reached (or a batch's outcome is uncertain) the jobs are committed, durably, as
        unpublished and a worker publishes them later. Returns whether the messages were sent.
        """
        now = utcnow()
        rows = [_job_row(job, now, published=publish_many is not None) for job in jobs]
        history = [_state_row(job.id, job.state, job.reason, job.data, now) for job in jobs]
        if (
            publish_many is not None
            and self.dialect == "postgresql"
            and len(jobs) <= BATCH_ROWS
            and not any(job.parameters for job in jobs)
        ):
            return self._create_many_and_publish(jobs, rows, history, publish_many)

        def work(conn: Connection) -> bool:
            for start in range(0, len(rows), BATCH_ROWS):
                job_rows, state_rows = (
                    rows[start : start + BATCH_ROWS],
                    history[start : start + BATCH_ROWS],
                )
                if self.dialect == "postgresql":
                    conn.execute(_INSERT_JOBS_UNNEST, _columns_of(job_rows, state_rows))
                else:
                    conn.execute(insert(Job), job_rows)
                    conn.execute(insert(JobState), state_rows)
            for job in jobs:
                self._insert_parameters(conn, job)
            if publish_many is None:
                return False
            try:
                publish_many([_dispatch_of(job) for job in jobs])
            except (*BROKER_UNAVAILABLE, BatchPublishError) as exc:
                _log_unpublished(len(jobs), exc)
                self._make_durable(conn)
                ids = [job.id for job in jobs]
                conn.execute(update(Job).where(Job.id.in_(ids)).values(published=False))
                return False
            return True

        return self._run(work, durable=publish_many is None)

    def _create_many_and_publish(
        self,
        jobs: Sequence[NewJob],
        rows: Sequence[dict[str, Any]],
        history: Sequence[dict[str, Any]],
        publish_many: PublishMany,
    ) -> bool:
        """:meth:`create_jobs` on PostgreSQL for one statement's worth of jobs: the insert goes
        out (after its BEGIN) without waiting, the messages are built meanwhile, and none
        leaves for the broker before the insert is done (``before_flush``). The server's work
        and the client's overlap."""
        params = {"p_jobs": _rows_json(rows), "p_states": _rows_json(history)}
        fast = self._fast_statements()

        def attempt() -> bool:
            with fast.sent_ahead(_INSERT_JOBS_JSON, params) as inserted:
                try:
                    publish_many([_dispatch_of(job) for job in jobs], before_flush=inserted.result)
                except (*BROKER_UNAVAILABLE, BatchPublishError) as exc:
                    inserted.result()  # the jobs themselves were written (or raise)
                    _log_unpublished(len(jobs), exc)
                    inserted.run(_SYNCHRONOUS_COMMIT, {})
                    inserted.run(_UNPUBLISHED_JSON, {"p_ids": to_json([job.id for job in jobs])})
                    return False
                inserted.sent = len(jobs)
                return True

        return _again_if_stale(attempt)

    def set_job_parameter(self, job_id: str, name: str, value: Any) -> None:
        """Store a job parameter (Hangfire's ``SetJobParameter``), replacing one of that name.
        Raises JobNotFoundError if there is no such job."""
        row = {"job_id": job_id, "name": name, "value": to_json(value)}

        def work(conn: Connection) -> None:
            if not self._job_exists(conn, job_id):
                raise JobNotFoundError(job_id)
            self._upsert_parameters(conn, [row])

        self._run(work)

    def job_parameters(self, job_id: str) -> dict[str, Any]:
        """A job's parameters by name (Hangfire's ``GetJobParameter``, all at once)."""
        stmt = select(JobParameter.name, JobParameter.value).where(JobParameter.job_id == job_id)
        rows = self._run(lambda conn: conn.execute(stmt).all(), single=True)
        return {name: from_json_or_raw(value) for name, value in rows}

    def record_celery_send(self, job: NewJob, retention: timedelta | None = None) -> bool:
        """Write the job of a plain Celery task about to be sent; True if it is new.

        A job with the same id exists when Celery sends it again on purpose (``replace``, a
        chord body dispatched again, a re-applied signature, a user re-using the id): then it
        is Enqueued again, whatever its state, with the new call and send stamp, and its
        history says so. Only a message with the new stamp can start it (see :meth:`claim`).
        A job written in a final state (a client filter vetoed it, or failed) is kept for
        ``retention``; its message is skipped by the worker that receives it.
        """
        now = utcnow()
        expire_at = None if retention is None else now + retention
        resend = (
            update(Job)
            .where(Job.id == job.id)
            .values(
                state=job.state,
                function=job.function,
                task_name=job.task_name,
                args=job.args_json,
                kwargs=job.kwargs_json,
                queue=job.queue,
                sent_stamp=job.sent_stamp,
                state_changed_at=now,
                published=False,
                server_id=None,
                worker_id=None,
                due_at=job.due_at,
                expire_at=expire_at,
                terminate=False,
                retry_count=0,
            )
            .returning(Job.id)
        )
        resent_reason = RESENT_REASON if job.state is State.ENQUEUED else job.reason

        def work(conn: Connection) -> bool:
            row = _job_row(job, now, published=False)
            row["expire_at"] = expire_at
            if self._insert_ignoring_conflict(conn, row):
                conn.execute(
                    insert(JobState), [_state_row(job.id, job.state, job.reason, job.data, now)]
                )
                self._insert_parameters(conn, job)
                return True
            self._change(conn, resend, job.state, resent_reason, job.data, now)
            self._insert_parameters(conn, job, replace=True)
            return False

        return self._run(work)

    def open_celery_send(self, job: NewJob) -> CelerySend | None:
        """:meth:`record_celery_send` of an Enqueued job on PostgreSQL (callers check
        ``dialect``), in one statement whose transaction is left open while the message is
        sent: the returned :class:`CelerySend` ends it.

        None when the id was known (Celery sent it again on purpose): that job is committed
        now, unpublished, before its message leaves, as :meth:`record_celery_send` does, since
        a worker that took the message first would find the older send's stamp and skip it.
        The caller then marks it published, or abandons it, as after
        :meth:`record_celery_send`.
        """
        if job.state is not State.ENQUEUED or job.parameters or job.sent_stamp is None:
            raise ValueError("only an Enqueued plain Celery send without parameters")
        now = utcnow()
        row = {f"p_{k}": v for k, v in _job_row(job, now, published=True).items()}
        entry = _state_row(None, job.state, job.reason, job.data, now)
        history = {f"h_{key}": value for key, value in entry.items() if key != "job_id"}
        params = {**row, **history, "h_resent_reason": RESENT_REASON}
        fast = self._fast_statements()
        for attempt in (1, 2):
            transaction = fast.sent_ahead(_RECORD_SEND_H, params)
            try:
                written = transaction.__enter__()
                try:
                    inserted = written.result()[0].inserted
                except BaseException as exc:
                    if not transaction.__exit__(type(exc), exc, exc.__traceback__):
                        raise
                    raise AssertionError("unreachable") from exc
            except StaleConnectionError:
                if attempt == 1:
                    continue  # dropped by the server (a restart): nothing was written
                raise
            if not inserted:
                transaction.__exit__(None, None, None)  # COMMIT, and wait for it
                return None
            return CelerySend(job.id, job.sent_stamp, transaction, written)
        raise AssertionError("unreachable")

    def claim(
        self,
        job_id: str,
        *,
        server_id: str,
        worker_id: str,
        server_timeout: timedelta,
        attempt: int = 0,
        stamp: str | None = None,
        untracked: Callable[[], NewJob] | None = None,
    ) -> Claim | None:
        """Move a job to Processing if it may start; None means skip it.

        A job may start when it is Enqueued, or Scheduled for an earlier ``attempt`` and due
        (the message of a Celery ``self.retry()``, give or take :data:`DUE_TOLERANCE`). A job
        Processing is never taken over (``server_timeout`` is no longer used here): the
        maintenance loop requeues a dead server's jobs.
        ``stamp`` is the message's send stamp (plain Celery tasks): a message from an older send
        of the same id never starts the job.
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
            "p_attempt": attempt,
            "p_due_by": now + DUE_TOLERANCE,
            "p_stamp": stamp,
        }
        data = {"server_id": server_id, "worker_id": worker_id, "started_at": now.isoformat()}

        def claim_once() -> Claim | None:
            rows = self._change_alone(_CLAIM, _CLAIM_H, State.PROCESSING, None, data, now, params)
            return Claim(rows[0].created_at, rows[0].retry_count, rows[0].claims) if rows else None

        def record(conn: Connection) -> bool:
            """Write the job from its message; False if its row exists (by now)."""
            if untracked is None or self._job_exists(conn, job_id):
                return False
            job = untracked()
            row = _job_row(job, now, published=True)
            row.update(state=State.PROCESSING, server_id=server_id, worker_id=worker_id, claims=1)
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
            return Claim(now, 0, 1)
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
        claim: int | None = None,
        due_at: datetime | None = None,
    ) -> bool:
        """Move a job this server (and worker, if given) is processing to ``state``.

        ``claim`` is the number :meth:`claim` handed out: only that claim is finished. Returns
        False when the job was taken away meanwhile (deleted, requeued, or claimed again), and
        nothing is written then. A job found still Enqueued as it was before that claim is
        finished too: the claim itself was lost.
        """
        now = utcnow()
        params = {
            "p_id": job_id,
            "p_server": server_id,
            "p_worker": worker_id,
            "p_state": state,
            "p_now": now,
            "p_expire_at": None if retention is None else now + retention,
            "p_claim": claim,
            "p_due_at": due_at,
        }

        def apply(change: ReturningDML, with_history: Select[Any]) -> bool:
            return bool(self._change_alone(change, with_history, state, reason, data, now, params))

        if apply(_FINISH_ALONE, _FINISH_ALONE_H) or self._finish_with_continuations(
            _FINISH, state, reason, data, now, params
        ):
            return True
        if claim is None:
            return False
        if not (
            apply(_FINISH_LOST_CLAIM_ALONE, _FINISH_LOST_CLAIM_ALONE_H)
            or self._finish_with_continuations(_FINISH_LOST_CLAIM, state, reason, data, now, params)
        ):
            return False
        logger.warning("hfcelery job %s: its claim was lost; recorded %s", job_id, state)
        return True

    def record_lost_outcome(
        self,
        job: NewJob,
        *,
        state: State,
        reason: str | None,
        data: dict[str, Any],
        retention: timedelta | None = None,
    ) -> bool:
        """Write a finished job whose row the store lost while it ran (a database crash took
        the asynchronously committed row and its claim), from its message, already in its final
        ``state``; False if the job exists (it was only taken away: nothing is written)."""
        now = utcnow()
        row = {
            **_job_row(job, now, published=True),
            "state": state,
            "expire_at": None if retention is None else now + retention,
        }

        def work(conn: Connection) -> bool:
            if not self._insert_ignoring_conflict(conn, row):
                return False
            conn.execute(
                insert(JobState),
                [
                    _state_row(job.id, State.ENQUEUED, LOST_ROW_REASON, job.data, now),
                    _state_row(job.id, state, reason, data, now),
                ],
            )
            return True

        return self._run(work, durable=True)

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
        released = Changes()

        def work(conn: Connection) -> bool:
            released.clear()
            rows = self._change(conn, unrestricted, state, reason, data, now, params)
            if rows and state.is_final:
                self._release_children(conn, [rows[0][0]], now, released)
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
        transition: str | None = None,
    ) -> bool:
        """Change a job's state if it is in ``expected_state`` (or any of ``from_states``, or
        the sources of the named ``transition`` in :data:`~hfcelery.states.TRANSITIONS`).

        Moving to Enqueued with ``publish`` sends the job's message again; moving to Scheduled
        takes ``due_at``; ``terminate`` asks the server running the job to kill it. Returns
        whether the change was applied.
        """
        now = utcnow()
        if transition is not None:
            if state not in TRANSITIONS[transition].targets:
                raise ValueError(f"{transition} does not lead to {state}")
            from_states = sources(transition)
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

        released = Changes()

        def work(conn: Connection) -> Sequence[Row[Any]]:
            released.clear()
            rows = self._change(conn, stmt, state, reason, data or {}, now)
            if rows and state.is_final and rows[0].continuation_count:
                self._release_children(conn, [job_id], now, released)
            return rows

        rows = self._run(work, durable=True)
        if rows and publish is not None:
            self._send([_dispatch_from_row(rows[0])], publish)
        self._send_released(released)
        return bool(rows)

    # The named operations of TRANSITIONS that change one job by request or by a worker's hook.

    def delete_job(
        self,
        job_id: str,
        *,
        reason: str,
        expected_state: State | None = None,
        retention: timedelta | None = None,
        terminate: bool = False,
    ) -> bool:
        """Delete a job (any state but Deleted); True if applied."""
        return self.change_state(
            job_id, State.DELETED, reason=reason, expected_state=expected_state,
            retention=retention, terminate=terminate, transition="delete",
        )  # fmt: skip

    def requeue_job(
        self,
        job_id: str,
        *,
        reason: str,
        expected_state: State | None = None,
        publish: Callable[[Dispatch], None] | None = None,
    ) -> bool:
        """Enqueue a job again (from any state, Enqueued too) and send it; True if applied."""
        return self.change_state(
            job_id, State.ENQUEUED, reason=reason, expected_state=expected_state,
            publish=publish, transition="requeue",
        )  # fmt: skip

    def reschedule_job(
        self,
        job_id: str,
        due_at: datetime,
        *,
        reason: str,
        expected_state: State | None = None,
    ) -> bool:
        """Move a job (any state) to Scheduled, due at ``due_at``; True if applied."""
        return self.change_state(
            job_id, State.SCHEDULED, reason=reason, data={"enqueue_at": due_at.isoformat()},
            expected_state=expected_state, due_at=due_at, transition="reschedule",
        )  # fmt: skip

    def revoke(self, job_id: str, *, reason: str, retention: timedelta | None) -> bool:
        """A Celery revoke of an Enqueued or Processing job: Deleted. A worker calls it for a
        message it received: a job whose sender has not committed yet is waited for."""

        def change() -> bool:
            return self.change_state(
                job_id, State.DELETED, reason=reason, retention=retention, transition="revoke"
            )

        return self._once_written(job_id, change)

    def fail_enqueued(
        self, job_id: str, *, reason: str, data: dict[str, Any], transition: str
    ) -> bool:
        """Fail an Enqueued job that cannot run (``unknown_task``: a worker received its
        message, so a job whose sender has not committed yet is waited for) or be sent
        (``fail_unsendable``)."""

        def change() -> bool:
            return self.change_state(
                job_id, State.FAILED, reason=reason, data=data, transition=transition
            )

        return self._once_written(job_id, change)

    def _once_written(self, job_id: str, change: Callable[[], bool]) -> bool:
        """``change`` a job whose message a worker received; if it changed nothing, once more
        after waiting for a writer of the job still under way. A plain Celery send's job is
        committed once its message has left (``open_celery_send``), so the message can arrive
        first: an UPDATE neither sees nor waits for a row not committed yet."""
        if change():
            return True
        if not self._wait_for_writer(job_id):
            return False
        return change()

    def _wait_for_writer(self, job_id: str) -> bool:
        """PostgreSQL: wait until no transaction is still inserting job ``job_id``; whether
        one was (the job exists now). A probe insert of the id waits on the unique index for
        such a writer, and is rolled back."""
        if self.dialect != "postgresql":
            return False
        probe = NewJob(
            id=job_id, function="-", task_name="-", args_json="[]", kwargs_json="{}",
            queue="-", state=State.DELETED,
        )  # fmt: skip
        row = _job_row(probe, utcnow(), published=False)

        def work(conn: Connection) -> bool:
            inserted = self._insert_ignoring_conflict(conn, row)
            conn.rollback()
            return not inserted

        return self._run(work)

    def abandon_celery_send(
        self, job_id: str, stamp: str, *, reason: str, data: dict[str, Any]
    ) -> bool:
        """Fail the job of a plain Celery send whose message could not be sent: the sender got
        the error and, as without hfcelery, the task does not run (an operator may requeue
        it). Only while the job is still that send's (``stamp``), Enqueued and unpublished;
        whether it was."""
        now = utcnow()
        stmt = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.state == State.ENQUEUED,
                Job.published.is_(False),
                Job.sent_stamp == stamp,
            )
            .values(state=State.FAILED, state_changed_at=now, due_at=None)
            .returning(Job.id)
        )
        rows = self._run(lambda conn: self._change(conn, stmt, State.FAILED, reason, data, now))
        return bool(rows)

    def release_processing(
        self, job_id: str, *, server_id: str, reason: str, max_losses: int | None = None
    ) -> State | None:
        """Put a job back to Enqueued whose worker process was lost; return its new state.

        Celery usually redelivers its message, but not always (a success already stored, the
        retries for lost workers used up): it is left unpublished, so the maintenance loop sends
        it again if it is still Enqueued after the grace period. A job whose process was lost
        ``max_losses`` times (this one included) is Failed instead, so a job that kills its own
        process does not run forever. None when the job was not Processing on this server.
        """
        conditions = [Job.id == job_id, Job.state == State.PROCESSING, Job.server_id == server_id]
        if max_losses is not None:
            losses = select(func.count()).where(
                JobState.job_id == job_id,
                JobState.state == State.ENQUEUED,
                JobState.reason.like(f"{LOST_WORKER_REASON}%"),
            )
            if self._run(lambda conn: conn.execute(losses).scalar_one()) + 1 >= max_losses:
                moved = self.change_state(
                    job_id,
                    State.FAILED,
                    reason=f"{reason}; given up after {max_losses} lost worker processes",
                    data={
                        "exception_type": "billiard.exceptions.WorkerLostError",
                        "exception_message": reason,
                        "server_id": server_id,
                    },
                    transition="release_processing",
                )
                return State.FAILED if moved else None
        moved_back = len(self._requeue_where(conditions, reason=reason, published=False)) == 1
        return State.ENQUEUED if moved_back else None

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
        claim: int | None = None,
        publish: Callable[[Dispatch], None] | None = None,
    ) -> bool:
        """Record a failed attempt and schedule the next: Processing -> Failed -> Scheduled.

        A retry that is due at once (a zero delay) goes to Enqueued instead and is sent with
        ``publish``, as Hangfire's automatic retry does. Only the claim numbered ``claim`` is
        retried; a job found still Enqueued as before that claim is retried too: the claim was
        lost (see :meth:`finish`).
        """
        at_once = publish is not None and due_at <= utcnow()
        final = (
            (State.ENQUEUED, reason, {})
            if at_once
            else (State.SCHEDULED, reason, {"enqueue_at": due_at.isoformat()})
        )
        return self.finish_elected(
            job_id,
            [(State.FAILED, failed_reason, failed_data), final],
            server_id=server_id,
            worker_id=worker_id,
            claim=claim,
            due_at=None if at_once else due_at,
            publish=publish,
        )

    def finish_elected(
        self,
        job_id: str,
        states: Sequence[tuple[State, str | None, dict[str, Any]]],
        *,
        server_id: str,
        worker_id: str | None,
        claim: int | None = None,
        due_at: datetime | None = None,
        retention: timedelta | None = None,
        publish: Callable[[Dispatch], None] | None = None,
    ) -> bool:
        """Finish a job this server processes through several states at once, as elect-state
        filters chose them: every state is written to the history (Failed, then Scheduled, say)
        and the job ends in the last. A failed attempt followed by a new one (Scheduled or
        Enqueued) counts as a retry. A job that ends Enqueued is sent with ``publish`` after the
        commit. Only the claim numbered ``claim`` is finished, or a claim that was lost (see
        :meth:`finish`). Returns whether it was applied.
        """
        now = utcnow()
        final, _, _ = states[-1]
        retried = final in (State.SCHEDULED, State.ENQUEUED) and any(
            state is State.FAILED for state, _, _ in states[:-1]
        )
        holder = [Job.state == State.PROCESSING, Job.server_id == server_id]
        if worker_id is not None:
            holder.append(or_(Job.worker_id == worker_id, Job.worker_id.is_(None)))
        if claim is not None:
            holder.append(Job.claims == claim)
        mine = and_(*holder)
        if claim is not None:
            lost_claim = and_(Job.state == State.ENQUEUED, Job.claims + 1 == claim)
            mine = or_(mine, lost_claim)
        values: dict[str, Any] = {
            "state": final,
            "server_id": None,
            "worker_id": None,
            "state_changed_at": now,
            "due_at": due_at if final is State.SCHEDULED else None,
            "expire_at": None if retention is None else now + retention,
        }
        if final in (State.ENQUEUED, State.SCHEDULED):
            values["published"] = False  # no message on its way: it is sent after the commit,
            # or by the scheduler when due
        if retried:
            values["retry_count"] = Job.retry_count + 1
        stmt = (
            update(Job)
            .where(Job.id == job_id, mine)
            .values(values)
            .returning(Job.retry_count, Job.continuation_count, *_DISPATCH_COLUMNS)
        )
        sent: list[Dispatch] = []
        released = Changes()

        def work(conn: Connection) -> bool:
            released.clear()
            row = conn.execute(stmt).first()
            if row is None:
                return False
            entries = []
            for state, reason, data in states:
                data = dict(data)
                if state is State.FAILED:
                    data.setdefault("server_id", server_id)
                if state is State.ENQUEUED:
                    data.setdefault("queue", row.queue)
                if retried and state is final:
                    data.setdefault("attempt", row.retry_count)
                entries.append(_state_row(job_id, state, reason, data, now))
            conn.execute(insert(JobState), entries)
            if final is State.ENQUEUED:
                sent.append(_dispatch_from_row(row))
            if final.is_final and row.continuation_count:
                self._release_children(conn, [job_id], now, released)
            return True

        applied = self._run(work)
        if sent and publish is not None:  # after the commit: the worker must see Enqueued
            self._send(sent, publish)
        self._send_released(released)
        return applied

    def enqueue_due(
        self, *, limit: int, grace: timedelta, publish: Callable[[Dispatch], None]
    ) -> int:
        """Move due Scheduled jobs to Enqueued and send them; return how many moved.

        Concurrent schedulers take disjoint batches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
        SQLite's single writer), and the compare-and-set on the state moves each job once. A
        job of hfcelery's that already has a message on its way is taken only ``grace`` after
        it fell due, in case that message was lost. A plain Celery task's (a ``self.retry()``)
        is never taken: its message, which carries its retries and canvas, is Celery's to
        deliver, as without hfcelery (a worker busy with other tasks may hold it long after it
        fell due, and a bare copy sent in its place would lose its chain and count its
        retries from zero again).
        """
        now = utcnow()
        due = (
            select(Job.id)
            .where(
                Job.state == State.SCHEDULED,
                or_(
                    and_(Job.published.is_(False), Job.due_at <= now),
                    and_(Job.tracked.is_(False), Job.due_at <= now - grace),
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

        reason = "Triggered by DelayedJobScheduler"
        changes = Changes()

        def work(conn: Connection) -> int:
            changes.clear()
            rows = self._change(conn, move, State.ENQUEUED, reason, {}, now)
            moved = [
                (row, StateChange(
                    row.id, row.function, row.task_name, State.SCHEDULED, State.ENQUEUED,
                    reason, {"queue": row.queue},
                ))
                for row in rows
            ]  # fmt: skip
            changes.dispatches.extend(
                _dispatch_from_row(row) for row in self._elect_moved(conn, moved, now, changes)
            )
            return len(rows)

        moved = self._run(work)
        # Should this process die before publishing, the maintenance loop publishes them.
        self._send(changes.dispatches, publish)
        self._apply_filters(changes.applied)
        return moved

    def next_due_at(self) -> datetime | None:
        """When the next Scheduled job without a message on its way falls due."""
        stmt = select(func.min(Job.due_at)).where(
            Job.state == State.SCHEDULED, Job.published.is_(False), Job.due_at.is_not(None)
        )
        return self._run(lambda conn: conn.execute(stmt).scalar(), single=True)

    def unpublished_jobs(
        self, older_than: timedelta, limit: int, ids: Sequence[str] | None = None
    ) -> list[Dispatch]:
        """Enqueued jobs whose message may never have reached the broker: older than
        ``older_than`` (their writer may still be publishing), or, given ``ids`` (jobs that
        maintenance requeued itself), those at once."""
        if ids is not None and not ids:
            return []
        conditions = [Job.state == State.ENQUEUED, Job.published.is_(False)]
        if ids is None:
            conditions.append(Job.state_changed_at < utcnow() - older_than)
        else:
            conditions.append(Job.id.in_(list(ids)))
        stmt = (
            select(*_DISPATCH_COLUMNS)
            .where(*conditions)
            .order_by(Job.state_changed_at)
            .limit(limit)
        )
        return self._run(lambda conn: [_dispatch_from_row(row) for row in conn.execute(stmt)])

    def stale_enqueued(self, older_than: timedelta, limit: int) -> list[Dispatch]:
        """Enqueued jobs whose message was sent more than ``older_than`` ago (and, for a
        Celery task with an ETA, that fell due that long ago), yet no worker claimed them: the
        broker may have lost their message (a Redis restart without persistence, a RabbitMQ
        restart with non-durable queues). Oldest first.

        Only hfcelery's own jobs: a plain Celery task's message is Celery's to deliver, as
        without hfcelery. Its queue may have no hfcelery worker (a task sent by name to another
        service), an operator may have purged it, or a busy worker may hold it prefetched; a
        bare copy would run it again, or without its chain.
        """
        cutoff = utcnow() - older_than
        stmt = (
            select(*_DISPATCH_COLUMNS)
            .where(
                Job.state == State.ENQUEUED,
                Job.tracked.is_(False),
                Job.published.is_(True),
                Job.state_changed_at < cutoff,
                or_(Job.due_at.is_(None), Job.due_at < cutoff),
            )
            .order_by(Job.state_changed_at)
            .limit(limit)
        )
        return self._run(lambda conn: [_dispatch_from_row(row) for row in conn.execute(stmt)])

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
        # holds its locks briefly. Continuation links go with the job (ON DELETE CASCADE).
        def work(conn: Connection) -> int:
            batch = conn.execute(ids).scalars().all()
            if batch:
                conn.execute(delete(JobState).where(JobState.job_id.in_(batch)))
                conn.execute(delete(Job).where(Job.id.in_(batch)))
            return len(batch)

        return self._run(work)

    def job_outcome(self, job_id: str) -> tuple[State, str | None] | None:
        """A job's state and the reason its latest state change gave (None: no such job)."""
        stmt = (
            select(Job.state, JobState.reason)
            .join(JobState, JobState.job_id == Job.id)
            .where(Job.id == job_id)
            .order_by(JobState.id.desc())
            .limit(1)
        )
        row = self._run(lambda conn: conn.execute(stmt).first(), single=True)
        return None if row is None else (State(row.state), row.reason)

    def processing_holder(self, job_id: str) -> ProcessingHolder | None:
        """A job's state, and the server and claim processing it (for cancellation checks)."""
        stmt = select(Job.state, Job.server_id, Job.claims).where(Job.id == job_id)
        row = self._run(lambda conn: conn.execute(stmt).first(), single=True)
        if row is None:
            return None
        return ProcessingHolder(State(row.state), row.server_id, row.claims)

    def job_head(self, job_id: str) -> JobHead | None:
        """A job's state, function and task (for the filters of a change by request)."""
        stmt = select(Job.state, Job.function, Job.task_name).where(Job.id == job_id)
        row = self._run(lambda conn: conn.execute(stmt).first(), single=True)
        return None if row is None else JobHead(State(row.state), row.function, row.task_name)
