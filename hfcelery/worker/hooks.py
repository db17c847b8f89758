"""One app's hooks into its worker: the Celery signal handlers and the claim before a task runs.

Each app ``init_app`` loads gets one :class:`WorkerHooks`, bound to its extension. Its handlers
are connected to Celery's task signals once per app and answer only for tasks of their own app,
so several apps in one process (each with its own store) never record each other's jobs. The
job a task runs travels on its request as one typed value (``hfcelery.worker.running``).
"""

from __future__ import annotations

from typing import Any

from celery import Task, signals
from celery.utils.dispatch import Signal

from hfcelery.extension import Extension, find_extension
from hfcelery.worker import execution


class WorkerHooks:
    """hfcelery's part in the life of a task run by a worker of one app."""

    def __init__(self, extension: Extension) -> None:
        self.extension = extension
        self._connected: list[tuple[Signal, Any]] = []

    def _ours(self, sender: Any) -> bool:
        return find_extension(getattr(sender, "app", None)) is self.extension

    # Connected to Celery's signals -----------------------------------------------------------

    def connect(self) -> None:
        """Connect the handlers to Celery's task signals (once)."""
        if self._connected:
            return
        execution.quiet_hand_backs()
        for signal, handler in (
            (signals.task_success, self.on_task_success),
            (signals.task_failure, self.on_task_failure),
            (signals.task_retry, self.on_task_retry),
            (signals.task_revoked, self.on_task_revoked),
            (signals.task_postrun, self.on_task_postrun),
            (signals.task_unknown, self.on_task_unknown),
        ):
            uid = f"hfcelery.{handler.__name__}.{id(self)}"
            signal.connect(handler, weak=False, dispatch_uid=uid)
            self._connected.append((signal, uid))

    def disconnect(self) -> None:
        for signal, uid in self._connected:
            signal.disconnect(dispatch_uid=uid)
        self._connected.clear()

    def before_start(self, task: Task, task_id: str, args: Any, kwargs: Any) -> None:
        """Claim the job before the task runs (called by the task class, see ``compose``);
        raises Ignore to skip the message."""
        execution.before_start(self.extension, task, task_id, args, kwargs)

    def on_task_success(self, sender: Any = None, result: Any = None, **_: Any) -> None:
        if self._ours(sender):
            execution.on_task_success(self.extension, sender, result)

    def on_task_failure(
        self,
        sender: Any = None,
        task_id: str = "",
        exception: BaseException | None = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        if self._ours(sender) and exception is not None:
            execution.on_task_failure(self.extension, sender, task_id, exception, einfo)

    def on_task_retry(
        self, sender: Any = None, request: Any = None, reason: Any = None, **_: Any
    ) -> None:
        if self._ours(sender):
            execution.on_task_retry(self.extension, sender, request, reason)

    def on_task_postrun(
        self,
        sender: Any = None,
        task_id: str = "",
        retval: Any = None,
        state: str = "",
        **_: Any,
    ) -> None:
        if self._ours(sender):
            execution.on_task_postrun(self.extension, sender, task_id, retval, state)

    def on_task_revoked(
        self, sender: Any = None, request: Any = None, terminated: bool = False, **_: Any
    ) -> None:
        if self._ours(sender):
            execution.on_task_revoked(self.extension, request, terminated)

    def on_task_unknown(self, sender: Any = None, name: str = "", id: str = "", **_: Any) -> None:
        if self._ours(sender):
            execution.on_task_unknown(self.extension, name, id)
