"""Recurring job definitions in the store (SQLite and PostgreSQL), and their validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery

import hfcelery
from hfcelery import Cron, RecurringJobManager, State, call
from hfcelery.errors import (
    InvalidCallError,
    InvalidCronError,
    InvalidScheduleError,
    InvalidTimeZoneError,
    RecurringJobNotFoundError,
)
from hfcelery.records import Dispatch, RecurringDefinition
from hfcelery.store import Store
from tests import jobs


def definition(recurring_id: str = "daily-report", cron: str = "0 3 * * *") -> RecurringDefinition:
    return RecurringDefinition(
        id=recurring_id,
        function="tests.jobs:multiply",
        task_name="hfcelery.perform",
        args_json="[6, 7]",
        kwargs_json="{}",
        queue="default",
        display_name=None,
        cron=cron,
        time_zone="Europe/Berlin",
        misfire="relaxed",
    )


def test_upsert_replaces_in_place_and_bumps_the_revision(store: Store) -> None:
    store.upsert_recurring(definition())
    assert store.recurring_revisions() == {"daily-report": (1, False)}
    store.upsert_recurring(definition(cron="0 4 * * *"))
    record = store.recurring_job("daily-report")
    assert record is not None
    assert (record.cron, record.revision, record.time_zone) == ("0 4 * * *", 2, "Europe/Berlin")
    assert record.next_execution is not None and record.next_execution > datetime.now(UTC)
    assert record.last_execution is None and record.last_job_state is None


def test_the_same_definition_again_keeps_its_revision(store: Store) -> None:
    store.upsert_recurring(definition())
    store.upsert_recurring(definition())  # a deploy registering it again
    assert store.recurring_revisions() == {"daily-report": (1, False)}


def test_pause_resume_remove(store: Store) -> None:
    store.upsert_recurring(definition())
    assert store.set_recurring_paused("daily-report", True)
    record = store.recurring_job("daily-report")
    assert record is not None and record.paused and record.next_execution is None
    assert store.recurring_revisions() == {"daily-report": (2, True)}
    assert store.set_recurring_paused("daily-report", False)
    assert not store.set_recurring_paused("missing", True)
    assert store.remove_recurring("daily-report")
    assert not store.remove_recurring("daily-report")
    assert store.recurring_jobs() == []


def test_one_job_per_occurrence(store: Store) -> None:
    store.upsert_recurring(definition())
    sent: list[Dispatch] = []
    occurrence = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)

    def create(job_id: str, when: datetime | None) -> str | None:
        return store.create_recurring_job(
            "daily-report", job_id=job_id, scheduled_for=when, reason="r", publish=sent.append
        )

    assert create("a", occurrence) == "a"
    assert create("b", occurrence) is None  # the same occurrence again: dropped
    assert create("c", occurrence + timedelta(days=1)) == "c"
    assert create("d", None) == "d" and create("e", None) == "e"  # manual triggers
    assert [d.id for d in sent] == ["a", "c", "d", "e"]
    job = store.job("a")
    assert job is not None
    assert (job.recurring_id, job.scheduled_for, job.args) == ("daily-report", occurrence, [6, 7])
    record = store.recurring_job("daily-report")
    assert record is not None
    assert (record.last_job_id, record.last_job_state) == ("e", State.ENQUEUED)
    assert record.last_execution is not None


def test_paused_or_removed_recurring_job_creates_nothing(store: Store) -> None:
    store.upsert_recurring(definition())
    store.set_recurring_paused("daily-report", True)
    kw = {"scheduled_for": datetime.now(UTC), "reason": "r", "publish": lambda d: None}
    assert store.create_recurring_job("daily-report", job_id="x", **kw) is None  # type: ignore[arg-type]
    assert store.create_recurring_job("daily-report", job_id="y", when_paused=True, **kw) == "y"  # type: ignore[arg-type]
    assert store.create_recurring_job("missing", job_id="z", **kw) is None  # type: ignore[arg-type]


def test_errors_are_remembered(store: Store) -> None:
    store.upsert_recurring(definition())
    store.record_recurring_error("daily-report", "boom")
    record = store.recurring_job("daily-report")
    assert record is not None and record.last_error == "boom"


@pytest.fixture
def manager(tmp_path: Path) -> RecurringJobManager:
    app = Celery("recurring-test", broker="memory://", set_as_current=False)
    hfcelery.init_app(app, store_url=f"sqlite:///{tmp_path / 's.db'}", allowed_modules=["tests"])
    return RecurringJobManager(app)


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("r", call(jobs.multiply, 1, 2), "not a cron"), {}, InvalidCronError),
        (
            ("r", call(jobs.multiply, 1, 2), Cron.daily()),
            {"tz": "Nowhere/Land"},
            InvalidTimeZoneError,
        ),
        (("r", lambda: None, Cron.daily()), {}, InvalidCallError),
        (("r", call(jobs.record, object()), Cron.daily()), {}, InvalidCallError),
        (("", call(jobs.multiply, 1, 2), Cron.daily()), {}, InvalidCallError),
        (
            ("r", call(jobs.multiply, 1, 2), Cron.daily()),
            {"misfire": "sometimes"},
            InvalidScheduleError,
        ),
    ],
)
def test_invalid_definitions_write_nothing(
    manager: RecurringJobManager, args: tuple[object, ...], kwargs: dict[str, object], error: type
) -> None:
    with pytest.raises(error):
        manager.add_or_update(*args, **kwargs)  # type: ignore[arg-type]
    assert hfcelery.monitoring(manager.app).recurring_jobs() == []


def test_manager_add_trigger_pause(manager: RecurringJobManager) -> None:
    manager.add_or_update(
        "report", call(jobs.critical_report, "monthly"), Cron.monthly(), tz="America/New_York"
    )
    api = hfcelery.monitoring(manager.app)
    (record,) = api.recurring_jobs()
    assert (record.function, record.args, record.queue) == (
        "tests.jobs:critical_report",
        ["monthly"],
        "hftests-critical",
    )
    assert record.display_name == "Critical report monthly"
    assert record.misfire == "relaxed"
    assert manager.pause("report")
    job_id = manager.trigger("report")  # a paused job can still be run by hand
    assert api.job(job_id).recurring_id == "report"
    assert api.recurring_job("report").last_job_id == job_id
    with pytest.raises(RecurringJobNotFoundError):
        manager.trigger("missing")
    assert manager.remove_if_exists("report")
    assert not manager.remove_if_exists("report")
