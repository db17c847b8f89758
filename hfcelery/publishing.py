"""Sending a job's Celery message: the one place that turns a stored job into a message.

It sits below the client, the store's outbox and the worker, which all publish through it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery

from hfcelery.calls import JOB_HEADER, PERFORM_TASK_NAME, TRACKED_HEADER
from hfcelery.jsonutil import from_json, to_json
from hfcelery.records import Dispatch

#: How hard a publish tries before the broker counts as unreachable (and a worker publishes
#: the job later): short, since some callers hold a store transaction meanwhile.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}


#: Messages per broker round trip in :func:`publish_many` (kombu's batch size).
PUBLISH_BATCH_SIZE = 1000


def publish_many(
    app: Celery,
    dispatches: Sequence[Dispatch],
    *,
    before_flush: Callable[[], object] | None = None,
) -> None:
    """Send many jobs' messages in as few broker round trips as the transport allows: kombu's
    ``Producer.batch()`` (one Redis pipeline per :data:`PUBLISH_BATCH_SIZE` messages); other
    transports publish as usual (RabbitMQ's publishes do not wait for the broker anyway).
    Raises kombu's ``BatchPublishError`` when a batch's outcome is uncertain.

    ``before_flush`` is called before any message leaves: once all are built, on a transport
    that batches (the store's insert of their jobs runs meanwhile), else before the first.
    If it raises, nothing is sent.
    """
    amqp = app.amqp
    # With before_flush, one batch holds them all: none may leave before it returns.
    size = PUBLISH_BATCH_SIZE if before_flush is None else sys.maxsize
    with app.producer_or_acquire() as producer, producer.batch(max_size=size):
        if before_flush is not None and not _batches(producer):
            before_flush()
            before_flush = None
        # Each queue is declared once per batch, not once per message.
        for name in dict.fromkeys(d.queue for d in dispatches):
            producer.maybe_declare(amqp.queues[name])
        for dispatch in dispatches:
            # Celery's own message and send path (its publish signals and events included),
            # without send_task's per-message routing and retry wrapper: a batch fails, or
            # not, as it is flushed. The arguments' repr shown by monitors is their JSON text.
            message = amqp.create_task_message(
                dispatch.id,
                dispatch.task_name,
                _message_args(dispatch),
                from_json(dispatch.kwargs_json),
                argsrepr=_args_text(dispatch)[:ARGS_REPR_CHARS],
                kwargsrepr=dispatch.kwargs_json[:ARGS_REPR_CHARS],
            )
            amqp.send_task_message(
                producer,
                dispatch.task_name,
                message,
                queue=dispatch.queue,
                headers=_headers(dispatch),
                retry=False,
                declare=[],
            )
        if before_flush is not None:
            before_flush()


def _batches(producer: Any) -> bool:
    """Whether the producer's transport holds batched messages until the batch is flushed
    (kombu's rule in ``Producer.batch()``)."""
    channel = producer.channel
    return (
        getattr(channel, "create_publish_batch", None) is not None
        and getattr(channel, "supports_batch_publish", True) is not False
    )


#: How much of the arguments' text a batched message carries for monitors (Celery's default).
ARGS_REPR_CHARS = 1024


def _args_text(dispatch: Dispatch) -> str:
    if dispatch.task_name != PERFORM_TASK_NAME:
        return dispatch.args_json
    rest = dispatch.args_json[1:].strip()
    return f"[{to_json(dispatch.function)}{', ' + rest if rest != ']' else ']'}"


def _message_args(dispatch: Dispatch) -> list[Any]:
    args: list[Any] = from_json(dispatch.args_json)
    if dispatch.task_name == PERFORM_TASK_NAME:
        args = [dispatch.function, *args]
    return args


def _headers(dispatch: Dispatch) -> dict[str, bool]:
    headers = {JOB_HEADER: True}
    if dispatch.tracked:
        headers[TRACKED_HEADER] = True
    return headers


def publish(
    app: Celery,
    dispatch: Dispatch,
    *,
    producer: Any = None,
    before_send: Callable[[], object] | None = None,
) -> None:
    """Send a job's Celery message, with the job id as the task id.

    ``before_send`` is called once the message is built and routed, right before it leaves
    (after Celery's ``before_task_publish`` signal): the store's insert of the job runs
    meanwhile. If it raises, the message is not sent.
    """
    if before_send is None:
        _send_task(app, dispatch, producer)
        return
    with app.producer_or_acquire(producer) as acquired:
        _send_task(app, dispatch, _SendsAfter(acquired, before_send))


def _send_task(app: Celery, dispatch: Dispatch, producer: Any) -> None:
    app.send_task(
        dispatch.task_name,
        args=_message_args(dispatch),
        kwargs=from_json(dispatch.kwargs_json),
        task_id=dispatch.id,
        queue=dispatch.queue,
        headers=_headers(dispatch),
        retry_policy=PUBLISH_RETRY_POLICY,
        producer=producer,
    )


class _SendsAfter:
    """A kombu producer whose ``publish`` calls ``before_send`` first (and otherwise the
    producer itself): ``send_task`` builds, routes and sends as ever, with its parent and root
    ids and its connection retry, and the message waits only for ``before_send``."""

    def __init__(self, producer: Any, before_send: Callable[[], object]) -> None:
        self._producer = producer
        self._before_send = before_send

    def publish(self, *args: Any, **kwargs: Any) -> Any:
        self._before_send()
        return self._producer.publish(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)
