"""The pages' lists: jobs by state, queue, function, time and argument text, keyset-paged."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, or_, select, tuple_

from hfcelery.jsonutil import from_json
from hfcelery.records import JobFilter, JobRow, JobRowPage, JobSummary
from hfcelery.states import State
from hfcelery.store.base import StoreBase
from hfcelery.store.models import Continuation, Job, JobState
from hfcelery.store.reads import _decode_cursor, _encode_cursor

_ROW_COLUMNS = (
    Job.id, Job.function, Job.task_name, Job.queue, Job.state, Job.created_at,
    Job.state_changed_at, Job.server_id, Job.retry_count, Job.display_name, Job.due_at,
)  # fmt: skip


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filter_conditions(where: JobFilter) -> list[ColumnElement[bool]]:
    """The SQL conditions of a filter (each column condition is index-served where it can be)."""
    conditions: list[ColumnElement[bool]] = []
    if where.retries:
        conditions += [Job.state == State.SCHEDULED, Job.retry_count > 0]
    if where.state is not None:
        conditions.append(Job.state == where.state)
    if where.among:
        conditions.append(Job.state.in_(list(where.among)))
    if where.queue is not None:
        conditions.append(Job.queue == where.queue)
    if where.function:
        if where.function.endswith("*"):
            prefix = _like_escape(where.function[:-1])
            conditions.append(Job.function.like(prefix + "%", escape="\\"))
        else:
            conditions.append(Job.function == where.function)
    if where.since is not None:
        conditions.append(Job.state_changed_at >= where.since)
    if where.until is not None:
        conditions.append(Job.state_changed_at < where.until)
    if where.text:
        # Arguments are stored as the messages' JSON writes them: anything beyond ASCII (and a
        # quote or backslash) escaped. The text is looked for as typed and as JSON writes it.
        forms = dict.fromkeys([where.text, json.dumps(where.text)[1:-1]])
        matches = []
        for form in forms:
            pattern = "%" + _like_escape(form) + "%"
            matches += [
                Job.args.ilike(pattern, escape="\\"),
                Job.kwargs.ilike(pattern, escape="\\"),
            ]
        conditions.append(or_(*matches))
    return conditions


class SearchStore(StoreBase):
    """Filtered lists with each row's current state data, counts per queue."""

    def search_jobs(
        self, where: JobFilter, *, limit: int = 20, after: str | None = None
    ) -> JobRowPage:
        """Jobs matching ``where``, a page at a time: most recently changed first; Scheduled
        jobs (and retries) by due time, the soonest first, as Hangfire lists them."""
        by_due_time = where.state is State.SCHEDULED or where.retries
        stmt = select(*_ROW_COLUMNS).where(*filter_conditions(where)).limit(limit + 1)
        if by_due_time:
            stmt = stmt.where(Job.due_at.is_not(None)).order_by(Job.due_at, Job.id)
        else:
            stmt = stmt.order_by(Job.state_changed_at.desc(), Job.id.desc())
        if after is not None:
            moment, last_id = _decode_cursor(after)
            if by_due_time:
                stmt = stmt.where(tuple_(Job.due_at, Job.id) > tuple_(moment, last_id))
            else:
                stmt = stmt.where(tuple_(Job.state_changed_at, Job.id) < tuple_(moment, last_id))

        def work(conn: Connection) -> JobRowPage:
            rows = conn.execute(stmt).all()
            more = len(rows) > limit
            rows = rows[:limit]
            ids = [r.id for r in rows]
            latest = self._latest_states(conn, ids)
            parents: dict[str, list[str]] = {}
            awaiting = [r.id for r in rows if r.state == State.AWAITING]
            if awaiting:
                for parent_id, child_id in conn.execute(
                    select(Continuation.parent_id, Continuation.child_id)
                    .where(Continuation.child_id.in_(awaiting))
                    .order_by(Continuation.position, Continuation.parent_id)
                ):
                    parents.setdefault(child_id, []).append(parent_id)
            items = []
            for r in rows:
                reason, data = latest.get(r.id, (None, {}))
                items.append(JobRow(_summary(r), reason, data, parents.get(r.id, [])))
            cursor = None
            if more and items:
                last = items[-1].job
                moment = last.due_at if by_due_time else last.state_changed_at
                assert moment is not None
                cursor = _encode_cursor(moment, last.id)
            return JobRowPage(items, cursor)

        return self._run(work)

    def _latest_states(
        self, conn: Connection, ids: list[str]
    ) -> dict[str, tuple[str | None, dict[str, Any]]]:
        if not ids:
            return {}
        newest = (
            select(func.max(JobState.id)).where(JobState.job_id.in_(ids)).group_by(JobState.job_id)
        )
        return {
            h.job_id: (h.reason, from_json(h.data))
            for h in conn.execute(
                select(JobState.job_id, JobState.reason, JobState.data).where(
                    JobState.id.in_(newest)
                )
            )
        }

    def count_jobs(self, where: JobFilter) -> int:
        """How many jobs match ``where`` (for confirming an action on all of them)."""
        stmt = select(func.count()).select_from(Job).where(*filter_conditions(where))
        return int(self._run(lambda conn: conn.execute(stmt).scalar_one()))

    def queue_counts(self) -> dict[str, int]:
        """Enqueued jobs per queue (queues with none are absent)."""
        stmt = (
            select(Job.queue, func.count())
            .where(Job.state == State.ENQUEUED)
            .group_by(Job.queue)
            .order_by(Job.queue)
        )
        return {q: n for q, n in self._run(lambda conn: conn.execute(stmt).all())}


def _summary(r: Any) -> JobSummary:
    return JobSummary(
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
