"""Tasks sent the plain Celery way (``delay``, ``apply_async``, canvas) become jobs too.

``before_task_publish`` writes the job before the message leaves. On PostgreSQL, inside an
hfcelery app's own sending (:func:`sending`), that is one statement whose transaction
``after_task_publish`` commits once the message has left (``Store.open_celery_send``);
otherwise the job is committed unpublished first and ``after_task_publish`` marks it
published. A send that raises (the broker away) records it Failed (:func:`send_failed`): the
sender got the error, and the task does not run, as without hfcelery. Should the store be down,
the message still goes out and the worker that receives it records the job (see
``Store.claim``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from celery._state import get_current_app, get_current_task

from hfcelery.calls import JOB_HEADER, STAMP_HEADER
from hfcelery.elections import create_through_filters
from hfcelery.errors import HfceleryError, JobCreationCanceledError, JobCreationError
from hfcelery.extension import Extension, extension_for_task, find_extension
from hfcelery.filters import ApplyStateContext, filters_for
from hfcelery.jsonutil import to_json_or_repr
from hfcelery.records import NewJob
from hfcelery.states import State
from hfcelery.store import Store
from hfcelery.store.sends import CelerySend
from hfcelery.validation import problem_with_function_path, problem_with_job_id, storable_text
from hfcelery.worker.execution import record_celery_retry

logger = logging.getLogger(__name__)

_INTERNAL_PREFIXES = ("celery.", "hfcelery.")
_pending = threading.local()


def before_task_publish(
    sender: str | None = None,
    body: Any = None,
    routing_key: str | None = None,
    headers: dict[str, Any] | None = None,
    declare: list[Any] | None = None,
    **_: Any,
) -> None:
    headers = headers or {}
    job_id = headers.get("id")
    if headers.get("retries"):  # a Celery self.retry() of a job that exists already
        record_celery_retry(job_id, headers.get("eta"), headers["retries"])
        return
    # A task sending its own id again (``self.replace()``) is Celery re-sending on purpose,
    # even when the message keeps the headers of a job hfcelery created.
    current = get_current_task()
    resending_itself = current is not None and current.request.id == job_id
    if (
        not job_id
        or not sender
        or (headers.get(JOB_HEADER) and not resending_itself)
        or sender.startswith(_INTERNAL_PREFIXES)
    ):
        return
    extension = publishing_extension(sender)
    if extension is None or not extension.config.track_celery_tasks:
        return
    problem = problem_with_job_id(job_id) or problem_with_function_path(sender)
    if problem is not None:
        # Celery carries such a task as it always has; the store cannot hold it as a job.
        logger.warning("hfcelery does not track task %r (%s): %s", job_id, sender, problem)
        return
    if any(send.job_id == job_id for send in _open_sends().values()):
        # Sent again from within its own send (a project's publish signal receiver): its job
        # is this thread's uncommitted write, which another write would wait for forever.
        logger.warning("hfcelery does not track task %r sent again within its own send", job_id)
        return
    stamp = uuid.uuid4().hex
    headers[STAMP_HEADER] = stamp  # the message goes out with it (Celery sends these headers)
    args, kwargs = _body_arguments(body)
    queue = declare[0].name if declare else (routing_key or extension.app.conf.task_default_queue)
    data: dict[str, Any] = {"queue": queue}
    eta = _eta(headers.get("eta"))
    if eta is not None:
        data["eta"] = headers["eta"]
    job = NewJob(
        id=job_id,
        function=sender,
        task_name=sender,
        args_json=to_json_or_repr(list(args)),
        kwargs_json=to_json_or_repr(dict(kwargs)),
        queue=queue,
        state=State.ENQUEUED,
        reason="Sent as a Celery task",
        data=data,
        tracked=True,
        sent_stamp=stamp,
        # An Enqueued job with a due time waits in a worker's memory until then (Celery's
        # ETA): its message is not taken for lost before it is due.
        due_at=eta,
    )
    try:
        _record_through_filters(extension, job)
    except HfceleryError as exc:
        logger.warning("hfcelery could not record task %s before sending it: %s", job_id, exc)
        return
    if stamp not in _open_sends():
        _pending_ids().add(job_id)


def _record_through_filters(extension: Extension, job: NewJob) -> None:
    """Write a plain Celery send's job through its task's client filters (and apply-state
    filters after). Its message leaves whatever they say (Celery swallows a signal handler's
    error), so a veto writes the job Deleted, and a filter's error Failed: the worker that
    receives the message skips it, and the pages show why. Its first state is not put to
    election: its message is on its way."""
    task = extension.app.tasks.get(job.task_name)
    filters = filters_for(task, type(task)) if task is not None else filters_for(None)
    store = extension.store
    if not (filters.client_filters or filters.apply_filters):
        if _wrapped(job.id) and store.dialect == "postgresql":
            send = store.open_celery_send(job)
            if send is not None:
                _open_sends()[send.stamp] = send  # ended with the send: see sending()
                return
        else:
            store.record_celery_send(job)
        return
    retention: timedelta | None = None
    try:
        written = create_through_filters(job, filters, None, _writer(store), elect=False)
    except JobCreationCanceledError as exc:
        logger.info("hfcelery: Celery task %s (%s) was vetoed: %s", job.id, job.task_name, exc)
        reason = f"Canceled by filter '{exc.filter_name}'"
        written = replace(job, state=State.DELETED, reason=reason, data={})
        retention = timedelta(seconds=extension.config.deleted_retention_seconds)
    except JobCreationError as exc:
        logger.error("hfcelery: Celery task %s (%s): %s", job.id, job.task_name, exc)
        cause = exc.__cause__ or exc
        reason = storable_text(f"A client filter failed: {type(cause).__name__}: {cause}")
        written = replace(job, state=State.FAILED, reason=reason, data={"queue": job.queue})
    else:
        if written is None:
            return
    if written.state is not State.ENQUEUED:
        store.record_celery_send(written, retention)
    if filters.apply_filters:
        filters.applied(
            ApplyStateContext(
                written.id, written.function, None, written.state, written.reason, written.data
            )
        )


def _writer(store: Store) -> Callable[[NewJob], bool]:
    def write(job: NewJob) -> bool:
        store.record_celery_send(job)
        return True

    return write


@contextmanager
def sending(message: Any) -> Iterator[None]:
    """Around an hfcelery app's own sending of a Celery message (``send_task_message``): a
    plain send's job written on PostgreSQL may be left uncommitted until the message has left
    (``Store.open_celery_send``), since this ends it whatever happens. ``after_task_publish``
    commits it and ``send_failed`` fails it; one neither was told of (a send that returned
    without its signal) is committed here, or rolled back if the send raised."""
    job_id = _headers_of(message).get("id")
    wrapped: list[object] = _pending.__dict__.setdefault("wrapped", [])
    wrapped.append(job_id)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        wrapped.pop()
        left = _open_send_of(_headers_of(message))
        if left is not None:
            left.discard() if failed else _commit_sent(left)
        if not wrapped:
            _discard_strays()


def _discard_strays() -> None:
    """Once this thread's outermost send has ended, no send of it may be left open: one that
    is (its message never named it) is rolled back, so that it holds no transaction and hides
    no later send of its id."""
    strays = _open_sends()
    while strays:
        _, stray = strays.popitem()
        logger.warning(
            "hfcelery rolls back the job of task %s: its send ended untold", stray.job_id
        )
        try:
            stray.discard()
        except HfceleryError as exc:
            logger.warning("hfcelery could not roll back task %s: %s", stray.job_id, exc)


def _wrapped(job_id: str) -> bool:
    """Whether the send of ``job_id`` now under way is inside :func:`sending`."""
    wrapped: list[object] | None = _pending.__dict__.get("wrapped")
    return wrapped is not None and bool(wrapped) and wrapped[-1] == job_id


def _open_send_of(headers: dict[str, Any]) -> CelerySend | None:
    """The open send of the message with these ``headers`` (by its stamp), forgotten here."""
    return _open_sends().pop(headers.get(STAMP_HEADER), None)


def _commit_sent(send: CelerySend) -> None:
    """Its message has left: commit its job (should the store be gone, the worker that takes
    the message writes the job from it)."""
    try:
        send.sent()
    except HfceleryError as exc:
        logger.warning("hfcelery could not record task %s as sent: %s", send.job_id, exc)


def _open_sends() -> dict[object, CelerySend]:
    """This thread's sends whose job's transaction is still open, by their message's stamp
    (a send nested in another, of the same id, has a message of its own)."""
    sends: dict[object, CelerySend] = _pending.__dict__.setdefault("open", {})
    return sends


def _pending_ids() -> set[str]:
    """This thread's sends whose job is written, unpublished, until they end."""
    ids: set[str] = _pending.__dict__.setdefault("ids", set())
    return ids


