"""Continuations in the store: jobs that wait (Awaiting) for other jobs to finish."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    insert,
    select,
    update,
)

from hfcelery.continuations import JobContinuationOptions
from hfcelery.errors import JobNotFoundError
from hfcelery.jsonutil import from_json_or_raw, to_json
from hfcelery.records import (
    Dispatch,
    NewJob,
)
from hfcelery.states import State
from hfcelery.store.base import (
    _DISPATCH_COLUMNS,
    StoreBase,
    _dispatch_from_row,
    _job_row,
    _state_row,
    utcnow,
)
from hfcelery.store.models import (
    Continuation,
    Job,
    JobState,
)

logger = logging.getLogger(__name__)


class ContinuationStore(StoreBase):
    """Continuations: adding them, and releasing them when their parents finish."""

    def add_continuation(
        self,
        job: NewJob,
        parent_ids: Sequence[str],
        options: int,
        *,
        pass_result: str | None = None,
        pass_exception: bool = False,
        next_state: State | None = None,
        next_delay_seconds: float | None = None,
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
            self._insert_parameters(conn, job)
            conn.execute(
                insert(Continuation),
                [
                    {
                        "parent_id": p,
                        "child_id": job.id,
                        "options": options,
                        "pass_result": pass_result,
                        "pass_exception": pass_exception,
                        "next_state": None if next_state is None else next_state.value,
                        "next_delay_seconds": next_delay_seconds,
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
        """Release an Awaiting job whose parents have all finished: to its next state
        (Enqueued, or Scheduled after its delay) if the condition is met, else Deleted."""
        parents = conn.execute(
            select(
                Job.id,
                Job.state,
                Continuation.options,
                Continuation.pass_result,
                Continuation.pass_exception,
                Continuation.next_state,
                Continuation.next_delay_seconds,
            )
            .join(Continuation, Continuation.parent_id == Job.id)
            .where(Continuation.child_id == child_id)
            .order_by(Job.id)
        ).all()
        options = JobContinuationOptions(parents[0].options) if parents else None
        met = options is not None and options.met_by(State(p.state) for p in parents)
        values: dict[str, Any] = {"state_changed_at": now, "published": False}
        data: dict[str, Any] = {"parents": {p.id: p.state for p in parents}}
        if met:
            first = parents[0]
            values["state"] = State.ENQUEUED
            if first.next_state == State.SCHEDULED.value:
                due_at = now + timedelta(seconds=first.next_delay_seconds or 0)
                values["state"] = State.SCHEDULED
                values["due_at"] = due_at
                data["enqueue_at"] = due_at.isoformat()
            if first.pass_result or first.pass_exception:
                values["args"] = self._args_with_outcomes(
                    conn,
                    child_id,
                    [p.id for p in parents],
                    as_list=(first.pass_result or "one") == "all",
                    results=bool(first.pass_result),
                    exceptions=bool(first.pass_exception),
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
        if values["state"] is State.ENQUEUED:
            data["queue"] = row.queue
        conn.execute(insert(JobState), [_state_row(child_id, values["state"], reason, data, now)])
        if values["state"] is State.ENQUEUED:
            return _dispatch_from_row(row), State.ENQUEUED
        return None, values["state"]

    def _args_with_outcomes(
        self,
        conn: Connection,
        child_id: str,
        parent_ids: list[str],
        *,
        as_list: bool,
        results: bool,
        exceptions: bool,
    ) -> str:
        """The child's arguments with its parents' results and/or exceptions appended: for a
        join, lists in the order of the parents' ids."""
        found_results: list[Any] = []
        found_exceptions: list[Any] = []
        for parent_id in parent_ids:
            row = conn.execute(
                select(JobState.state, JobState.reason, JobState.data)
                .where(
                    JobState.job_id == parent_id,
                    JobState.state.in_([State.SUCCEEDED, State.DELETED]),
                )
                .order_by(JobState.id.desc())
                .limit(1)
            ).first()
            data = from_json_or_raw(row.data) if row is not None and row.data else {}
            data = data if isinstance(data, dict) else {}
            succeeded = row is not None and row.state == State.SUCCEEDED
            found_results.append(data.get("result") if succeeded else None)
            found_exceptions.append(
                None
                if succeeded or row is None
                else {
                    # Hangfire passes OperationCanceledException for a parent deleted without
                    # an exception (by request, say); here its type is None and the reason says
                    # why.
                    "type": data.get("exception_type"),
                    "message": data.get("exception_message") or row.reason,
                }
            )
        args = from_json_or_raw(
            conn.execute(select(Job.args).where(Job.id == child_id)).scalar_one()
        )
        if results:
            args.append(found_results if as_list else found_results[0])
        if exceptions:
            args.append(found_exceptions if as_list else found_exceptions[0])
        return to_json(args)

    def _send_released(self, released: Sequence[Dispatch]) -> None:
        if released and self.publisher is not None:
            self._send(released, self.publisher)
