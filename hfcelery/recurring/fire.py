"""The small Celery task beat sends for each occurrence of a recurring job.

It creates the occurrence's job in the store. The store keeps one job per (recurring id,
occurrence), so a beat restart, a fail-over or a redelivered message never doubles a run.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from celery import Task

from hfcelery.errors import (
    HfceleryError,
    InvalidArgumentError,
    JobCreationCanceledError,
    JobCreationError,
    StoreUnavailableError,
)
from hfcelery.extension import extension_of
from hfcelery.publishing import publish
from hfcelery.recurring.cron import CronExpression
from hfcelery.validation import MAX_RECURRING_ID_LENGTH, problem_with_identifier

logger = logging.getLogger(__name__)

FIRE_TASK_NAME = "hfcelery.recurring.fire"


def fire(task: Task, recurring_id: str, scheduled_for: str) -> str | None:
    """Create the job of ``recurring_id`` for the occurrence ``scheduled_for`` (ISO, UTC).

    Returns its id, or None when the occurrence has a job already or the recurring job was
    removed or paused meanwhile. Anybody who can publish to the broker can send this task, so
    a message is refused (logged, and None returned) unless ``scheduled_for`` is an occurrence
    the recurring job's cron produces, and not one still in the future.
    """
    extension = extension_of(task.app)
    occurrence = _occurrence(recurring_id, scheduled_for)
    if occurrence is None:
        return None
    record = extension.store.recurring_job(recurring_id)
    if record is None:
        return None
    problem = _not_an_occurrence(record.cron, record.time_zone, occurrence)
    if problem is not None:
        logger.error(
            "hfcelery refused to fire recurring job %r for %s: %s",
            recurring_id,
            occurrence.isoformat(),
            problem,
        )
        return None
    try:
        return extension.store.create_recurring_job(
            recurring_id,
            job_id=str(uuid4()),
            scheduled_for=occurrence,
            reason="Triggered by recurring job scheduler",
            publish=functools.partial(publish, task.app),
        )
    except JobCreationCanceledError as exc:
        # A client filter vetoed this occurrence: nothing was written, the next one comes.
        logger.info("hfcelery recurring job %r, %s: %s", recurring_id, occurrence.isoformat(), exc)
    except (JobCreationError, InvalidArgumentError) as exc:  # a filter's error
        logger.error("hfcelery recurring job %r, %s: %s", recurring_id, occurrence.isoformat(), exc)
        extension.store.record_recurring_error(recurring_id, str(exc))
    return None


#: How far ahead of an occurrence its fire message may arrive (clocks of beat and worker).
EARLY_FIRE_TOLERANCE = timedelta(seconds=30)


def _occurrence(recurring_id: object, scheduled_for: object) -> datetime | None:
    """The occurrence a fire message names, or None (logged) when the message is malformed."""
    problem = problem_with_identifier(
        recurring_id, "recurring job id", MAX_RECURRING_ID_LENGTH, allow_whitespace=True
    )
    occurrence = None
    if problem is None:
        try:
            occurrence = datetime.fromisoformat(str(scheduled_for))
        except ValueError:
            problem = f"occurrence {scheduled_for!r:.80} is not an ISO date and time"
        else:
            if occurrence.tzinfo is None:
                problem, occurrence = "the occurrence has no time zone", None
    if problem is not None:
        logger.error("hfcelery refused a malformed recurring fire message: %s", problem)
    return occurrence


def _not_an_occurrence(cron: str, zone: str, occurrence: datetime) -> str | None:
    """Why ``occurrence`` is not one the cron produces, or not one yet, or None."""
    if occurrence > datetime.now(UTC) + EARLY_FIRE_TOLERANCE:
        return "that occurrence is still in the future"
    try:
        expression = CronExpression(cron, zone)
    except HfceleryError as exc:
        return f"its schedule is invalid: {exc}"
    if expression.next_after(occurrence - timedelta(microseconds=1)) != occurrence:
        return f"{cron!r} in {zone} has no occurrence at that time"
    return None


#: Options of the fire task: an unreachable store is retried, not lost; data it refuses is not
#: retried.
FIRE_TASK_OPTIONS = {
    "name": FIRE_TASK_NAME,
    "bind": True,
    "shared": False,
    "autoretry_for": (StoreUnavailableError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 20,
}
