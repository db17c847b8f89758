"""The store's foundation: the engine (fork-aware), transactions, shared row helpers."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Row, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.sql.selectable import Select

from hfcelery.errors import StoreDataError, StoreError, StoreUnavailableError
from hfcelery.jsonutil import to_json
from hfcelery.records import (
    Dispatch,
    NewJob,
    StateChange,
)
from hfcelery.states import State
from hfcelery.store import schema
from hfcelery.store.fast import STATEMENT_OBSERVERS, FastStatements, settle_commits
from hfcelery.store.models import (
    Job,
    JobParameter,
    JobState,
)
from hfcelery.store.statements import ReturningDML, _with_history

logger = logging.getLogger(__name__)


T = TypeVar("T")


#: Errors of a publish that mean "the broker is unreachable", not "the message is wrong".
BROKER_UNAVAILABLE = (BrokerOperationalError, OSError)


SQLITE_BUSY_TIMEOUT_SECONDS = 30


DEFAULT_DELETED_RETENTION = timedelta(days=1)


class StateFilters(Protocol):
    """The elect- and apply-state filters of stored jobs, as the store calls them for the
    changes it makes by itself (see :class:`~hfcelery.records.StateChange`); the extension
    gives its store one (``hfcelery.elections``), the store never imports filters."""

    def active(self) -> bool:
        """Whether any job may have such filters (False: the store skips them, cheaply)."""

    def elect(self, change: StateChange) -> StateChange | None:
        """Called in the change's transaction: another change to make instead, or None."""

    def applied(self, changes: Sequence[StateChange]) -> None:
        """Called after the commit, with every change it made."""

    def retention(self, state: State) -> timedelta | None:
        """How long a job kept in final ``state`` is kept."""

    def create(self, job: NewJob, write: Callable[[NewJob], bool]) -> NewJob | None:
        """Run a new job's ``write`` through its client filters and its first state's
        election (in the store's transaction); the job as written, or None. A veto or a
        filter's error is raised, and rolls the transaction back."""


@dataclass
class Changes:
    """What one store transaction changed besides its own job: the Enqueued jobs to publish
    after the commit, and the state changes for the apply-state filters."""

    dispatches: list[Dispatch] = field(default_factory=list)
    applied: list[StateChange] = field(default_factory=list)

    def clear(self) -> None:  # a transaction retried on a new connection starts over
        self.dispatches.clear()
        self.applied.clear()


ASYNC_COMMIT_CONNECT_ARGS = {"options": "-c synchronous_commit=off"}
#: How long a transaction of the libpq connections (``FastStatements``) may stay open while
#: its messages are sent (a publish that blocks: kombu retrying an unreachable broker,
#: RabbitMQ's flow control): PostgreSQL then ends the session, the transaction with it, and
#: the worker that takes each message writes its job from it. Not held longer, it holds back
#: no vacuum of the jobs table.
SEND_TRANSACTION_TIMEOUT_SECONDS = 60.0
#: How long a new PostgreSQL connection may take (a host that drops packets, a server that
#: hangs) before the store counts as unavailable; ``connect_timeout`` in the URL overrides it.
CONNECT_TIMEOUT_SECONDS = 10


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


