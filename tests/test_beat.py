"""The recurring-job beat: syncing the store into RedBeat, misfires, real beats and fail-over.

The sync and misfire tests drive ``RecurringScheduler`` in this process against the real
Redis; the others run real ``celery beat`` and ``celery worker`` subprocesses.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

import hfcelery
from hfcelery import MisfireHandling, RecurringJobManager, State, call
from hfcelery.beat import ENTRY_PREFIX, CronSchedule, RecurringEntry, RecurringScheduler
from hfcelery.extension import extension_of
from hfcelery.recurring.fire import FIRE_TASK_NAME
from tests import jobs
from tests.conftest import ROOT, WorkerProcess, wait_for

EVERY_SECOND = "* * * * * *"


# -- the scheduler in this process ---------------------------------------------------------------


@pytest.fixture
def beat_app(redis_url: str, tmp_path: Path) -> Iterator[Celery]:
    """An app whose fire messages go to a queue nobody consumes, so tests can count them."""
    app = Celery("beat-test", broker=redis_url, set_as_current=False)
    fire_queue = f"fire-{uuid.uuid4().hex[:8]}"
    app.conf.update(
        redbeat_redis_url=redis_url,
        redbeat_key_prefix=f"hfbeat-{uuid.uuid4().hex[:8]}:",
        task_routes={FIRE_TASK_NAME: {"queue": fire_queue}},
    )
    app.conf.fire_queue = fire_queue
    hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'beat.db'}", allowed_modules=["tests"])
    yield app
    extension_of(app).store.dispose()


def scheduler(app: Celery) -> RecurringScheduler:
    return RecurringScheduler(app=app)


def entry(app: Celery, recurring_id: str) -> RecurringEntry | None:
    key = RecurringEntry.generate_key(app, ENTRY_PREFIX + recurring_id)
    try:
        return RecurringEntry.from_key(key, app=app)
    except KeyError:
        return None


def fired(app: Celery, side_effects: redis.Redis) -> int:
    return int(side_effects.llen(app.conf.fire_queue))


def test_sync_creates_updates_and_removes_entries(beat_app: Celery) -> None:
    manager = RecurringJobManager(beat_app)
    manager.add_or_update("a", call(jobs.multiply, 1, 2), "*/5 * * * * *", tz="Asia/Tokyo")
    manager.add_or_update("b", call(jobs.multiply, 3, 4), "0 3 * * *")
    beat = scheduler(beat_app)
    beat.sync()
    a, b = entry(beat_app, "a"), entry(beat_app, "b")
    assert a is not None and b is not None
    assert isinstance(a.schedule, CronSchedule)
    assert (a.schedule.cron.expression, a.schedule.cron.zone) == ("*/5 * * * * *", "Asia/Tokyo")
    assert a.task == FIRE_TASK_NAME and a.args == ["a"]

    manager.pause("b")
    manager.remove_if_exists("a")
    ghost = RecurringEntry(
        name=ENTRY_PREFIX + "ghost",
        task=FIRE_TASK_NAME,
        schedule=CronSchedule(EVERY_SECOND),
        args=["ghost"],
        app=beat_app,
    ).save()
    assert entry(beat_app, "ghost") is not None
    beat.sync()
    assert entry(beat_app, "a") is None  # removed from the store
    assert entry(beat_app, "b") is None  # paused
    assert entry(beat_app, "ghost") is None  # never in the store
    assert ghost.rank is None

    manager.resume("b")
    beat.sync()
    resumed = entry(beat_app, "b")
    assert resumed is not None and resumed.last_run_at > datetime.now(UTC) - timedelta(seconds=5)


def test_changed_definition_resets_and_unchanged_one_keeps_its_cursor(beat_app: Celery) -> None:
    manager = RecurringJobManager(beat_app)
    manager.add_or_update("c", call(jobs.multiply, 1, 2), "0 * * * *")
    scheduler(beat_app).sync()
    current = entry(beat_app, "c")
    assert current is not None
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    current.reschedule(an_hour_ago)

    scheduler(beat_app).sync()  # a restarted beat: same revision, the cursor stays
    kept = entry(beat_app, "c")
    assert kept is not None and kept.last_run_at == an_hour_ago

    manager.add_or_update("c", call(jobs.multiply, 1, 2), "30 * * * *")
    scheduler(beat_app).sync()
    changed = entry(beat_app, "c")
    assert changed is not None and changed.schedule.cron.expression == "30 * * * *"
    assert changed.last_run_at > an_hour_ago + timedelta(minutes=59)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (MisfireHandling.STRICT, 30),
        (MisfireHandling.RELAXED, 1),
        (MisfireHandling.IGNORABLE, 0),
    ],
)
def test_misfires_after_thirty_seconds_without_beat(
    beat_app: Celery, side_effects: redis.Redis, mode: MisfireHandling, expected: int
) -> None:
    manager = RecurringJobManager(beat_app)
    manager.add_or_update("m", call(jobs.multiply, 1, 2), EVERY_SECOND, misfire=mode)
    beat = scheduler(beat_app)
    beat.sync()
    now = datetime.now(UTC).replace(microsecond=0)
    current = entry(beat_app, "m")
    assert current is not None
    current.reschedule(now - timedelta(seconds=30))  # the last occurrence handled
    beat.active_since = datetime.now(UTC)  # this beat has just started
    with beat_app.producer_or_acquire() as producer:
        beat.maybe_due(entry(beat_app, "m"), producer=producer)
    count = fired(beat_app, side_effects)
    if mode is MisfireHandling.STRICT:  # the 30 missed seconds, and maybe the current one
        assert count in (expected, expected + 1)
    else:
        assert count == expected
    moved = entry(beat_app, "m")
    assert moved is not None and moved.last_run_at >= now


# -- real beats ----------------------------------------------------------------------------------


class BeatProcess:
    def __init__(
        self,
        log_path: Path,
        env: dict[str, str],
        scheduler: str = "hfcelery.beat:RecurringScheduler",
    ) -> None:
        self.log_path = log_path
        command = [
            sys.executable, "-m", "celery", "-A", "tests.app", "beat",
            "-S", scheduler, "-l", "info",
            "--pidfile=", "-s", str(log_path.with_suffix(".schedule")),
        ]  # fmt: skip
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_beat(test_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    beats: list[BeatProcess] = []

    def start(**options: str) -> BeatProcess:
        beat = BeatProcess(tmp_path / f"beat{len(beats)}.log", test_env, **options)
        beats.append(beat)
        return beat

    yield start
    for beat in beats:
        beat.stop()


def recurring_jobs(app: Celery, recurring_id: str) -> list[tuple[datetime, State]]:
    """(occurrence, state) of the jobs a recurring job created, in order."""
    from sqlalchemy import select

    from hfcelery.store.models import Job

    with extension_of(app).store.engine.connect() as conn:
        rows = conn.execute(
            select(Job.scheduled_for, Job.state)
            .where(Job.recurring_id == recurring_id, Job.scheduled_for.is_not(None))
            .order_by(Job.scheduled_for)
        ).all()
    return [(r.scheduled_for.astimezone(UTC), State(r.state)) for r in rows]


@pytest.fixture
def recurring_id(test_app: Celery) -> Iterator[str]:
    rid = f"every-2s-{uuid.uuid4().hex[:6]}"
    yield rid
    RecurringJobManager(test_app).remove_if_exists(rid)


@pytest.mark.acceptance
def test_real_beat_fires_one_job_per_occurrence(
    worker: WorkerProcess, start_beat: Any, test_app: Celery, recurring_id: str
) -> None:
    manager = RecurringJobManager(test_app)
    manager.add_or_update(recurring_id, call(jobs.multiply, 2, 3), "*/2 * * * * *")
    beat = start_beat()
    wait_for(lambda: len(recurring_jobs(test_app, recurring_id)) >= 4, timeout=30, what="4 runs")
    runs = recurring_jobs(test_app, recurring_id)
    occurrences = [when for when, _ in runs]
    assert all(when.second % 2 == 0 and when.microsecond == 0 for when in occurrences)
    assert all(b - a == timedelta(seconds=2) for a, b in itertools.pairwise(occurrences))
    wait_for(
        lambda: all(s is State.SUCCEEDED for _, s in recurring_jobs(test_app, recurring_id)[:4]),
        what="the runs to succeed",
    )
    record = hfcelery.monitoring(test_app).recurring_job(recurring_id)
    assert record.last_job_id is not None and record.last_execution is not None
    assert record.next_execution is not None

    # A pause takes effect on the next loop; resuming starts again from the next occurrence.
    assert manager.pause(recurring_id)
    time.sleep(2)
    paused_count = len(recurring_jobs(test_app, recurring_id))
    time.sleep(3)
    assert len(recurring_jobs(test_app, recurring_id)) == paused_count
    assert manager.resume(recurring_id)
    wait_for(
        lambda: len(recurring_jobs(test_app, recurring_id)) > paused_count,
        what="runs after resume",
    )
    assert "fired recurring job" in beat.log()


@pytest.mark.acceptance
def test_plain_redbeat_scheduler_runs_the_recurring_jobs_too(
    worker: WorkerProcess, start_beat: Any, test_app: Celery, recurring_id: str
) -> None:
    """``celery beat -S redbeat.RedBeatScheduler``, as a RedBeat project runs it: with
    hfcelery loaded it runs hfcelery's scheduler (plain RedBeat cannot read the recurring jobs'
    entries and stopped on its first tick)."""
    RecurringJobManager(test_app).add_or_update(
        recurring_id, call(jobs.multiply, 2, 3), "*/2 * * * * *"
    )
    beat = start_beat(scheduler="redbeat.RedBeatScheduler")
    wait_for(lambda: len(recurring_jobs(test_app, recurring_id)) >= 2, timeout=30, what="2 runs")
    wait_for(
        lambda: all(s is State.SUCCEEDED for _, s in recurring_jobs(test_app, recurring_id)[:2]),
        what="the runs to succeed",
    )
    assert beat.process.poll() is None
    log = beat.log()
    assert "runs as hfcelery.beat:RecurringScheduler" in log and "Traceback" not in log


def test_redbeat_s_scheduler_is_hfcelery_s_for_an_app_with_hfcelery(beat_app: Celery) -> None:
    from redbeat import RedBeatScheduler

    assert type(RedBeatScheduler(app=beat_app)) is RecurringScheduler
    plain = Celery("beat-test-plain", broker=beat_app.conf.broker_url, set_as_current=False)
    made = RedBeatScheduler.__new__(RedBeatScheduler, app=plain)
    assert type(made) is RedBeatScheduler  # no hfcelery: left alone


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"broker_url": "amqp://guest:guest@127.0.0.1:5672//"}, "the broker URL is amqp://"),
        ({"redbeat_redis_url": "amqp://127.0.0.1//"}, "redbeat_redis_url is amqp://"),
    ],
)
def test_a_beat_without_redis_for_redbeat_says_which_setting_to_give(
    settings: dict[str, str], named: str, tmp_path: Path
) -> None:
    from hfcelery.errors import ConfigurationError

    app = Celery("beat-test-amqp", set_as_current=False)
    app.conf.update(settings)
    hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 'beat.db'}")
    with pytest.raises(ConfigurationError, match=f"{named}.*set redbeat_redis_url"):
        RecurringScheduler(app=app)


@pytest.mark.acceptance
def test_standby_beat_takes_over_when_the_active_one_is_killed(
    worker: WorkerProcess, start_beat: Any, test_app: Celery, recurring_id: str
) -> None:
    RecurringJobManager(test_app).add_or_update(
        recurring_id, call(jobs.multiply, 1, 1), "*/2 * * * * *"
    )
    active = start_beat()
    wait_for(lambda: "fired recurring job" in active.log(), timeout=30, what="the first beat")
    standby = start_beat()
    time.sleep(3)
    assert "fired recurring job" not in standby.log()  # it waits for the lock
    active.stop(signal.SIGKILL)
    killed_at = datetime.now(UTC)
    # Takeover within the lock timeout (4 s here; 30 s by default) and a loop.
    wait_for(
        lambda: any(
            w > killed_at + timedelta(seconds=1) for w, _ in recurring_jobs(test_app, recurring_id)
        ),
        timeout=20,
        what="the standby beat to fire",
    )
    assert "fired recurring job" in standby.log()
    occurrences = [w for w, _ in recurring_jobs(test_app, recurring_id)]
    assert len(occurrences) == len(set(occurrences))


@pytest.mark.acceptance
def test_beat_that_loses_its_lock_stops(
    start_beat: Any, test_app: Celery, side_effects: redis.Redis
) -> None:
    beat = start_beat()
    lock_key = test_app.conf.redbeat_key_prefix + ":lock"
    wait_for(lambda: side_effects.exists(lock_key), timeout=30, what="the beat to take its lock")
    side_effects.set(lock_key, "another-beat", ex=60)  # someone else holds it now
    wait_for(lambda: beat.process.poll() is not None, timeout=20, what="the beat to exit")
    assert "LockNotOwnedError" in beat.log() or "lock" in beat.log().lower()
    side_effects.delete(lock_key)
