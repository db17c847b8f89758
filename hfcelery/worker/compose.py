"""hfcelery's hooks added to a worker's task classes, composed with the project's own.

A project may give its tasks a base class of its own (``Celery(task_cls=...)``, ``base=``, a
class derived from ``celery.Task``) with its own ``before_start`` and ``Request``. hfcelery
does not replace them: each task's class gets a subclass whose ``before_start`` claims the job
and then calls the project's, and whose Request class adds hfcelery's handling of a lost worker
process to the project's.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from kombu.utils.imports import symbol_by_name

from hfcelery.worker.execution import JobRequestMixin
from hfcelery.worker.hooks import WorkerHooks


class JobTaskMixin:
    """hfcelery's claim before the task's own ``before_start``."""

    #: The hooks of the app the task belongs to (set on each composed class).
    hfcelery_hooks: WorkerHooks

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        # Raises Ignore to skip the message.
        self.hfcelery_hooks.before_start(self, task_id, args, kwargs)
        super().before_start(task_id, args, kwargs)  # type: ignore[misc]


def compose_task_classes(app: Celery, hooks: WorkerHooks) -> None:
    """Give every task registered in ``app`` hfcelery's hooks (once; in the worker, before its
    pool starts and before Celery builds the tasks' strategies and tracers)."""
    for task in list(app.tasks.values()):
        compose_task(task, hooks)


def compose_task(task: Task, hooks: WorkerHooks) -> None:
    cls = type(task)
    if issubclass(cls, JobTaskMixin):
        return
    request_cls = symbol_by_name(task.Request)  # type: ignore[no-untyped-call]
    if not issubclass(request_cls, JobRequestMixin):
        request_cls = type(
            request_cls.__name__,
            (JobRequestMixin, request_cls),
            {"__module__": request_cls.__module__, "__qualname__": request_cls.__qualname__},
        )
    task.__class__ = type(
        cls.__name__,
        (JobTaskMixin, cls),
        {
            "Request": request_cls,
            "hfcelery_hooks": hooks,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        },
    )
