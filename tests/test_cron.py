"""Cron helpers, validation, next runs across daylight saving time, misfire planning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hfcelery import Cron, InvalidCronError, InvalidTimeZoneError, MisfireHandling
from hfcelery.recurring.cron import CronExpression, plan


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (Cron.minutely(), "* * * * *"),
        (Cron.hourly(), "0 * * * *"),
        (Cron.hourly(15), "15 * * * *"),
        (Cron.daily(), "0 0 * * *"),
        (Cron.daily(3), "0 3 * * *"),
        (Cron.daily(hour=0, minute=0), "0 0 * * *"),
        (Cron.daily(17, 45), "45 17 * * *"),
        (Cron.weekly(), "0 0 * * 1"),
        (Cron.weekly(5), "0 0 * * 5"),
        (Cron.weekly(0, 9, 30), "30 9 * * 0"),
        (Cron.monthly(), "0 0 1 * *"),
        (Cron.monthly(15, 6), "0 6 15 * *"),
        (Cron.monthly(28, 23, 59), "59 23 28 * *"),
        (Cron.yearly(), "0 0 1 1 *"),
        (Cron.yearly(12, 25), "0 0 25 12 *"),
        (Cron.yearly(7, 4, 12, 30), "30 12 4 7 *"),
        (Cron.never(), "0 0 31 2 *"),
        (Cron.minute_interval(5), "*/5 * * * *"),
        (Cron.hour_interval(2), "0 */2 * * *"),
        (Cron.day_interval(3), "0 0 */3 * *"),
        (Cron.month_interval(6), "0 0 1 */6 *"),
    ],
)
def test_cron_helpers_match_hangfire(expression: str, expected: str) -> None:
    assert expression == expected
    CronExpression(expression)  # and every one of them is valid


@pytest.mark.parametrize("bad", ["", "* * *", "61 * * * *", "* * * * * * *", "@reboot", "nope"])
def test_invalid_cron_expressions(bad: str) -> None:
    with pytest.raises(InvalidCronError):
        CronExpression(bad)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 0 * * 5L", [utc(2026, 1, 30), utc(2026, 2, 27), utc(2026, 3, 27)]),  # last Friday
        ("0 0 * * FRIL", [utc(2026, 1, 30), utc(2026, 2, 27), utc(2026, 3, 27)]),
        (
            "30 8 * * 0L",
            [utc(2026, 1, 25, 8, 30), utc(2026, 2, 22, 8, 30), utc(2026, 3, 29, 8, 30)],
        ),
        ("0 0 L * *", [utc(2026, 1, 31), utc(2026, 2, 28), utc(2026, 3, 31)]),  # last day
    ],
)
def test_cronos_last_day_forms(expression: str, expected: list[datetime]) -> None:
    cron = CronExpression(expression)
    assert cron.between(utc(2026, 1, 1), utc(2026, 4, 1), 10) == expected
    assert cron.expression == expression  # kept as written, shown as written


@pytest.mark.parametrize(
    ("expression", "named"),
    [("0 0 LW * *", "'LW'"), ("0 0 L-3 * *", "'L-n'"), ("0 0 1,LW * *", "'LW'"),
     ("0 0 * * 1,5L", "'nL'")],
)  # fmt: skip
def test_cronos_forms_croniter_cannot_evaluate_get_an_error_naming_them(
    expression: str, named: str
) -> None:
    with pytest.raises(InvalidCronError, match=named):
        CronExpression(expression)


def test_unknown_time_zone() -> None:
    with pytest.raises(InvalidTimeZoneError, match="Mars/Olympus"):
        CronExpression("0 0 * * *", "Mars/Olympus")


def test_daily_0230_berlin_on_the_spring_forward_day() -> None:
    """02:30 does not exist on 29 March 2026 in Berlin: the job runs at 03:00 CEST."""
    cron = CronExpression("30 2 * * *", "Europe/Berlin")
    runs = cron.between(utc(2026, 3, 27), utc(2026, 3, 31), 10)
    assert runs == [
        utc(2026, 3, 27, 1, 30),  # 02:30 CET
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST, when the clocks jump
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_daily_0230_berlin_on_the_fall_back_day() -> None:
    """02:30 happens twice on 25 October 2026 in Berlin: the job runs once, at the first."""
    cron = CronExpression("30 2 * * *", "Europe/Berlin")
    runs = cron.between(utc(2026, 10, 24), utc(2026, 10, 27), 10)
    assert runs == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_hourly_job_runs_in_both_repeated_hours() -> None:
    cron = CronExpression(Cron.hourly(), "Europe/Berlin")
    runs = cron.between(utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2, 30), 10)
    assert runs == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2)]


def test_six_fields_put_seconds_first() -> None:
    cron = CronExpression("*/20 * * * * *")
    assert cron.between(utc(2026, 1, 1), utc(2026, 1, 1, 0, 1), 10) == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1, 0),
    ]


def test_macros_and_never() -> None:
    assert CronExpression("@daily").next_after(utc(2026, 1, 1, 5)) == utc(2026, 1, 2)
    assert CronExpression(Cron.never()).next_after(utc(2026, 1, 1)) is None


def test_new_york_time_zone() -> None:
    cron = CronExpression(Cron.daily(9), "America/New_York")
    assert cron.next_after(utc(2026, 7, 1)) == utc(2026, 7, 1, 13)  # EDT
    assert cron.next_after(utc(2026, 12, 1)) == utc(2026, 12, 1, 14)  # EST


CURSOR = utc(2026, 1, 1, 10, 0)
EVERY_MINUTE = CronExpression(Cron.minutely())
GRACE = timedelta(seconds=5)


@pytest.mark.parametrize("mode", list(MisfireHandling))
def test_on_time_every_mode_fires_the_occurrence(mode: MisfireHandling) -> None:
    now = utc(2026, 1, 1, 10, 1) + timedelta(milliseconds=300)
    assert plan(EVERY_MINUTE, CURSOR, now, mode, GRACE) == (
        [utc(2026, 1, 1, 10, 1)],
        now.replace(microsecond=0),
    )


def test_nothing_due() -> None:
    now = utc(2026, 1, 1, 10, 0, 59)
    for mode in MisfireHandling:
        assert plan(EVERY_MINUTE, CURSOR, now, mode, GRACE) == ([], CURSOR)


def test_after_downtime_relaxed_fires_once() -> None:
    now = utc(2026, 1, 1, 10, 5, 30)
    fired, cursor = plan(EVERY_MINUTE, CURSOR, now, MisfireHandling.RELAXED, GRACE)
    assert fired == [utc(2026, 1, 1, 10, 5)] and cursor == utc(2026, 1, 1, 10, 5)


def test_after_downtime_strict_fires_each_missed_occurrence() -> None:
    now = utc(2026, 1, 1, 10, 5, 30)
    fired, cursor = plan(EVERY_MINUTE, CURSOR, now, MisfireHandling.STRICT, GRACE)
    assert fired == [utc(2026, 1, 1, 10, m) for m in range(1, 6)]
    assert cursor == utc(2026, 1, 1, 10, 5)


def test_after_downtime_ignorable_fires_none() -> None:
    now = utc(2026, 1, 1, 10, 5, 30)
    fired, cursor = plan(EVERY_MINUTE, CURSOR, now, MisfireHandling.IGNORABLE, GRACE)
    assert fired == [] and cursor == utc(2026, 1, 1, 10, 5)


def test_ignorable_counts_what_fell_due_before_the_beat_started_as_missed() -> None:
    every_second = CronExpression("* * * * * *")
    now = utc(2026, 1, 1, 10, 0, 30, 500000)
    started = utc(2026, 1, 1, 10, 0, 30, 400000)
    fired, cursor = plan(
        every_second, utc(2026, 1, 1, 10), now, MisfireHandling.IGNORABLE, GRACE, started
    )
    assert fired == [] and cursor == utc(2026, 1, 1, 10, 0, 30)
    later = utc(2026, 1, 1, 10, 0, 31, 200000)  # on time once the beat runs
    fired, _ = plan(every_second, cursor, later, MisfireHandling.IGNORABLE, GRACE, started)
    assert fired == [utc(2026, 1, 1, 10, 0, 31)]


def test_late_but_not_missed_occurrences_fire_each_in_relaxed_mode() -> None:
    """A slow tick (3.5 s) is late, not a misfire: every occurrence still gets its job."""
    every_second = CronExpression("* * * * * *")
    cursor = utc(2026, 1, 1, 10)
    now = utc(2026, 1, 1, 10, 0, 3, 500000)
    fired, _ = plan(every_second, cursor, now, MisfireHandling.RELAXED, GRACE, cursor)
    assert fired == [utc(2026, 1, 1, 10, 0, s) for s in (1, 2, 3)]
    missed_then_on_time = plan(
        every_second, cursor, utc(2026, 1, 1, 10, 0, 9), MisfireHandling.RELAXED, GRACE, cursor
    )[0]
    assert missed_then_on_time == [utc(2026, 1, 1, 10, 0, s) for s in (3, 4, 5, 6, 7, 8, 9)]
