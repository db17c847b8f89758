"""The state of the job a worker thread runs, kept on its Celery request as one typed value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hfcelery.filters import FilterSet, PerformingContext
    from hfcelery.options import JobOptions

#: The request attribute that holds the :class:`RunningJob`.
ATTRIBUTE = "hf_job"


@dataclass(slots=True)
class RunningJob:
    """What hfcelery knows of a job from its claim until its outcome is recorded."""

    id: str
    #: The number of the claim that started this run (only it may finish the job).
    claim: int
    created_at: datetime
    #: Retries before this run.
    retry_count: int
    #: ``time.monotonic()`` and the wall clock when the run started.
    started: float
    started_at: datetime
    #: The decorator options and filters of the function or task (read once per run).
    options: JobOptions | None = None
    filters: FilterSet | None = None
    #: The ``@disable_concurrent_execution`` lock it holds.
    lock: str | None = None
    #: A Celery task's server filters between ``on_performing`` and ``on_performed``.
    performing: PerformingContext | None = None
    #: The server filters whose ``on_performing`` ran, the latest first.
    performed_filters: tuple[Any, ...] = ()
    #: A Celery ``self.retry()`` recorded as its message was published.
    retry_recorded: bool = False
    #: The job's parameters and ``current_job()`` context, made on first use.
    parameters: Any = None
    context: Any = None
    #: Ended before the task did (deleted by a filter or the latency timeout): the task's end
    #: records nothing more.
    ended: bool = False


def running_job(request: Any) -> RunningJob | None:
    """The job ``request`` runs, if it was claimed and has not ended early."""
    job: RunningJob | None = getattr(request, ATTRIBUTE, None)
    return job if job is not None and not job.ended else None
