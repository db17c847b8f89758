"""Reading jobs: the API the state-report pages and the command line are built on."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

from celery import Celery

from hfcelery.errors import InvalidArgumentError, JobNotFoundError, RecurringJobNotFoundError
from hfcelery.extension import extension_of
from hfcelery.records import (
    DroppedMessageRecord,
    JobDetails,
    JobFilter,
    JobPage,
    JobProgress,
    JobRowPage,
    RecurringJobRecord,
    ServerRecord,
)
from hfcelery.states import State, parse_state
from hfcelery.store import Store, utcnow

MAX_PAGE_SIZE = 500


class Monitoring:
    """Read-only views of the job store."""

    def __init__(self, store: Store, app: Celery | None = None) -> None:
        self._store = store
        self._app = app

    def job(self, job_id: str) -> JobDetails:
        """A job with its arguments and state history; raises JobNotFoundError."""
        details = self._store.job(job_id)
        if details is None:
            raise JobNotFoundError(job_id)
        return details

    def find_job(self, job_id: str) -> JobDetails | None:
        """A job with its state history, or None when there is no such job."""
        return self._store.job(job_id)

    def state_counts(self, states: Sequence[State] | None = None) -> dict[State, int]:
        """How many jobs are in each state (only ``states``, if given; the others read 0)."""
        return self._store.state_counts(states)

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
        _check_limit(limit)
        return self._store.dropped_messages(limit)

    def search(
        self, where: JobFilter | None = None, *, limit: int = 20, after: str | None = None
    ) -> JobRowPage:
        """A page of the jobs matching ``where``, most recently changed first, each row with its
        current state's data (exception type and message, result, duration, due time...)."""
        _check_limit(limit)
        return self._store.search_jobs(where or JobFilter(), limit=limit, after=after)

    def count(self, where: JobFilter | None = None) -> int:
        """How many jobs match ``where`` (one COUNT: for confirmations, not for graphs)."""
        return self._store.count_jobs(where or JobFilter())

    def retries(self, *, limit: int = 20, after: str | None = None) -> JobRowPage:
        """Jobs that failed and wait, Scheduled, for their next attempt."""
        return self.search(JobFilter(retries=True), limit=limit, after=after)

    def queue_jobs(self, queue: str, *, limit: int = 20, after: str | None = None) -> JobRowPage:
        """The Enqueued jobs of one queue."""
        return self.search(JobFilter(state=State.ENQUEUED, queue=queue), limit=limit, after=after)

    def queues(self) -> dict[str, int]:
        """Enqueued jobs per queue in the store."""
        return self._store.queue_counts()

    def broker_queue_lengths(self, queues: list[str]) -> dict[str, int | None]:
        """Messages waiting in each broker queue (None where the broker cannot tell)."""
        if self._app is None:
            return dict.fromkeys(queues)
        lengths: dict[str, int | None] = {}
        with self._app.connection_for_read() as conn:
            for name in queues:
                try:
                    lengths[name] = broker_queue_length(conn, name)
                except Exception:  # a broker that does not count
                    lengths[name] = None
        return lengths

    def statistics(self) -> dict[str, int]:
        """Cumulative counts of jobs that Succeeded, Failed and were Deleted (not reduced by
        cleanup)."""
        return self._store.statistics_totals()

    def hourly_statistics(self, hours: int = 24) -> list[tuple[datetime, dict[str, int]]]:
        """Counters for each of the last ``hours`` hours (oldest first, every hour present)."""
        if not isinstance(hours, int) or not 1 <= hours <= 24 * 31:
            raise InvalidArgumentError("hours must be between 1 and 744")
        now = utcnow().replace(minute=0, second=0, microsecond=0)
        first = now - timedelta(hours=hours - 1)
        known = self._store.hourly_statistics(first)
        return [
            (hour, known.get(hour, {}))
            for hour in (first + timedelta(hours=i) for i in range(hours))
        ]

    def daily_statistics(self, days: int = 7) -> list[tuple[datetime, dict[str, int]]]:
        """Counters for each of the last ``days`` days (UTC), oldest first."""
        if not isinstance(days, int) or not 1 <= days <= 31:
            raise InvalidArgumentError("days must be between 1 and 31")
        hourly = self.hourly_statistics(24 * days)
        per_day: dict[datetime, dict[str, int]] = {}
        for hour, counts in hourly:
            day = per_day.setdefault(hour.replace(hour=0), {})
            for name, value in counts.items():
                day[name] = day.get(name, 0) + value
        return list(per_day.items())[-days:]

    def progress(self, job_id: str) -> JobProgress | None:
        """What a job reported with ``hfcelery.progress`` and ``hfcelery.log``."""
        return self._store.job_progress(job_id)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE_SIZE}")


def monitoring(app: Celery) -> Monitoring:
    """The monitoring API of an app that has hfcelery loaded."""
    return Monitoring(extension_of(app).store, app)


def broker_queue_length(conn: Any, queue: str) -> int:
    """Messages ready in ``queue`` at the broker of the connection ``conn`` (0 for a queue the
    broker does not know: Redis keeps no empty list, RabbitMQ forgets a non-durable queue when
    it restarts). On Redis the connection's own channel asks; elsewhere a channel of its own,
    since AMQP closes a channel whose check failed."""
    redis = conn.transport.driver_type == "redis"
    channel = conn.default_channel if redis else conn.channel()
    try:
        declared = channel.queue_declare(queue=queue, passive=True)
    except conn.channel_errors:
        return 0
    finally:
        if not redis:
            with suppress(Exception):  # a channel the broker closed after a failed check
                channel.close()
    return int(declared.message_count)
