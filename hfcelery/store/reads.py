"""Reading jobs: details with history, counts per state, keyset-paged lists."""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    Connection,
    func,
    select,
    tuple_,
)

from hfcelery.errors import InvalidArgumentError
from hfcelery.jsonutil import from_json_or_raw
from hfcelery.records import (
    JobDetails,
    JobPage,
    JobSummary,
    StateRecord,
)
from hfcelery.states import State
from hfcelery.store.base import (
    StoreBase,
)
from hfcelery.store.models import (
    Continuation,
    Job,
    JobParameter,
    JobState,
)

logger = logging.getLogger(__name__)


class ReadStore(StoreBase):
    """Reading jobs for the monitoring API."""

    def job(self, job_id: str) -> JobDetails | None:
        """A job with its state history, or None."""

        def work(conn: Connection) -> JobDetails | None:
            r = conn.execute(select(Job).where(Job.id == job_id)).first()
            if r is None:
                return None
            history = [
                StateRecord(State(h.state), h.reason, from_json_or_raw(h.data), h.created_at)
                for h in conn.execute(
                    select(JobState).where(JobState.job_id == job_id).order_by(JobState.id)
                )
            ]
            parents = conn.execute(
                select(Continuation.parent_id)
                .where(Continuation.child_id == job_id)
                .order_by(Continuation.position, Continuation.parent_id)
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
                args=from_json_or_raw(r.args),
                kwargs=from_json_or_raw(r.kwargs),
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
                parameters={
                    name: from_json_or_raw(value)
                    for name, value in conn.execute(
                        select(JobParameter.name, JobParameter.value)
                        .where(JobParameter.job_id == job_id)
                        .order_by(JobParameter.name)
                    )
                },
            )

        return self._run(work)

    def state_counts(self, states: Sequence[State] | None = None) -> dict[State, int]:
        """The number of jobs in each state (every state present, zero or not); with
        ``states``, only those are counted (the others read 0)."""
        stmt = select(Job.state, func.count()).group_by(Job.state)
        if states is not None:
            stmt = stmt.where(Job.state.in_(list(states)))
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
