"""Statistics rolled up from the state history, and the progress and log lines of jobs.

Counters are kept per hour and in total. The maintenance loop rolls the newest state history
up into them (by history id, so each entry counts once) before cleanup deletes any history: the
worker's path writes nothing for statistics, and the pages read a few counter rows instead of
counting jobs.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from hfcelery.jsonutil import from_json, to_json
from hfcelery.records import JobProgress
from hfcelery.states import State
from hfcelery.store.base import StoreBase, utcnow
from hfcelery.store.models import Job, JobState, Statistic
from hfcelery.store.models import JobProgress as ProgressRow

#: The ``hour`` of cumulative counters, and the name of the roll-up's high-water mark.
STATISTIC_TOTAL_HOUR = datetime(1970, 1, 1, tzinfo=UTC)
ROLLUP_MARK = "rollup:last_state_id"
#: The states counted (as Hangfire's statistics do).
COUNTED_STATES = (State.SUCCEEDED, State.FAILED, State.DELETED)
DEFAULT_ROLLUP_BATCH = 50_000
#: How old a history entry must be before it is rolled up (see ``roll_up_statistics``).
ROLLUP_GRACE = timedelta(seconds=10)
#: Hourly counters older than this are pruned.
HOURLY_RETENTION = timedelta(days=31)
#: Bounds on what a job may report, so a chatty job cannot grow the store without limit.
MAX_LOG_LINES = 200
MAX_LOG_LINE_CHARS = 2_000


def hour_of(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _moved_on() -> ColumnElement[bool]:
    """A history entry that a later entry of the same change followed (the same job, the same
    time): a state an elect-state filter moved on from (see ``_passed_through``)."""
    later = aliased(JobState)
    return exists().where(
        later.job_id == JobState.job_id,
        later.created_at == JobState.created_at,
        later.id > JobState.id,
    )


class StatisticsStore(StoreBase):
    """Counters for the overview's graphs; progress and log lines of running jobs."""

    def roll_up_statistics(
        self, *, limit: int = DEFAULT_ROLLUP_BATCH, grace: timedelta = ROLLUP_GRACE
    ) -> int:
        """Add up to ``limit`` new state history entries to the counters; return how many
        entries were read (call again while it returns ``limit``).

        History ids are taken from a sequence as rows are written, but the transactions that
        write them may commit out of order: an entry younger than ``grace`` may still have an
        older neighbour on its way. Only the run of entries (by id) older than ``grace`` is
        rolled up, so the high-water mark never passes an entry not yet visible.
        """
        cutoff = utcnow() - grace

        def work(conn: Connection) -> int:
            mark = self._mark(conn)
            fetched = conn.execute(
                select(JobState.id, JobState.state, JobState.created_at)
                .where(JobState.id > mark)
                .order_by(JobState.id)
                .limit(limit)
            ).all()
            rows = list(itertools.takewhile(lambda r: r.created_at < cutoff, fetched))
            if not rows:
                return 0
            counts: Counter[tuple[str, datetime]] = Counter()
            passed = self._passed_through(conn, [r.id for r in rows if r.state == State.FAILED])
            for row in rows:
                if row.state in COUNTED_STATES and row.id not in passed:
                    name = State(row.state).value.lower()
                    counts[(name, hour_of(row.created_at))] += 1
                    counts[(name, STATISTIC_TOTAL_HOUR)] += 1
            counts[(ROLLUP_MARK, STATISTIC_TOTAL_HOUR)] = rows[-1].id - mark
            self._add(conn, counts)
            return len(rows)

        return self._run(work, durable=True)

    def _passed_through(self, conn: Connection, entry_ids: list[int]) -> set[int]:
        """Of these history entries, those a later entry of the same change followed (the
        same job, the same time): a Failed state an elect-state filter moved on from, as
        automatic retry does to Scheduled. As Hangfire's statistics, they count as the state
        the job ended in, not as failures."""
        if not entry_ids:
            return set()
        stmt = select(JobState.id).where(JobState.id.in_(entry_ids), _moved_on())
        return set(conn.execute(stmt).scalars())

    def _mark(self, conn: Connection) -> int:
        value = conn.execute(
            select(Statistic.value).where(
                Statistic.name == ROLLUP_MARK, Statistic.hour == STATISTIC_TOTAL_HOUR
            )
        ).scalar()
        return int(value or 0)

    def _add(self, conn: Connection, counts: Counter[tuple[str, datetime]]) -> None:
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        rows = [{"name": n, "hour": h, "value": v} for (n, h), v in sorted(counts.items())]
        stmt = dialect_insert(Statistic).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Statistic.name, Statistic.hour],
            set_={"value": Statistic.value + stmt.excluded.value},
        )
        conn.execute(stmt)

    def statistics_totals(self) -> dict[str, int]:
        """Cumulative counts (``succeeded``, ``failed``, ``deleted``), including history not yet
        rolled up."""

        def work(conn: Connection) -> dict[str, int]:
            totals = {state.value.lower(): 0 for state in COUNTED_STATES}
            for name, value in conn.execute(
                select(Statistic.name, Statistic.value).where(
                    Statistic.hour == STATISTIC_TOTAL_HOUR
                )
            ):
                if name in totals:
                    totals[name] += int(value)
            for state, n in conn.execute(
                select(JobState.state, func.count())
                .where(
                    JobState.id > self._mark(conn),
                    JobState.state.in_(COUNTED_STATES),
                    or_(JobState.state != State.FAILED, ~_moved_on()),
                )
                .group_by(JobState.state)
            ):
                totals[State(state).value.lower()] += n
            return totals

        return self._run(work)

    def hourly_statistics(self, since: datetime) -> dict[datetime, dict[str, int]]:
        """Counters per hour from ``since`` (rolled-up history only), oldest first."""

        def work(conn: Connection) -> dict[datetime, dict[str, int]]:
            hours: dict[datetime, dict[str, int]] = {}
            for name, hour, value in conn.execute(
                select(Statistic.name, Statistic.hour, Statistic.value)
                .where(Statistic.hour >= hour_of(since), Statistic.name != ROLLUP_MARK)
                .order_by(Statistic.hour)
            ):
                hours.setdefault(hour, {})[name] = int(value)
            return hours

        return self._run(work)

    def prune_statistics(self, older_than: timedelta = HOURLY_RETENTION) -> int:
        """Remove hourly counters older than ``older_than``; return how many."""
        stmt = delete(Statistic).where(
            Statistic.hour > STATISTIC_TOTAL_HOUR, Statistic.hour < hour_of(utcnow() - older_than)
        )
        return self._run(lambda conn: conn.execute(stmt).rowcount, single=True)

    def record_progress(
        self, job_id: str, *, fraction: float | None = None, line: str | None = None
    ) -> None:
        """Set a job's progress fraction and/or append a log line (the newest lines kept)."""

        def work(conn: Connection) -> None:
            row = conn.execute(
                select(ProgressRow.fraction, ProgressRow.log).where(ProgressRow.job_id == job_id)
            ).first()
            lines: list[str] = from_json(row.log) if row is not None else []
            if line is not None:
                lines = [*lines, line[:MAX_LOG_LINE_CHARS]][-MAX_LOG_LINES:]
            values = {
                "fraction": fraction if fraction is not None else (row and row.fraction),
                "log": to_json(lines),
                "updated_at": utcnow(),
            }
            if row is None:
                conn.execute(insert(ProgressRow).values(job_id=job_id, **values))
            else:
                conn.execute(
                    update(ProgressRow).where(ProgressRow.job_id == job_id).values(**values)
                )

        self._run(work)

    def job_progress(self, job_id: str) -> JobProgress | None:
        """What a job reported, or None if it reported nothing."""
        stmt = select(ProgressRow).where(ProgressRow.job_id == job_id)
        row = self._run(lambda conn: conn.execute(stmt).first())
        if row is None:
            return None
        return JobProgress(row.fraction, from_json(row.log), row.updated_at)

    def delete_orphan_progress(self) -> int:
        """Remove the progress of jobs that no longer exist; return how many."""
        stmt = delete(ProgressRow).where(
            ~select(Job.id).where(Job.id == ProgressRow.job_id).exists()
        )
        return self._run(lambda conn: conn.execute(stmt).rowcount)
