"""Managing recurring jobs: ``RecurringJobManager`` and the ``RecurringJob`` facade."""

from __future__ import annotations

from uuid import uuid4

from celery import Celery

from hfcelery.client import client_of
from hfcelery.errors import InvalidCallError, InvalidScheduleError, RecurringJobNotFoundError
from hfcelery.extension import default_app, extension_of
from hfcelery.publishing import publish
from hfcelery.records import RecurringDefinition
from hfcelery.recurring.cron import CronExpression, MisfireHandling
from hfcelery.states import State
from hfcelery.validation import MAX_RECURRING_ID_LENGTH, problem_with_identifier


def check_recurring_id(recurring_id: object) -> str:
    """``recurring_id`` if the store can keep it; raises InvalidCallError."""
    problem = problem_with_identifier(
        recurring_id, "recurring job id", MAX_RECURRING_ID_LENGTH, allow_whitespace=True
    )
    if problem is None and not str(recurring_id).strip():
        problem = "recurring job id must not be blank"
    if problem is not None:
        raise InvalidCallError(problem)
    return str(recurring_id)


class RecurringJobManager:
    """Creates and manages the recurring jobs of one Celery app.

    Definitions live in the store; a beat running ``hfcelery.beat:RecurringScheduler`` picks
    up every change on its next loop and fires each occurrence once.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._extension = extension_of(app)

    def add_or_update(
        self,
        recurring_id: str,
        the_call: object,
        cron: str,
        *,
        tz: str = "UTC",
        queue: str | None = None,
        misfire: MisfireHandling | str = MisfireHandling.RELAXED,
    ) -> None:
        """Create the recurring job ``recurring_id``, or replace its definition in place.

        ``cron`` is a 5-field expression, a 6-field one with seconds first, a macro such as
        ``@daily`` or a ``Cron`` helper's output, read in the time zone ``tz``. Raises
        InvalidCronError, InvalidTimeZoneError or InvalidCallError before anything is written.
        """
        check_recurring_id(recurring_id)
        expression = CronExpression(cron, tz)
        try:
            misfire = MisfireHandling(misfire)
        except ValueError as exc:
            modes = ", ".join(m.value for m in MisfireHandling)
            raise InvalidScheduleError(f"misfire must be one of {modes}: {misfire!r}") from exc
        new_job = client_of(self._extension.app).new_job(the_call, queue, State.ENQUEUED)
        self._extension.store.upsert_recurring(
            RecurringDefinition(
                id=recurring_id,
                function=new_job.function,
                task_name=new_job.task_name,
                args_json=new_job.args_json,
                kwargs_json=new_job.kwargs_json,
                queue=new_job.queue,
                display_name=new_job.display_name,
                cron=expression.expression,
                time_zone=expression.zone,
                misfire=misfire.value,
            )
        )

    def remove_if_exists(self, recurring_id: str) -> bool:
        """Remove a recurring job (jobs it created stay); True if there was one."""
        return self._extension.store.remove_recurring(check_recurring_id(recurring_id))

    def trigger(self, recurring_id: str) -> str:
        """Run a recurring job now, outside its schedule; return the new job's id."""
        job_id = self._extension.store.create_recurring_job(
            recurring_id,
            job_id=str(uuid4()),
            scheduled_for=None,
            reason="Triggered using recurring job manager",  # Hangfire's reason
            publish=lambda dispatch: publish(self.app, dispatch),
            when_paused=True,
        )
        if job_id is None:
            raise RecurringJobNotFoundError(recurring_id)
        return job_id

    def pause(self, recurring_id: str) -> bool:
        """Stop firing a recurring job until it is resumed; True if it exists."""
        return self._extension.store.set_recurring_paused(check_recurring_id(recurring_id), True)

    def resume(self, recurring_id: str) -> bool:
        """Fire a paused recurring job again, from its next occurrence on (missed ones are not
        caught up); True if it exists."""
        return self._extension.store.set_recurring_paused(check_recurring_id(recurring_id), False)


class _RecurringJobFacade:
    """``RecurringJob``: the methods of :class:`RecurringJobManager` for the app ``init_app``
    was called on (the default one, if several), from any thread."""

    @staticmethod
    def manager() -> RecurringJobManager:
        return RecurringJobManager(default_app())

    def add_or_update(
        self,
        recurring_id: str,
        the_call: object,
        cron: str,
        *,
        tz: str = "UTC",
        queue: str | None = None,
        misfire: MisfireHandling | str = MisfireHandling.RELAXED,
    ) -> None:
        self.manager().add_or_update(
            recurring_id, the_call, cron, tz=tz, queue=queue, misfire=misfire
        )

    def remove_if_exists(self, recurring_id: str) -> bool:
        return self.manager().remove_if_exists(recurring_id)

    def trigger(self, recurring_id: str) -> str:
        return self.manager().trigger(recurring_id)

    def pause(self, recurring_id: str) -> bool:
        return self.manager().pause(recurring_id)

    def resume(self, recurring_id: str) -> bool:
        return self.manager().resume(recurring_id)


for _name in ("add_or_update", "remove_if_exists", "trigger", "pause", "resume"):
    getattr(_RecurringJobFacade, _name).__doc__ = getattr(RecurringJobManager, _name).__doc__

#: Static facade over the recurring jobs of the current Celery app (Hangfire's RecurringJob).
RecurringJob = _RecurringJobFacade()
