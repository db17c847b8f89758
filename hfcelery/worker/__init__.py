"""The worker side: the task that performs plain functions, state tracking, the server step."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from hfcelery.calls import PERFORM_TASK_NAME
from hfcelery.extension import extension_of
from hfcelery.recurring.fire import FIRE_TASK_OPTIONS, fire
from hfcelery.tracking import after_task_publish, before_task_publish, send_failed, sending
from hfcelery.worker.execution import perform
from hfcelery.worker.guard import MessageGuard
from hfcelery.worker.hooks import WorkerHooks
from hfcelery.worker.server import ServerStep

#: The publishing side's handlers: one connection serves every app (they find the app of
#: the message's task).
_PUBLISH_HANDLERS = (
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
    extension = extension_of(app)
    extension.worker_hooks = WorkerHooks(extension)
    extension.worker_hooks.connect()
    for signal, handler in _PUBLISH_HANDLERS:
        signal.connect(handler, weak=False, dispatch_uid=f"hfcelery.{handler.__name__}")
    _tell_failed_sends(app)


def _tell_failed_sends(app: Celery) -> None:
    """Wrap the app's message sender so that a send that raises is told to ``send_failed``
    (Celery has no signal for it), and a plain send's job is written in the transaction that
    ends with the send (``tracking.sending``). The sender Celery builds is built on first use,
    as Celery does: nothing of the app's configuration is read now."""
    amqp = app.amqp
    built: Any = amqp.__dict__.get("send_task_message")  # built already (a send happened)

    def send_task_message(producer: Any, name: str, message: Any, **options: Any) -> Any:
        nonlocal built
        if built is None:
            built = amqp._create_task_sender()
        with sending(message):
            try:
                return built(producer, name, message, **options)
            except BaseException as exc:
                send_failed(message, exc)
                raise

    amqp.__dict__["send_task_message"] = send_task_message
