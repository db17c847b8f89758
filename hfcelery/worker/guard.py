"""A check of each task message's shape before Celery's strategy sees it.

Some malformed messages make Celery's own worker code fail outside any handler (a body of
``{}`` or ``[]``, an id that is a list, no ``id`` header, arguments nested hundreds deep): the
message stays queued and every restarted worker dies on it again. The guard turns each into
Celery's :class:`~celery.exceptions.InvalidTaskError`, which the consumer already handles by
logging the message and rejecting it without requeue.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.exceptions import InvalidTaskError

from hfcelery.errors import HfceleryError
from hfcelery.extension import find_extension
from hfcelery.validation import MAX_ARGUMENT_DEPTH, nesting_depth_exceeds

logger = logging.getLogger(__name__)

Strategy = Callable[..., Any]


def message_shape_problem(message: Any, body: Any) -> str | None:
    """What makes a task message unsafe to hand to Celery's strategy, or None.

    ``body`` is what the consumer passes the strategy: None for protocol 2 (the body is then
    read from the message, which kombu decodes once and caches), the decoded payload for
    protocol 1.
    """
    headers = message.headers if isinstance(message.headers, dict) else {}
    problem = _options_problem(headers if "task" in headers else body)
    if problem is not None:
        return problem
    if "task" in headers:  # protocol 2: id in the headers, (args, kwargs, embed) as the body
        task_id = headers.get("id")
        payload = message.payload
        if isinstance(payload, dict) and "args" in payload:  # a hybrid protocol 1/2 body
            args, kwargs = payload.get("args"), payload.get("kwargs", {})
        elif isinstance(payload, list | tuple) and len(payload) == 3:
            args, kwargs, embed = payload
            if not isinstance(embed, dict | type(None)):
                return "the message's embedded options are not a mapping"
        else:
            return "the message body is not [args, kwargs, options]"
    else:  # protocol 1: everything in the body
        if not isinstance(body, dict):
            return "the message body is not a mapping"
        task_id, args, kwargs = body.get("id"), body.get("args", []), body.get("kwargs", {})
    if not isinstance(task_id, str) or not task_id:
        return f"the message has no usable id ({type(task_id).__name__})"
    if not isinstance(args, list | tuple):
        return "the message's arguments are not a list"
    if not isinstance(kwargs, dict):
        return "the message's keyword arguments are not a mapping"
    if nesting_depth_exceeds([args, kwargs], MAX_ARGUMENT_DEPTH + 2):
        return f"the message's arguments nest deeper than {MAX_ARGUMENT_DEPTH} levels"
    return None


def _options_problem(fields: Any) -> str | None:
    """What makes the options the consumer itself reads unusable (the time limits it unpacks,
    the stamps it looks up in a revoke): a message with them would stop the worker."""
    if not isinstance(fields, dict):
        return None  # the body's own check reports it
    limits = fields.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple)
        and len(limits) == 2
        and all(_is_limit(limit) for limit in limits)
    ):
        return "the message's time limits are not a pair of numbers"
    stamped = fields.get("stamped_headers")
    if stamped is not None and not (
        isinstance(stamped, list | tuple) and all(isinstance(name, str) for name in stamped)
    ):
        return "the message's stamped headers are not a list of names"
    stamps = fields.get("stamps")
    if stamps is not None and not isinstance(stamps, dict):
        return "the message's stamps are not a mapping"
    return None


def _is_limit(value: Any) -> bool:
    """A time limit: none, or a finite number of seconds."""
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def guarded(
    strategy: Strategy, task_name: str, refused: Callable[[Any, str, str], None]
) -> Strategy:
    """``strategy``, refusing malformed messages first (see :func:`message_shape_problem`);
    ``refused(message_id, task_name, problem)`` is told of each."""
    if getattr(strategy, "hfcelery_guarded", False):
        return strategy

    def handle(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        problem = message_shape_problem(message, body)
        if problem is not None:
            headers = message.headers if isinstance(message.headers, dict) else {}
            refused(
                headers.get("id", body.get("id") if isinstance(body, dict) else None),
                task_name,
                problem,
            )
            raise InvalidTaskError(f"hfcelery refused a malformed message: {problem}")
        return strategy(message, body, *args, **kwargs)

    handle.hfcelery_guarded = True  # type: ignore[attr-defined]
    return handle


class MessageGuard(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer step: wraps every task strategy of the worker in :func:`guarded`.

    It starts after Celery's ``Tasks`` step, which builds the strategies (again after each
    reconnection), and before the consumer's loop reads any message.
    """

    label = "hfcelery message guard"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        extension = find_extension(c.app)

        def refused(message_id: Any, task_name: str, problem: str) -> None:
            # Celery logs the message and rejects it; the store counts it for the monitoring API.
            if extension is None:
                return
            try:
                extension.store.record_dropped_message(
                    message_id, task_name, f"Malformed message: {problem}", extension.server_id
                )
            except HfceleryError:
                logger.exception("hfcelery could not note the refused message %r", message_id)

        for name, strategy in list(c.strategies.items()):
            c.strategies[name] = guarded(strategy, name, refused)
        if not getattr(c.create_task_handler, "hfcelery_guarded", False):
            c.create_task_handler = _guarded_handler_factory(c, c.create_task_handler, refused)


def _guarded_handler_factory(
    c: Any, create: Callable[..., Strategy], refused: Callable[[Any, str, str], None]
) -> Callable[..., Strategy]:
    """Celery's ``create_task_handler``, whose handler first refuses a ``task`` header that is
    not text (Celery looks it up in a dict, and a list there stops the consumer)."""

    def create_guarded(*args: Any, **kwargs: Any) -> Strategy:
        on_task_received = create(*args, **kwargs)

        def handle(message: Any) -> Any:
            headers = message.headers
            if isinstance(headers, dict) and not isinstance(headers.get("task", ""), str):
                problem = "the message's task name is not text"
                refused(headers.get("id"), repr(headers.get("task"))[:200], problem)
                logger.error("hfcelery refused a malformed message: %s", problem)
                message.reject_log_error(logger, c.connection_errors)
                return None
            return on_task_received(message)

        return handle

    create_guarded.hfcelery_guarded = True  # type: ignore[attr-defined]
    return create_guarded
