"""Recurring job definitions in the store."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    delete,
    insert,
    select,
    update,
)

from hfcelery.errors import HfceleryError, StoreError
from hfcelery.jsonutil import from_json_or_raw
from hfcelery.records import (
    Dispatch,
    NewJob,
    RecurringDefinition,
    RecurringJobRecord,
    StateChange,
)
from hfcelery.states import State
from hfcelery.store.base import (
    BROKER_UNAVAILABLE,
    StoreBase,
    _dispatch_of,
    _job_row,
    _log_unpublished,
    _state_row,
    utcnow,
)
from hfcelery.store.models import (
    Job,
    JobState,
    RecurringJob,
)

logger = logging.getLogger(__name__)


class RecurringStore(StoreBase):
    """Recurring job definitions and the jobs of their occurrences."""

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
        or the recurring job is gone (or paused, unless ``when_paused``).

        The job goes through its client filters and the election of its first state, and its
        apply-state filters see it once committed (see ``hfcelery.elections``): a veto raises
        ``JobCreationCanceledError`` and a filter's exception ``JobCreationError``, and nothing
        is written."""
        now = utcnow()

        def work(conn: Connection) -> str | None:
            created.clear()
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

            def insert_job(job: NewJob) -> bool:
                enqueued = job.state is State.ENQUEUED
                row = _job_row(job, now, published=enqueued)
                row.update(recurring_id=recurring_id, scheduled_for=scheduled_for)
                if not self._insert_ignoring_conflict(conn, row):
                    return False  # another beat (or a redelivery) created this occurrence's job
                entry = _state_row(job.id, job.state, job.reason, job.data, now)
                conn.execute(insert(JobState), [entry])
                self._insert_parameters(conn, job)
                return True

            written: NewJob | None = job
            if filters is None:
                written = job if insert_job(job) else None
            else:
                written = filters.create(job, insert_job)
            if written is None:
                return None
            created.append(written)
            conn.execute(
                update(RecurringJob)
                .where(RecurringJob.id == recurring_id)
                .values(last_execution=now, last_job_id=job.id, last_error=None)
            )
            if written.state is not State.ENQUEUED:
                return job.id  # elected Scheduled by a filter: the scheduler sends it
            try:
                publish(_dispatch_of(written))
            except BROKER_UNAVAILABLE as exc:
                _log_unpublished(1, exc)
                self._make_durable(conn)
                conn.execute(update(Job).where(Job.id == job.id).values(published=False))
            return job.id

        filters = self.state_filters if self._filtered() else None
        created: list[NewJob] = []
        created_id = self._run(work)
        if created and filters is not None:
            new = created[0]
            change = StateChange(
                new.id, new.function, new.task_name, None, new.state, new.reason, new.data
            )
            self._apply_filters([change])
        return created_id

    def record_recurring_error(self, recurring_id: str, error: str) -> None:
        """Remember why a recurring job could not run (shown in its listing)."""
        stmt = (
            update(RecurringJob)
            .where(RecurringJob.id == recurring_id)
            .values(last_error=error[:4000])
        )
        self._run(lambda conn: conn.execute(stmt))


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
        args=from_json_or_raw(r.args),
        kwargs=from_json_or_raw(r.kwargs),
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
