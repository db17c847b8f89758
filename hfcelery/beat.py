"""The beat for recurring jobs: ``celery -A proj beat -S hfcelery.beat:RecurringScheduler``.

A RedBeat scheduler (RedBeat's Redis entries, lock and fail-over) that also

* syncs the recurring jobs of the hfcelery store into RedBeat entries on every loop, while it
  holds the lock: new and changed definitions are (re)created, removed and paused ones deleted;
* keeps each entry's schedule as a cron expression in the job's own time zone (RedBeat's
  crontab knows only the app's zone and no seconds) and wakes up exactly when it falls due;
* sends, for each occurrence, the small task ``hfcelery.recurring.fire`` with the occurrence's
  time, and only then moves the entry's cursor: after a crash the occurrence is sent again and
  the store, which keeps one job per (recurring id, occurrence), drops the duplicate;
* applies the misfire mode (relaxed, strict, ignorable) to occurrences missed while no beat ran.

A beat that loses its lock stops: RedBeat raises when it cannot extend the lock, and the
process exits for its supervisor to restart it as the standby. Static ``beat_schedule`` entries
keep working as with RedBeat.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.schedules import BaseSchedule, schedstate
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry, get_redis

from hfcelery.errors import ConfigurationError, HfceleryError, StoreUnavailableError
from hfcelery.extension import extension_of, find_extension
from hfcelery.recurring.cron import CronExpression, MisfireHandling, plan
from hfcelery.recurring.fire import FIRE_TASK_NAME
from hfcelery.worker.health import ServiceHealth

logger = logging.getLogger(__name__)

#: Names of the RedBeat entries of recurring jobs: this prefix and the recurring job's id.
ENTRY_PREFIX = "hfcelery.recurring:"
_CRON_TYPE = "hfcelery.cron"
#: Shortest wait between loops, so a strict catch-up goes on at once but never spins.
MIN_WAIT_SECONDS = 0.01


class CronSchedule(BaseSchedule):  # type: ignore[misc]
    """A recurring job's schedule: a cron expression in its time zone, and its misfire mode.

    ``revision`` is the store definition's; beat resets an entry when it changes.
    """

    def __init__(
        self,
        expression: str,
        zone: str = "UTC",
        misfire: str = MisfireHandling.RELAXED,
        revision: int = 0,
        **kwargs: Any,
    ) -> None:
        self.cron = CronExpression(expression, zone)
        self.misfire = MisfireHandling(misfire)
        self.revision = revision
        super().__init__(**kwargs)

    @property
    def tz(self) -> Any:
        return self.cron.tz

    def now(self) -> datetime:
        return datetime.now(UTC)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta | None:
        following = self.cron.next_after(last_run_at)
        return None if following is None else following - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = self.remaining_estimate(last_run_at)
        if remaining is None:
            return schedstate(False, None)
        seconds = remaining.total_seconds()
        return schedstate(seconds <= 0, max(seconds, MIN_WAIT_SECONDS))

    def _key(self) -> tuple[str, str, str, int]:
        return (self.cron.expression, self.cron.zone, self.misfire.value, self.revision)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronSchedule) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), self._key()

    def __repr__(self) -> str:
        return f"<cron {self.cron.expression!r} {self.cron.zone} {self.misfire.value}>"


class _Encoder(RedBeatJSONEncoder):  # type: ignore[misc]
    def default(self, obj: Any) -> Any:
        if isinstance(obj, CronSchedule):
            expression, zone, misfire, revision = obj._key()
            return {
                "__type__": _CRON_TYPE,
                "expression": expression,
                "zone": zone,
                "misfire": misfire,
                "revision": revision,
            }
        return super().default(obj)


class _Decoder(RedBeatJSONDecoder):  # type: ignore[misc]
    def dict_to_object(self, d: dict[str, Any]) -> Any:
        if d.get("__type__") == _CRON_TYPE:
            fields = {k: v for k, v in d.items() if k != "__type__"}
            return CronSchedule(**fields)
        return super().dict_to_object(d)


class RecurringEntry(RedBeatSchedulerEntry):  # type: ignore[misc]
    """A RedBeat entry that stores a :class:`CronSchedule` and is due at its exact next run."""

    @staticmethod
    def decode_definition(definition: str) -> Any:
        return json.loads(definition, cls=_Decoder)

    @property
    def due_at(self) -> datetime | None:
        if not isinstance(self.schedule, CronSchedule):
            due: datetime | None = super().due_at
            return due
        if self.last_run_at is None:
            return datetime.now(UTC)
        return self.schedule.cron.next_after(self.last_run_at)

    def save(self) -> RecurringEntry:
        # RedBeat's save() with our encoder (RedBeat's own cannot write a CronSchedule).
        definition = {
            "name": self.name,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "schedule": self.schedule,
            "enabled": self.enabled,
        }
        meta = {"last_run_at": self.last_run_at}
        with get_redis(self.app).pipeline() as pipe:
            pipe.hset(self.key, "definition", json.dumps(definition, cls=_Encoder))
            pipe.hsetnx(self.key, "meta", json.dumps(meta, cls=_Encoder))
            pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})
            pipe.execute()
        return self


#: URL schemes of the Redis that RedBeat's client connects to.
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis-sentinel", "redis-cluster")


def redis_url_problem(app: Any) -> str | None:
    """Why RedBeat cannot keep its entries and lock where this app points it, if it cannot:
    RedBeat needs Redis, and without ``redbeat_redis_url`` it uses the broker (RabbitMQ?)."""
    own = app.conf.get("redbeat_redis_url")
    url = own or app.conf.get("broker_url") or ""
    first = str(url[0] if isinstance(url, list | tuple) and url else url).split(";")[0]
    scheme = first.partition("://")[0].lower()
    if scheme in REDIS_SCHEMES:
        return None
    where = "redbeat_redis_url" if own else "the broker URL"
    return (
        f"RedBeat keeps the recurring jobs' entries and its lock in Redis, and {where} is "
        f"{scheme or 'not set'}://...: set redbeat_redis_url (CELERY_REDBEAT_REDIS_URL in "
        "deploy/) to a Redis URL"
    )


class RecurringScheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat, plus the recurring jobs of the hfcelery store (see the module docs)."""

    Entry = RecurringEntry

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        problem = redis_url_problem(app)
        if problem is not None:
            raise ConfigurationError(problem)
        super().__init__(app, *args, **kwargs)
        #: Revisions this process has synced, by recurring id.
        self._synced: dict[str, int] = {}
        #: When this beat first ticked holding the lock: occurrences before were missed.
        self.active_since: datetime | None = None
        #: Store outages: one line when it goes, a reminder a minute, one when it is back.
        self._store_health = ServiceHealth("store (beat)")

    def tick(self, min: Any = min, **kwargs: Any) -> float:
        if self.lock_key:
            self.lock.extend(int(self.lock_timeout))  # never sync without holding the lock
        if self.active_since is None:
            self.active_since = datetime.now(UTC)
        try:
            self.sync()
        except StoreUnavailableError as exc:  # the entries already in Redis keep firing
            self._store_health.failed(exc, "beat")
        except Exception:
            logger.exception("hfcelery beat could not sync recurring jobs from the store")
        else:
            self._store_health.answered()
        wait: float = super().tick(min=min, **kwargs)
        return wait

    def sync(self) -> None:
        """Make the RedBeat entries of recurring jobs match the store's definitions."""
        store = extension_of(self.app).store
        definitions = store.recurring_revisions()
        schedule_key = self.app.redbeat_conf.schedule_key
        key_prefix = self.Entry.generate_key(self.app, ENTRY_PREFIX)
        ours = {
            _text(key)[len(key_prefix) :]: _text(key)
            for key in get_redis(self.app).zrange(schedule_key, 0, -1)
            if _text(key).startswith(key_prefix)
        }
        for recurring_id in ours:
            revision, paused = definitions.get(recurring_id, (None, True))
            if revision is None or paused:
                self.Entry(name=ENTRY_PREFIX + recurring_id, app=self.app).delete()
                self._synced.pop(recurring_id, None)
                logger.info("hfcelery beat: recurring job %s stopped", recurring_id)
        for recurring_id, (revision, paused) in definitions.items():
            if paused or (self._synced.get(recurring_id) == revision and recurring_id in ours):
                continue
            current = self._entry(ours[recurring_id]) if recurring_id in ours else None
            if current is not None and current.schedule.revision == revision:
                self._synced[recurring_id] = revision  # a restarted beat keeps the cursor
                continue
            self._install(recurring_id, current)

    def _entry(self, key: str) -> RecurringEntry | None:
        try:
            entry: RecurringEntry = self.Entry.from_key(key, app=self.app)
        except (KeyError, ValueError, TypeError, HfceleryError):
            return None
        return entry if isinstance(entry.schedule, CronSchedule) else None

    def _install(self, recurring_id: str, current: RecurringEntry | None) -> None:
        """(Re)create the entry of a new or changed recurring job. Its cursor starts now,
        unless only the call changed (the same cron, zone and misfire mode go on as before)."""
        store = extension_of(self.app).store
        record = store.recurring_job(recurring_id)
        if record is None:
            return
        try:
            schedule = CronSchedule(record.cron, record.time_zone, record.misfire, record.revision)
        except HfceleryError as exc:
            store.record_recurring_error(recurring_id, f"invalid schedule: {exc}")
            return
        entry = self.Entry(
            name=ENTRY_PREFIX + recurring_id,
            task=FIRE_TASK_NAME,
            schedule=schedule,
            args=[recurring_id],
            app=self.app,
        )
        if current is not None and current.schedule._key()[:3] == schedule._key()[:3]:
            entry.last_run_at = current.last_run_at
            entry.save()  # keeps the stored cursor
        else:
            entry.save()
            entry.reschedule(datetime.now(UTC))  # from now on: nothing before the change fires
        self._synced[recurring_id] = record.revision
        logger.info("hfcelery beat: recurring job %s scheduled (%r)", recurring_id, schedule)

    def maybe_due(self, entry: Any, **kwargs: Any) -> float | None:
        if not isinstance(entry.schedule, CronSchedule):
            result: float | None = super().maybe_due(entry, **kwargs)
            return result
        try:
            return self._fire_due(entry, kwargs.get("producer"))
        except Exception:  # one broken entry must not stop the others
            logger.exception("hfcelery beat: recurring job %s failed to fire", entry.name)
            return float(self.max_interval)

    def _fire_due(self, entry: RecurringEntry, producer: Any) -> float | None:
        schedule: CronSchedule = entry.schedule
        recurring_id = entry.args[0]
        now = datetime.now(UTC)
        cursor = entry.last_run_at or now
        grace = timedelta(seconds=max(float(self.max_interval), 5.0))
        occurrences, new_cursor = plan(
            schedule.cron, cursor, now, schedule.misfire, grace, self.active_since
        )
        for occurrence in occurrences:
            when = occurrence.isoformat()
            self.app.send_task(
                FIRE_TASK_NAME,
                args=(recurring_id, when),
                producer=producer,
                task_id=f"{ENTRY_PREFIX}{recurring_id}@{when}",
            )
            logger.info("hfcelery beat: fired recurring job %s for %s", recurring_id, when)
        if new_cursor != entry.last_run_at:
            entry.reschedule(new_cursor)  # after sending: a crash re-sends, never skips
        following = schedule.cron.next_after(new_cursor)
        if following is None:
            return None
        return max((following - datetime.now(UTC)).total_seconds(), MIN_WAIT_SECONDS)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _recurring_instead(cls: type, *args: Any, **kwargs: Any) -> Any:
    """``celery beat -S redbeat.RedBeatScheduler`` for an app with hfcelery runs this module's
    scheduler: plain RedBeat cannot read the recurring jobs' entries (their cron schedules in a
    zone) and would stop on its first tick."""
    app = kwargs.get("app", args[0] if args else None)
    if cls is RedBeatScheduler and app is not None and find_extension(app) is not None:
        logger.info("hfcelery: redbeat.RedBeatScheduler runs as hfcelery.beat:RecurringScheduler")
        cls = RecurringScheduler
    return object.__new__(cls)


def run_recurring_jobs_under_plain_redbeat() -> None:
    """Make ``redbeat.RedBeatScheduler`` start as :class:`RecurringScheduler` for apps that
    loaded hfcelery (called by ``init_app``; once)."""
    if RedBeatScheduler.__dict__.get("__new__") is None:
        RedBeatScheduler.__new__ = staticmethod(_recurring_instead)
