"""Reading jobs: the API the state-report pages and the command line are built on."""

from __future__ import annotations

from celery import Celery

from hfcelery.client import parse_state
from hfcelery.errors import InvalidArgumentError, JobNotFoundError, RecurringJobNotFoundError
from hfcelery.extension import extension_of
from hfcelery.records import (
    DroppedMessageRecord,
    JobDetails,
    JobPage,
    RecurringJobRecord,
    ServerRecord,
)
from hfcelery.states import State
from hfcelery.store import Store

MAX_PAGE_SIZE = 500


class Monitoring:
    """Read-only views of the job store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def job(self, job_id: str) -> JobDetails:
        """A job with its arguments and state history; raises JobNotFoundError."""
        details = self._store.job(job_id)
        if details is None:
            raise JobNotFoundError(job_id)
        return details

    def find_job(self, job_id: str) -> JobDetails | None:
        """A job with its state history, or None when there is no such job."""
        return self._store.job(job_id)

    def state_counts(self) -> dict[State, int]:
        """How many jobs are in each state."""
        return self._store.state_counts()

    def jobs(self, state: State | str, *, limit: int = 20, after: str | None = None) -> JobPage:
        """A page of the jobs in ``state``, most recently changed first.

        Pass the page's ``next_cursor`` as ``after`` to get the next page.
        """
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        return self._store.jobs(parse_state(state), limit=limit, after=after)

    def recurring_jobs(self) -> list[RecurringJobRecord]:
        """Every recurring job: call, cron, time zone, queue, next and last execution, last job
        and its state, paused, last error."""
        return self._store.recurring_jobs()

    def recurring_job(self, recurring_id: str) -> RecurringJobRecord:
        """One recurring job; raises RecurringJobNotFoundError."""
        record = self._store.recurring_job(recurring_id)
        if record is None:
            raise RecurringJobNotFoundError(recurring_id)
        return record

    def servers(self) -> list[ServerRecord]:
        """The workers currently registered, with their last heartbeat."""
        return self._store.servers()

    def dropped_messages(self, limit: int = 50) -> tuple[int, list[DroppedMessageRecord]]:
        """Messages workers acknowledged without running them or recording a job (an id no
        job can have, say), kept for a week: how many, and the newest ``limit`` with why."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        return self._store.dropped_messages(limit)


def monitoring(app: Celery) -> Monitoring:
    """The monitoring API of an app that has hfcelery loaded."""
    return Monitoring(extension_of(app).store)
