"""Sending a job's Celery message: the one place that turns a stored job into a message.

It sits below the client, the store's outbox and the worker, which all publish through it.
"""

from __future__ import annotations

from celery import Celery

from hfcelery.calls import JOB_HEADER, PERFORM_TASK_NAME, TRACKED_HEADER
from hfcelery.jsonutil import from_json
from hfcelery.records import Dispatch

#: How hard a publish tries before the broker counts as unreachable (and a worker publishes
#: the job later): short, since some callers hold a store transaction meanwhile.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}


def publish(app: Celery, dispatch: Dispatch) -> None:
    """Send a job's Celery message, with the job id as the task id."""
    args = from_json(dispatch.args_json)
    if dispatch.task_name == PERFORM_TASK_NAME:
        args = [dispatch.function, *args]
    headers = {JOB_HEADER: True}
    if dispatch.tracked:
        headers[TRACKED_HEADER] = True
    app.send_task(
        dispatch.task_name,
        args=args,
        kwargs=from_json(dispatch.kwargs_json),
        task_id=dispatch.id,
        queue=dispatch.queue,
        headers=headers,
        retry_policy=PUBLISH_RETRY_POLICY,
    )