def _headers_of(message: Any) -> dict[str, Any]:
    headers = getattr(message, "headers", None)
    return headers if isinstance(headers, dict) else {}


def _settle_pending(job_id: object) -> TypeGuard[str]:
    """Whether this thread wrote the job of the send now ending (it is forgotten here)."""
    pending: set[str] | None = _pending.__dict__.get("ids")
    if not pending or not isinstance(job_id, str) or job_id not in pending:
        return False
    pending.discard(job_id)
    return True


def after_task_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    job_id = (headers or {}).get("id")
    send = _open_send_of(headers or {})
    if send is not None:
        _commit_sent(send)
        return
    if not _settle_pending(job_id):
        return
    extension = publishing_extension((headers or {}).get("task"))
    if extension is None:
        return
    try:
        extension.store.mark_published([job_id])
    except HfceleryError as exc:  # the job is published again later: harmless
        logger.warning("hfcelery could not mark task %s published: %s", job_id, exc)


def send_failed(message: Any, exc: BaseException) -> None:
    """A plain Celery send raised (the broker could not be reached, the arguments could not
    be encoded): the sender got the error and, as without hfcelery, the task does not run, so
    its job, written before the message was to leave, is recorded Failed with the error rather
    than published later."""
    headers = _headers_of(message)
    job_id = headers.get("id")
    reason = storable_text(f"Its message could not be sent: {type(exc).__name__}: {exc}")
    data = {"exception_type": type(exc).__qualname__}
    send = _open_send_of(headers)
    if send is not None:
        try:
            send.failed(reason=reason, data=data)
        except HfceleryError as error:
            logger.warning("hfcelery could not record that task %s was not sent: %s", job_id, error)
        return
    if not _settle_pending(job_id):
        return
    stamp = headers.get(STAMP_HEADER)
    extension = publishing_extension(headers.get("task"))
    if extension is None or not isinstance(stamp, str):
        return
    try:
        extension.store.abandon_celery_send(job_id, stamp, reason=reason, data=data)
    except HfceleryError as error:  # left unpublished: a worker publishes it later
        logger.warning("hfcelery could not record that task %s was not sent: %s", job_id, error)


def publishing_extension(task_name: str | None) -> Extension | None:
    """The extension of the app publishing ``task_name``: the current app's when it has that
    task (or when no hfcelery app has it: a task sent by name to other workers); else the
    hfcelery app that has it (a web server's request thread, where Celery knows no current
    app, or a task of another app than the current one)."""
    current = find_extension(get_current_app())
    if not isinstance(task_name, str) or (current is not None and task_name in current.app.tasks):
        return current
    return extension_for_task(task_name) or current


def _eta(value: Any) -> datetime | None:
    """The ``eta`` header as an aware datetime (Celery sends ISO 8601), or None."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _body_arguments(body: Any) -> tuple[Any, Any]:
    if isinstance(body, tuple | list) and len(body) >= 2:  # task protocol 2
        return body[0] or (), body[1] or {}
    if isinstance(body, dict):  # task protocol 1
        return body.get("args") or (), body.get("kwargs") or {}
    return (), {}
