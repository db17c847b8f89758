"""The job store: the only module that opens sessions and issues queries.

Every state change is a compare-and-set ``UPDATE`` on the job row followed by an ``INSERT`` into
its state history, in one transaction. The worker path costs four statements per job: the claim
(update + history) and the finish (update + history).
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    and_,
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
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from hfcelery.errors import StoreError
from hfcelery.jsonutil import from_json, to_json
from hfcelery.records import (
    Dispatch,
    JobDetails,
    JobPage,
    JobSummary,
    NewJob,
    ServerRecord,
    StateRecord,
)
from hfcelery.states import State
from hfcelery.store import schema
from hfcelery.store.models import Job, JobState, Lock, Server

logger = logging.getLogger(__name__)

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_SECONDS = 30

_DISPATCH_COLUMNS = (Job.id, Job.function, Job.task_name, Job.args, Job.kwargs, Job.queue)


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

    def __init__(self, url: str | URL, *, auto_upgrade: bool | None = None) -> None:
        self.url = normalise_url(url)
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
        return create_engine(self.url, pool_size=5, max_overflow=10, pool_recycle=3600)

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

    def _run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction; retry once on a connection the server dropped."""
        for attempt in (1, 2):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if exc.connection_invalidated and attempt == 1:
                    logger.warning("hfcelery store connection lost, retrying: %s", exc.orig)
                    continue
                raise StoreError(f"hfcelery store operation failed: {exc}") from exc
        raise AssertionError("unreachable")

    # -- writing jobs -----------------------------------------------------------------------

    def create_job(self, job: NewJob, publish: Callable[[Dispatch], None] | None = None) -> bool:
        """Write a job and its first state; if ``publish`` is given, send its message too.

        The message is sent inside the transaction, before the commit: a job is never committed
        as published without its message, and a message whose job commit failed is reconciled
        by the worker that receives it. If the broker cannot be reached the job is committed as
        unpublished and a worker's maintenance loop publishes it later. Returns whether the
        message was sent.
        """
        now = utcnow()

        def work(conn: Connection) -> bool:
            conn.execute(insert(Job), [_job_row(job, now, published=publish is not None)])
            self._append_state(conn, job.id, job.state, job.reason, job.data, now)
            if publish is None:
                return False
            return self._publish_or_defer(conn, _dispatch_of(job), publish)

        return self._run(work)

    def mark_published(self, job_ids: Sequence[str]) -> None:
        """Record that the messages of Enqueued jobs reached the broker."""
        if not job_ids:
            return

        def work(conn: Connection) -> None:
            if self.dialect == "postgresql":
                # Losing this flag in a crash only causes a harmless duplicate publish.
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            conn.execute(update(Job).where(Job.id.in_(job_ids)).values(published=True))

        self._run(work)

    def claim(
        self,
        job_id: str,
        *,
        server_id: str,
        worker_id: str,
        server_timeout: timedelta,
        attempt: int = 0,
        untracked: NewJob | None = None,
    ) -> datetime | None:
        """Move a job to Processing if it may start; return its creation time, or None to skip.

        A job may start when it is Enqueued, or Processing on a server whose heartbeat stopped,
        or Processing an earlier ``attempt`` (a Celery ``self.retry()`` whose new message
        arrived before the old attempt's state change).
        ``untracked`` describes a job that has a message but no row (its writer died between
        publishing and committing, or the store was down when a plain Celery task was sent): it
        is written now, already Processing.
        """
        now = utcnow()
        live_holder = exists(
            select(Server.id).where(
                Server.id == Job.server_id, Server.heartbeat_at >= now - server_timeout
            )
        )
        claim = (
            update(Job)
            .where(
                Job.id == job_id,
                or_(
                    Job.state == State.ENQUEUED,
                    and_(
                        Job.state == State.PROCESSING,
                        or_(~live_holder, Job.retry_count < attempt),
                    ),
                ),
            )
            .values(
                state=State.PROCESSING,
                server_id=server_id,
                worker_id=worker_id,
                state_changed_at=now,
                published=True,
                due_at=None,
                retry_count=case((Job.retry_count < attempt, attempt), else_=Job.retry_count),
            )
            .returning(Job.created_at)
        )
        data = {"server_id": server_id, "worker_id": worker_id, "started_at": now.isoformat()}

        def work(conn: Connection) -> datetime | None:
            for _ in range(2):
                created_at = conn.execute(claim).scalar()
                if created_at is not None:
                    self._append_state(conn, job_id, State.PROCESSING, None, data, now)
                    return created_at
                if untracked is None or self._job_exists(conn, job_id):
                    return None
                # On PostgreSQL this insert waits for a writer that has not committed yet.
                row = _job_row(untracked, now, published=True)
                row.update(state=State.PROCESSING, server_id=server_id, worker_id=worker_id)
                if self._insert_ignoring_conflict(conn, row):
                    self._append_state(
                        conn, job_id, untracked.state, untracked.reason, untracked.data, now
                    )
                    self._append_state(conn, job_id, State.PROCESSING, None, data, now)
                    return now
            return None

        return self._run(work)

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
    ) -> bool:
        """Move a job this server (and worker, if given) is processing to ``state``.

        Returns False when the job was taken away meanwhile (deleted, requeued, or claimed
        again after a retry), and nothing is written then.
        """
        now = utcnow()
        conditions = [Job.id == job_id, Job.state == State.PROCESSING, Job.server_id == server_id]
        if worker_id is not None:
            conditions.append(Job.worker_id == worker_id)
        stmt = (
            update(Job)
            .where(*conditions)
            .values(
                state=state,
                server_id=None,
                worker_id=None,
                state_changed_at=now,
                expire_at=None if retention is None else now + retention,
            )
        )

        def work(conn: Connection) -> bool:
            if conn.execute(stmt).rowcount != 1:
                return False
            self._append_state(conn, job_id, state, reason, data, now)
            return True

        return self._run(work)

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
        publish: Callable[[Dispatch], None] | None = None,
    ) -> bool:
        """Change a job's state if it is in ``expected_state`` (or any of ``from_states``).

        Moving to Enqueued with ``publish`` sends the job's message again. Returns whether the
        change was applied.
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
                published=publish is not None,
                expire_at=None if retention is None else now + retention,
            )
            .returning(*_DISPATCH_COLUMNS)
        )

        def work(conn: Connection) -> bool:
            row = conn.execute(stmt).first()
            if row is None:
                return False
            self._append_state(conn, job_id, state, reason, data or {}, now)
            if publish is not None:
                self._publish_or_defer(conn, Dispatch(*row), publish)
            return True

        return self._run(work)

    def release_processing(self, job_id: str, *, server_id: str, reason: str) -> bool:
        """Put a job back to Enqueued whose worker process was lost; the broker redelivers it."""
        conditions = [Job.id == job_id, Job.state == State.PROCESSING, Job.server_id == server_id]
        return self._requeue_where(conditions, reason=reason, published=True) == 1

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
        return self._run(lambda conn: [Dispatch(*row) for row in conn.execute(stmt)])

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
                history=history,
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
                )
                for r in rows[:limit]
            ]
            more = len(rows) > limit and items
            cursor = _encode_cursor(items[-1].state_changed_at, items[-1].id) if more else None
            return JobPage(items, cursor)

        return self._run(work)

    # -- internals ------------------------------------------------------------------------------

    def _append_state(
        self,
        conn: Connection,
        job_id: str,
        state: State,
        reason: str | None,
        data: dict[str, Any],
        now: datetime,
    ) -> None:
        conn.execute(
            insert(JobState),
            [
                {
                    "job_id": job_id,
                    "state": state,
                    "reason": reason,
                    "data": to_json(data),
                    "created_at": now,
                }
            ],
        )

    def _publish_or_defer(
        self, conn: Connection, dispatch: Dispatch, publish: Callable[[Dispatch], None]
    ) -> bool:
        from kombu.exceptions import OperationalError as BrokerUnavailable

        try:
            publish(dispatch)
        except (BrokerUnavailable, OSError) as exc:
            logger.warning(
                "hfcelery could not publish job %s (%s); a worker will publish it later",
                dispatch.id,
                exc,
            )
            conn.execute(update(Job).where(Job.id == dispatch.id).values(published=False))
            return False
        return True

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

        def work(conn: Connection) -> int:
            ids = conn.execute(stmt).scalars().all()
            if ids:
                conn.execute(
                    insert(JobState),
                    [
                        {
                            "job_id": i,
                            "state": State.ENQUEUED,
                            "reason": reason,
                            "data": "{}",
                            "created_at": now,
                        }
                        for i in ids
                    ],
                )
            return len(ids)

        return self._run(work)

    def _job_exists(self, conn: Connection, job_id: str) -> bool:
        return conn.execute(select(Job.id).where(Job.id == job_id)).first() is not None

    def _insert_ignoring_conflict(
        self, conn: Connection, row: dict[str, Any], table: type[Any] = Job
    ) -> bool:
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        primary_key = sa_inspect(table).primary_key
        stmt = dialect_insert(table).values(**row).on_conflict_do_nothing().returning(*primary_key)
        return conn.execute(stmt).first() is not None


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
    }


def _dispatch_of(job: NewJob) -> Dispatch:
    return Dispatch(job.id, job.function, job.task_name, job.args_json, job.kwargs_json, job.queue)


def _encode_cursor(changed_at: datetime, job_id: str) -> str:
    raw = f"{changed_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        changed_at, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(changed_at), job_id
    except ValueError as exc:
        raise ValueError(f"invalid page cursor {cursor!r}") from exc


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
