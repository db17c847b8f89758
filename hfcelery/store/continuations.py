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

from hfcelery.continuations import JOIN_WITHOUT_RESULTS, PASSED_RESULTS, JobContinuationOptions
from hfcelery.errors import JobNotFoundError
from hfcelery.jsonutil import from_json_or_raw, to_json
from hfcelery.records import (
    NewJob,
    StateChange,
)
from hfcelery.states import State
from hfcelery.store.base import (
    _DISPATCH_COLUMNS,
    Changes,
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

        The parents' order is kept (a parent given twice counts once, at its first place): a
        join passes their results and exceptions in it. Each parent is locked (in a fixed
        order, their ids') while the continuation is added, so a parent finishing at the same
        moment either sees the continuation and releases it in its own transaction, or has
        finished before, and the continuation is released here at once. Raises
        JobNotFoundError (writing nothing) if a parent does not exist. Returns the state the
        job is in when this returns.
        """
        now = utcnow()
        released = Changes()
        # Each parent once, at its first place in the order given.
        positions: dict[str, int] = {}
        for parent_id in parent_ids:
            positions.setdefault(parent_id, len(positions))

        def work(conn: Connection) -> State:
            released.clear()
            waiting = 0
            finished: dict[str, bool] = {}
            for parent_id in sorted(positions):
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
                        "position": position,
                    }
                    for p, position in positions.items()
                ],
            )
            if waiting:
                return State.AWAITING
            return self._release(conn, job.id, now, "Its parents had already finished", released)

        # Durable: a continuation has no message to be rebuilt from. A JobNotFoundError rolls
        # everything back.
        final_state = self._run(work, durable=True)
        self._send_released(released)
        return final_state

    def _release_children(
        self, conn: Connection, parent_ids: list[str], now: datetime, into: Changes
    ) -> None:
        """Count finished parents down for their Awaiting continuations; release those with
        none left (Enqueued, or Deleted when the condition was not met, which finishes them
        too and so releases their own). The Enqueued ones go to ``into``, to publish after
        commit."""
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
                state = self._release(conn, child_id, now, f"Continuation of {parent_id}", into)
                if state.is_final:
                    frontier.append(child_id)

    def _release(
        self, conn: Connection, child_id: str, now: datetime, reason: str, into: Changes
    ) -> State:
        """Release an Awaiting job whose parents have all finished: to its next state
        (Enqueued, or Scheduled after its delay) if the condition is met, else Deleted, or to
        the state its elect-state filters elect instead. Returns the state it is in."""
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
            # The order the continuation was given its parents in (rows written before it was
            # kept are all 0: their ids decide, as they did).
            .order_by(Continuation.position, Job.id)
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
            results = first.pass_result in PASSED_RESULTS
            if results or first.pass_exception:
                values["args"] = self._args_with_outcomes(
                    conn,
                    child_id,
                    [p.id for p in parents],
                    as_list=first.pass_result in ("all", JOIN_WITHOUT_RESULTS),
                    results=results,
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
            return State.AWAITING
        state: State = values["state"]
        if state is State.ENQUEUED:
            data["queue"] = row.queue
        conn.execute(insert(JobState), [_state_row(child_id, state, reason, data, now)])
        change = StateChange(
            child_id, row.function, row.task_name, State.AWAITING, state, reason, data,
            values.get("due_at"),
        )  # fmt: skip
        kept = self._elect_moved(conn, [(row, change)], now, into)
        if not kept:
            # A filter elected another state (written, with its own releases, by the election).
            return into.applied[-1].new_state if into.applied else state
        if state is State.ENQUEUED:
            into.dispatches.append(_dispatch_from_row(row))
        return state

    def _elect_moved(
        self,
        conn: Connection,
        moved: Sequence[tuple[Any, StateChange]],
        now: datetime,
        into: Changes,
    ) -> list[Any]:
        """Ask the elect-state filters of jobs this transaction just moved (``moved``: each
        one's row and change). A job for which a filter elects another state is moved on to it
        here, with both states in its history (as a worker's election writes them), and left
        out of the rows returned; the caller publishes the rest. Every change is kept in
        ``into`` for the apply-state filters. A filter that raises is logged and the store's
        own change stands: a scheduler pass must not stop at one job."""
        if not moved or not self._filtered():
            return [row for row, _ in moved]
        assert self.state_filters is not None
        kept = []
        for row, change in moved:
            try:
                elected = self.state_filters.elect(change)
            except Exception:
                logger.exception(
                    "hfcelery: an elect-state filter failed for job %s (%s kept)",
                    change.job_id,
                    change.new_state,
                )
                elected = None
            if elected is None or not self._move_on(conn, change, elected, now, into):
                kept.append(row)
                into.applied.append(change)
                continue
            into.applied.append(elected)
        return kept

    def _move_on(
        self, conn: Connection, change: StateChange, elected: StateChange, now: datetime,
        into: Changes,
    ) -> bool:  # fmt: skip
        """Write the state a filter elected instead of ``change`` (in the same transaction);
        False when there is none to write (the elected one is a state no store change may
        lead to; it is logged, and the change stands)."""
        state = elected.new_state
        if state in (State.PROCESSING, State.AWAITING) or (
            state is State.SCHEDULED and elected.due_at is None
        ):
            logger.error(
                "hfcelery: a filter elected %s%s for job %s; kept %s",
                state,
                " without a due time" if state is State.SCHEDULED else "",
                change.job_id,
                change.new_state,
            )
            return False
        retention = self.state_filters.retention(state) if self.state_filters else None
        data = dict(elected.data)
        if state is State.SCHEDULED:
            assert elected.due_at is not None
            data.setdefault("enqueue_at", elected.due_at.isoformat())
        row = conn.execute(
            update(Job)
            .where(Job.id == change.job_id, Job.state == change.new_state)
            .values(
                state=state,
                state_changed_at=now,
                published=False,
                due_at=elected.due_at if state is State.SCHEDULED else None,
                expire_at=now + retention if state.is_final and retention else None,
            )
            .returning(*_DISPATCH_COLUMNS, Job.continuation_count)
        ).first()
        if row is None:
            return False
        if state is State.ENQUEUED:
            data.setdefault("queue", row.queue)
            into.dispatches.append(_dispatch_from_row(row))
        entry = _state_row(change.job_id, state, elected.reason, data, now)
        conn.execute(insert(JobState), [entry])
        if state.is_final and row.continuation_count:
            self._release_children(conn, [change.job_id], now, into)
        return True

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
        join, lists in the order of ``parent_ids`` (the order the join was given them in)."""
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

    def _send_released(self, released: Changes) -> None:
        """After the commit: publish the jobs a transaction released, and call the
        apply-state filters of what it changed by itself."""
        if released.dispatches and self.publisher is not None:
            self._send(released.dispatches, self.publisher)
        self._apply_filters(released.applied)