class StoreBase:
    """Engine, transactions and the helpers every part of the store shares."""

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
        #: The filters of the changes the store makes by itself (None: there are none).
        self.state_filters: StateFilters | None = None
        self.dialect = self.url.get_backend_name()
        self.auto_upgrade = self.dialect == "sqlite" if auto_upgrade is None else auto_upgrade
        self._engine: Engine | None = None
        self._fast: FastStatements | None = None
        self._pid = 0
        self._schema_checked = False

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
        else:
            connect_args: dict[str, Any] = (
                {} if "options" in self.url.query else dict(ASYNC_COMMIT_CONNECT_ARGS)
            )
            if "connect_timeout" not in self.url.query:
                connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
            engine = create_engine(
                self.url, pool_size=5, max_overflow=10, pool_recycle=3600, connect_args=connect_args
            )
            # A new job's COMMIT is not waited for once its message has left: this process's
            # reads see the job all the same.
            event.listen(engine, "engine_connect", _settle_commits)
        event.listen(engine, "handle_error", _data_errors_while_binding)
        return engine

    def dispose(self) -> None:
        """Close every pooled connection of this process."""
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None
        if self._fast is not None:
            self._fast.close()

    def schema_revision(self) -> str | None:
        """The schema version the store is at (None before the first migration)."""
        return schema.current_revision(self._process_engine())

    def migration_sql(self) -> str:
        """The SQL :meth:`migrate` would run, without running it ("" when up to date)."""
        return schema.upgrade_sql(self._process_engine())

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
            except (DataError, IntegrityError) as exc:
                raise StoreDataError(f"the store refused the data: {_summary(exc)}") from exc
            except DBAPIError as exc:
                if exc.connection_invalidated and attempt == 1:
                    # Every pooled connection meets this once after a database restart.
                    logger.debug("hfcelery store connection lost, retrying: %s", _summary(exc))
                    continue
                # One line (the driver's first); the statement and the rest stay on __cause__.
                raise StoreUnavailableError(f"the store is unavailable: {_summary(exc)}") from exc
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
        if state is State.ENQUEUED and "queue" not in data:
            # Every Enqueued entry names its queue, which differs by row (a requeue, the
            # scheduler): written per row, in a second statement (not on the worker path).
            rows = conn.execute(job_update, params or {}).all()
            if rows:
                conn.execute(
                    insert(JobState),
                    [
                        _state_row(
                            row[0], state, reason, {**data, "queue": row._mapping.get("queue")}, now
                        )
                        for row in rows
                    ],
                )
            return rows
        if self.dialect != "postgresql":
            rows = conn.execute(job_update, params or {}).all()
            if rows:
                conn.execute(insert(JobState), [{**entry, "job_id": row[0]} for row in rows])
            return rows
        statement = with_history if with_history is not None else _with_history(job_update)
        history = {f"h_{key}": value for key, value in entry.items() if key != "job_id"}
        return conn.execute(statement, {**(params or {}), **history}).all()

    def _change_alone(
        self,
        job_update: ReturningDML,
        with_history: Select[Any],
        state: State,
        reason: str | None,
        data: dict[str, Any],
        now: datetime,
        params: dict[str, Any],
    ) -> Sequence[Any]:
        """One job's change and its history entry, autocommitted: the worker path. On
        PostgreSQL, one statement on this thread's own connection (see ``store.fast``)."""
        if self.dialect != "postgresql" or (state is State.ENQUEUED and "queue" not in data):
            return self._run(
                lambda conn: self._change(
                    conn, job_update, state, reason, data, now, params, with_history
                ),
                single=True,
            )
        entry = _state_row(None, state, reason, data, now)
        history = {f"h_{key}": value for key, value in entry.items() if key != "job_id"}
        return self._fast_statements().execute(with_history, {**params, **history})

    def _fast_statements(self) -> FastStatements:
        engine = self.engine  # the schema is checked once per process
        if self._fast is None:
            options = None
            if "options" not in self.url.query:
                timeout_ms = round(SEND_TRANSACTION_TIMEOUT_SECONDS * 1000)
                options = (
                    f"{ASYNC_COMMIT_CONNECT_ARGS['options']}"
                    f" -c idle_in_transaction_session_timeout={timeout_ms}"
                )
            timeout = None if "connect_timeout" in self.url.query else CONNECT_TIMEOUT_SECONDS
            self._fast = FastStatements(self.url, engine.dialect, options, timeout)
        return self._fast

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

    def _requeue_where(self, conditions: list[Any], *, reason: str, published: bool) -> list[str]:
        """Move the jobs that meet ``conditions`` back to Enqueued; return their ids.

        Their apply-state filters see the change; their elect-state filters are not asked: a
        job whose run was lost runs again, whatever a filter would elect (a filter that should
        not let it can act as it is performed)."""
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
            .returning(Job.id, Job.queue, Job.function, Job.task_name)
        )

        rows = self._run(lambda conn: self._change(conn, stmt, State.ENQUEUED, reason, {}, now))
        if rows and self._filtered():
            self._apply_filters(
                [
                    StateChange(
                        row.id, row.function, row.task_name, State.PROCESSING, State.ENQUEUED,
                        reason, {"queue": row.queue},
                    )
                    for row in rows
                ]
            )  # fmt: skip
        return [row[0] for row in rows]

    def _filtered(self) -> bool:
        """Whether the changes the store makes by itself go through state filters."""
        return self.state_filters is not None and self.state_filters.active()

    def _apply_filters(self, changes: Sequence[StateChange]) -> None:
        """The apply-state filters of committed changes (their errors are logged by them)."""
        if changes and self.state_filters is not None:
            self.state_filters.applied(changes)

    def _insert_parameters(self, conn: Connection, job: NewJob, *, replace: bool = False) -> None:
        """Write the parameters a new job was created with (by client filters); ``replace``
        those of the same names it has already (a job sent again)."""
        if not job.parameters:
            return
        rows = [
            {"job_id": job.id, "name": name, "value": to_json(value)}
            for name, value in job.parameters.items()
        ]
        if replace:
            self._upsert_parameters(conn, rows)
        else:
            conn.execute(insert(JobParameter), rows)

    def _upsert_parameters(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = dialect_insert(JobParameter)
        stmt = stmt.on_conflict_do_update(
            index_elements=[JobParameter.job_id, JobParameter.name],
            set_={"value": stmt.excluded.value},
        )
        conn.execute(stmt, rows)

    def _job_exists(self, conn: Connection, job_id: str) -> bool:
        return conn.execute(select(Job.id).where(Job.id == job_id)).first() is not None

    def _insert_ignoring_conflict(
        self, conn: Connection, row: dict[str, Any], table: type[Any] = Job
    ) -> bool:
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        primary_key = sa_inspect(table).primary_key
        stmt = dialect_insert(table).values(**row).on_conflict_do_nothing().returning(*primary_key)
        return conn.execute(stmt).first() is not None


def _data_errors_while_binding(context: Any) -> BaseException | None:
    """Errors the driver raises while sending parameters (text that is not valid Unicode, a
    number out of every range) mean the data is wrong, not the store: say so."""
    original = context.original_exception
    if isinstance(original, ValueError | OverflowError | RecursionError):
        return StoreDataError(f"the store refused the data: {_summary(original)}")
    return None


def _summary(exc: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's statement and parameters."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return f"{type(cause).__name__}: {text}"[:500]


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
        "sent_stamp": job.sent_stamp,
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
    at = _STATE_AT.get(state)
    if at is not None and at not in data:
        data = {**data, at: now.isoformat()}
    return {
        "job_id": job_id,
        "state": state,
        "reason": reason,
        "data": to_json(data),
        "created_at": now,
    }


#: The timestamp every state's data carries, under Hangfire's names.
_STATE_AT = {
    State.ENQUEUED: "enqueued_at",
    State.SCHEDULED: "scheduled_at",
    State.AWAITING: "awaiting_at",
    State.PROCESSING: "started_at",
    State.SUCCEEDED: "succeeded_at",
    State.FAILED: "failed_at",
    State.DELETED: "deleted_at",
}


def _dispatch_from_row(row: Any) -> Dispatch:
    return Dispatch(
        row.id, row.function, row.task_name, row.args, row.kwargs, row.queue, row.tracked
    )


def _dispatch_of(job: NewJob) -> Dispatch:
    return Dispatch(
        job.id, job.function, job.task_name, job.args_json, job.kwargs_json, job.queue, job.tracked
    )


def _settle_commits(_conn: Connection) -> None:
    settle_commits()


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
    """Collect the SQL statements ``engine`` executes inside the block (tests, benchmarks), and
    those of the worker path's own connections (of any store of the process)."""
    seen: list[str] = []

    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement != "BEGIN IMMEDIATE":  # SQLite's transaction start, not a query
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", _count)
    STATEMENT_OBSERVERS.append(seen.append)  # the worker path's own connections (store.fast)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", _count)
        STATEMENT_OBSERVERS.remove(seen.append)
