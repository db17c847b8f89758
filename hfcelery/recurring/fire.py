"""The small Celery task beat sends for each occurrence of a recurring job.

It creates the occurrence's job in the store. The store keeps one job per (recurring id,
occurrence), so a beat restart, a fail-over or a redelivered message never doubles a run.
"""

from __future__ import annotations

import functools
from datetime import datetime
from uuid import uuid4

from celery import Task

from hfcelery.client import publish
from hfcelery.errors import StoreError
from hfcelery.extension import extension_of

FIRE_TASK_NAME = "hfcelery.recurring.fire"


def fire(task: Task, recurring_id: str, scheduled_for: str) -> str | None:
    """Create the job of ``recurring_id`` for the occurrence ``scheduled_for`` (ISO, UTC).

    Returns its id, or None when the occurrence has a job already or the recurring job was
    removed or paused meanwhile.
    """
    extension = extension_of(task.app)
    job_id = extension.store.create_recurring_job(
        recurring_id,
        job_id=str(uuid4()),
        scheduled_for=datetime.fromisoformat(scheduled_for),
        reason="Triggered by the recurring job scheduler",
        publish=functools.partial(publish, task.app),
    )
    return job_id


#: Options of the fire task: the store being down is retried, not lost.
FIRE_TASK_OPTIONS = {
    "name": FIRE_TASK_NAME,
    "bind": True,
    "shared": False,
    "autoretry_for": (StoreError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 20,
}
