"""Messages the worker cannot run: recorded as Failed jobs, or, when no job row can hold them,
as dropped messages the monitoring API counts."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, delete, func, insert, select, update

from hfcelery.records import DroppedMessageRecord, NewJob
from hfcelery.states import State
from hfcelery.store.base import StoreBase, _job_row, _state_row, utcnow
from hfcelery.store.models import DroppedMessage, Job, JobState
from hfcelery.validation import MAX_NAME_LENGTH, storable_text


class MessageStore(StoreBase):
    """Recording messages that carry what no job may run."""

    def fail_invalid_message(self, job: NewJob, reason: str) -> bool:
        """Record the job of an invalid message as Failed with ``reason``.

        A new job is written already Failed; an Enqueued one moves to Failed. A job in any other
        state is left alone (a forged message must not fail a job that runs or has finished).
        Returns whether anything was recorded. ``job`` must hold storable values.
        """
        now = utcnow()
        data = {"reason": reason, "exception_type": "hfcelery.errors.InvalidMessage"}

        move = (
            update(Job)
            .where(Job.id == job.id, Job.state == State.ENQUEUED)
            .values(state=State.FAILED, state_changed_at=now, published=True)
            .returning(Job.id)
        )

        def work(conn: Connection) -> bool:
            row = {**_job_row(job, now, published=True), "state": State.FAILED}
            if not self._insert_ignoring_conflict(conn, row) and conn.execute(move).first() is None:
                return False
            conn.execute(insert(JobState), [_state_row(job.id, State.FAILED, reason, data, now)])
            return True

        return self._run(work, durable=True)

    def record_dropped_message(
        self, message_id: object, task_name: object, reason: str, server_id: str | None
    ) -> None:
        """Note a message that was acknowledged without a job, with why."""
        row = {
            "message_id": storable_text(repr(message_id), MAX_NAME_LENGTH - 40),
            "task_name": storable_text(str(task_name), MAX_NAME_LENGTH - 40),
            "reason": storable_text(reason),
            "server_id": server_id,
            "created_at": utcnow(),
        }
        self._run(lambda conn: conn.execute(insert(DroppedMessage), [row]), durable=True)

    def dropped_messages(self, limit: int = 50) -> tuple[int, list[DroppedMessageRecord]]:
        """How many messages were dropped (within the kept period), and the newest ``limit``."""

        def work(conn: Connection) -> tuple[int, list[DroppedMessageRecord]]:
            count = conn.execute(select(func.count()).select_from(DroppedMessage)).scalar_one()
            rows = conn.execute(
                select(DroppedMessage).order_by(DroppedMessage.id.desc()).limit(limit)
            )
            return count, [
                DroppedMessageRecord(r.message_id, r.task_name, r.reason, r.server_id, r.created_at)
                for r in rows
            ]

        return self._run(work)

    def trim_dropped_messages(self, older_than: timedelta) -> int:
        """Forget dropped messages noted before ``older_than`` ago; return how many."""
        stmt = delete(DroppedMessage).where(DroppedMessage.created_at < utcnow() - older_than)
        return self._run(lambda conn: conn.execute(stmt).rowcount or 0)
