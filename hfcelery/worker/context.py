"""The running job's context: ``hfcelery.current_job()``, as Hangfire's ``PerformContext``."""

from __future__ import annotations

import logging
import math
import time
from functools import cached_property
from typing import Any

from celery._state import get_current_task

from hfcelery.errors import JobAbortedError, StoreError
from hfcelery.extension import Extension, find_extension
from hfcelery.parameters import JobParameterStore
from hfcelery.worker.running import running_job

logger = logging.getLogger(__name__)


class CancellationToken:
    """Whether the running job was deleted, requeued or taken over while it runs, as
    Hangfire's ``IJobCancellationToken``.

    :attr:`is_cancellation_requested` is cheap: it asks the store at most once per heartbeat
    interval and remembers the answer in between, so a job may call it in a tight loop.
    """

    def __init__(self, extension: Extension, job_id: str, claim: int | None = None) -> None:
        self._extension = extension
        self._job_id = job_id
        #: The claim that started this run: a requeue claimed again (by any worker, this one
        #: too) is another run, and this one should stop.
        self._claim = claim
        self._requested = False
        self._checked_at = -math.inf

    @property
    def is_cancellation_requested(self) -> bool:
        now = time.monotonic()
        interval = self._extension.config.heartbeat_interval_seconds
        if not self._requested and now - self._checked_at >= interval:
            self._checked_at = now
            try:
                holder = self._extension.store.processing_holder(self._job_id)
            except StoreError:  # the store is away: nobody can have asked for it meanwhile
                logger.debug("hfcelery could not check job %s", self._job_id, exc_info=True)
            else:
                server_id = self._extension.server_id
                self._requested = holder is None or not holder.held_by(server_id, self._claim)
        return self._requested

    def throw_if_cancellation_requested(self) -> None:
        """Raise :class:`~hfcelery.errors.JobAbortedError` if the job should stop."""
        if self.is_cancellation_requested:
            raise JobAbortedError(self._job_id)


def parameter_store(extension: Extension, request: Any) -> JobParameterStore:
    """The parameter store of the job ``request`` runs, shared by its filters and its code."""
    job = running_job(request)
    found: JobParameterStore | None = job.parameters if job is not None else None
    if found is None:
        found = JobParameterStore(extension, request.id)
        if job is not None:
            job.parameters = found
    return found


class JobContext:
    """What a running job knows of itself (``hfcelery.current_job()``)."""

    def __init__(self, extension: Extension, request: Any) -> None:
        self._extension = extension
        #: The job's id (its Celery task id).
        self.id: str = request.id
        #: How many times it was retried before this run (0 on the first).
        job = running_job(request)
        self.attempt: int = job.retry_count if job is not None else 0
        #: Asks whether the job should stop early.
        self.cancellation_token = CancellationToken(
            extension, self.id, job.claim if job is not None else None
        )
        self._parameters = parameter_store(extension, request)

    @property
    def parameters(self) -> dict[str, Any]:
        """The job's parameters (Hangfire's job parameters), read once from the store."""
        return dict(self._parameters.all())

    def get_parameter(self, name: str, default: Any = None) -> Any:
        """A job parameter set by a filter or by an earlier run (Hangfire's
        ``GetJobParameter``)."""
        return self._parameters.get(name, default)

    def set_parameter(self, name: str, value: Any) -> None:
        """Store a small JSON value with the job (Hangfire's ``SetJobParameter``); later runs,
        filters and continuations' readers see it."""
        self._parameters.set(name, value)

    @cached_property
    def recurring_id(self) -> str | None:
        """The recurring job that created this one, if any (read once from the store)."""
        details = self._extension.store.job(self.id)
        return details.recurring_id if details is not None else None

    def __repr__(self) -> str:
        return f"<JobContext {self.id} attempt={self.attempt}>"


def current_job() -> JobContext | None:
    """The context of the job running in this worker thread; None outside a job."""
    task = get_current_task()
    job = running_job(task.request) if task is not None else None
    if task is None or job is None:
        return None
    context: JobContext | None = job.context
    if context is None:
        extension = find_extension(task.app)
        if extension is None:
            return None
        context = JobContext(extension, task.request)
        job.context = context
    return context
