"""The worker side: the task that performs plain functions, state tracking, the server step."""

from __future__ import annotations

from celery import Celery, signals

from hfcelery.calls import PERFORM_TASK_NAME
from hfcelery.recurring.fire import FIRE_TASK_OPTIONS, fire
from hfcelery.tracking import after_task_publish, before_task_publish
from hfcelery.worker.execution import (
    on_task_failure,
    on_task_postrun,
    on_task_retry,
    on_task_revoked,
    on_task_success,
    on_task_unknown,
    perform,
)
from hfcelery.worker.guard import MessageGuard
from hfcelery.worker.server import ServerStep

_SIGNAL_HANDLERS = (
    (signals.task_success, on_task_success),
    (signals.task_failure, on_task_failure),
    (signals.task_retry, on_task_retry),
    (signals.task_revoked, on_task_revoked),
    (signals.task_postrun, on_task_postrun),
    (signals.task_unknown, on_task_unknown),
    (signals.before_task_publish, before_task_publish),
    (signals.after_task_publish, after_task_publish),
)


def install(app: Celery) -> None:
    """Add hfcelery's worker parts to ``app`` (called once per app by ``init_app``)."""
    # hfcelery's own jobs are delivered reliably whatever the project's defaults are.
    app.task(
        name=PERFORM_TASK_NAME,
        bind=True,
        typing=False,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,
    )(perform)
    app.task(**FIRE_TASK_OPTIONS)(fire)
    app.steps["worker"].add(ServerStep)
    app.steps["consumer"].add(MessageGuard)
    for signal, handler in _SIGNAL_HANDLERS:
        # Handlers look up the extension of the sender's app, so one connection serves all apps.
        signal.connect(handler, weak=False, dispatch_uid=f"hfcelery.{handler.__name__}")
