"""Servers in the store: registration, heartbeats, recovery of their jobs, and locks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from hfcelery.jsonutil import from_json, to_json
from hfcelery.records import (
    ServerRecord,
)
from hfcelery.states import State
from hfcelery.store.base import (
    StoreBase,
    utcnow,
)
from hfcelery.store.models import (
    Job,
    JobState,
    Lock,
    Server,
)

logger = logging.getLogger(__name__)

DEAD_SERVER_REASON = "Server that processed the job stopped responding"
RECLAIMED_REASON = (
    "The server was declared dead while it still ran the job (it could not reach the store); "
    "it registered again and keeps the job"
)


class ServerStore(StoreBase):
    """Servers (running workers), their recovery, and named locks.

    Heartbeats and leases are told by one clock, the database's, on PostgreSQL: the workers'
    clocks may disagree (one running ahead would take every lease and judge every other server
    dead), and a heartbeat that waited for a lock or a stalled server is stamped when it was
    written, not when it was sent. A SQLite store lives on one machine, with one clock.
    """

    def _clock(self) -> ColumnElement[datetime] | datetime:
        """Now, as heartbeats and leases are told (see the class)."""
        if self.dialect == "postgresql":
            return func.clock_timestamp(type_=DateTime(timezone=True))
        return utcnow()

    def register_server(self, server: ServerRecord) -> None:
        """Add a server (or refresh it if it is already known), its heartbeat now."""
        row: dict[str, Any] = {
            "id": server.id,
            "hostname": server.hostname,
            "pid": server.pid,
            "queues": to_json(server.queues),
            "concurrency": server.concurrency,
            "started_at": server.started_at,
            "heartbeat_at": self._clock() if self.dialect == "postgresql" else server.heartbeat_at,
        }

        def work(conn: Connection) -> None:
            conn.execute(delete(Server).where(Server.id == server.id))
            conn.execute(insert(Server).values(**row))

        self._run(work)

    def heartbeat(self, server_id: str) -> bool:
        """Record that a server is alive; False if its row is gone (it was declared dead)."""
        stmt = update(Server).where(Server.id == server_id).values(heartbeat_at=self._clock())
        return self._run(lambda conn: conn.execute(stmt).rowcount == 1)

    def remove_server(self, server_id: str, *, reason: str) -> list[str]:
        """Remove a stopping server; requeue (unpublished) any job it still held; return their
        ids."""
        requeued = self._requeue_where(
            [Job.state == State.PROCESSING, Job.server_id == server_id],
            reason=reason,
            published=False,
        )
        self._run(lambda conn: conn.execute(delete(Server).where(Server.id == server_id)))
        return requeued

    def recover_dead_servers(
        self,
        server_timeout: timedelta,
        *,
        judge: str | None = None,
        judge_fresh: timedelta | None = None,
    ) -> list[str]:
        """Forget servers whose heartbeat stopped; requeue the jobs they held; return their ids.

        ``judge`` is the server asking, never judged dead itself. With ``judge_fresh``, nobody
        is judged unless the judge's own heartbeat is at most that old as the statement runs:
        a judge whose heartbeat is late too was cut off from the store itself (the store
        stalled), and everybody's heartbeats are late for the same reason.
        The requeued jobs are left unpublished, for the caller to publish at once
        (:meth:`unpublished_jobs` with their ids) or for a later pass to find.
        """
        cutoff = self._clock() - server_timeout
        judged = delete(Server).where(
            Server.heartbeat_at < cutoff, Server.id != judge if judge is not None else true()
        )
        if judge is not None and judge_fresh is not None:
            own = select(Server.id).where(
                Server.id == judge, Server.heartbeat_at >= self._clock() - judge_fresh
            )
            judged = judged.where(exists(own))
        dead = self._run(lambda conn: conn.execute(judged.returning(Server.id)).scalars().all())
        for server_id in dead:
            logger.warning("hfcelery server %s stopped sending heartbeats", server_id)
        orphaned = ~exists(select(Server.id).where(Server.id == Job.server_id))
        return self._requeue_where(
            [Job.state == State.PROCESSING, orphaned, Job.state_changed_at < cutoff],
            reason=DEAD_SERVER_REASON,
            published=False,
        )

    def reclaim_running(self, server_id: str, running: Sequence[str]) -> list[str]:
        """Take back the jobs a server still runs after it was declared dead (a network
        partition from the store longer than the server timeout): those requeued for its
        death and not claimed by anyone since. Their runs' claims stay valid, so their outcome
        is recorded as usual; the requeued message is skipped when it arrives."""
        if not running:
            return []
        now = utcnow()
        latest_reason = (
            select(JobState.reason)
            .where(JobState.job_id == Job.id)
            .order_by(JobState.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        stmt = (
            update(Job)
            .where(
                Job.id.in_(list(running)),
                Job.state == State.ENQUEUED,
                Job.server_id.is_(None),
                latest_reason == DEAD_SERVER_REASON,
            )
            .values(state=State.PROCESSING, server_id=server_id, state_changed_at=now)
            .returning(Job.id)
        )
        data = {"server_id": server_id}
        rows = self._run(
            lambda conn: self._change(conn, stmt, State.PROCESSING, RECLAIMED_REASON, data, now)
        )
        return [row[0] for row in rows]

    def terminations(self, running: Sequence[str]) -> list[str]:
        """Of the jobs ``running`` here, those deleted with their process to be terminated."""
        if not running:
            return []
        stmt = select(Job.id).where(
            Job.id.in_(list(running)), Job.state == State.DELETED, Job.terminate.is_(True)
        )
        return list(self._run(lambda conn: conn.execute(stmt).scalars().all(), single=True))

    def requeue_orphans(
        self, server_id: str, running: Sequence[str], older_than: timedelta
    ) -> list[str]:
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

    def try_lock(self, name: str, owner: str, ttl: timedelta) -> bool:
        """Take or renew the lease ``name`` for ``owner``; False while someone else holds it."""
        now = self._clock()

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

    def try_job_lock(self, name: str, job_id: str, server_timeout: timedelta) -> bool:
        """Take the lock ``name`` for a running job; False while another job holds it.

        A lock belongs to the job that holds it for as long as that job is Processing on a
        server that still heartbeats: when the job ends, is requeued, or its server dies, the
        lock is free without anyone releasing it.
        """

        def work(conn: Connection) -> bool:
            now = utcnow()
            row = {"name": name, "owner": job_id, "expires_at": now}
            if self._insert_ignoring_conflict(conn, row, table=Lock):
                return True
            # Lock the row first, then look at its owner in a statement of its own: on
            # PostgreSQL that statement sees every claim committed before the row was ours.
            owner = conn.execute(
                select(Lock.owner).where(Lock.name == name).with_for_update()
            ).scalar_one_or_none()
            if owner is None:
                # Released between the insert and now: taking it here would write no row, and
                # the next job's insert would take it too. The caller asks again.
                return False
            if owner != job_id:
                holder = conn.execute(
                    select(Job.id)
                    .join(Server, Server.id == Job.server_id)
                    .where(
                        Job.id == owner,
                        Job.state == State.PROCESSING,
                        Server.heartbeat_at >= self._clock() - server_timeout,
                    )
                ).first()
                if holder is not None:
                    return False
            taken = conn.execute(
                update(Lock).where(Lock.name == name).values(owner=job_id, expires_at=now)
            )
            return taken.rowcount == 1

        return self._run(work)

    def release_lock(self, name: str, owner: str) -> None:
        """Give up the lease ``name`` if ``owner`` holds it."""
        stmt = delete(Lock).where(Lock.name == name, Lock.owner == owner)
        self._run(lambda conn: conn.execute(stmt))
