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


@pytest.mark.parametrize(
    "bad", ["", "* * *", "61 * * * *", "* * * * * * *", "@reboot", "@every_hour", "@", "nope"]
)
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


# Cronos's own DST test cases (HangfireIO/Cronos, tests/Cronos.Tests/CronExpressionFacts.cs),
# copied with their comments: (expression, from, inclusive, expected). Cronos asks for the next
# occurrence at or after ``from`` (inclusive) or after it; ``next_after`` is always "after".
CronosCase = tuple[str, str, bool, str]


def cronos_time(text: str) -> datetime:
    """Cronos's notation, ``2016-11-06 01:30 -04:00`` (seconds and a fraction optional)."""
    moment, offset = text.rsplit(" ", 1)
    return datetime.fromisoformat(moment + offset)


def cronos_next(cron: CronExpression, start: datetime, inclusive: bool) -> datetime | None:
    """Cronos's GetNextOccurrence(from, zone, inclusive). Cronos floors a ``from`` with a
    fraction to the second and then excludes it; occurrences are whole seconds, so "at or after
    ``from``" is "after ``from`` - 1 s"."""
    if start.microsecond:
        start, inclusive = start.replace(microsecond=0), False
    return cron.next_after(start - timedelta(seconds=1) if inclusive else start)


CRONOS_EASTERN_SPRING_FORWARD: list[CronosCase] = [
    # 2016-03-13 is date when the clock jumps forward from 1:59 am -05:00 standard time (ST)
    # to 3:00 am -04:00 DST in Eastern Time Zone.
    # ________1:59 ST///invalid///3:00 DST________
    # Run missed.
    ("0 */30 * * * *", "2016-03-13 01:45 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 */30 */2 * * *", "2016-03-13 01:59 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 1-58 */2 * * *", "2016-03-13 01:59 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 0,30 0-23/2 * * *", "2016-03-13 01:59 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 */30 2 * * *", "2016-03-13 01:59 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 0,30 2 * * *", "2016-03-13 01:59 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 */30 2 13 03 *", "2016-03-13 01:59 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 0,30 02 13 03 *", "2016-03-13 01:45 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 30 2 * * *", "2016-03-13 01:59 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 0 */2 * * *", "2016-03-13 01:59 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 30 0-23/2 * * *", "2016-03-13 01:59 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 0,59 * * * *", "2016-03-13 01:59 -05:00", True, "2016-03-13 01:59 -05:00"),
    ("0 0,59 * * * *", "2016-03-13 03:00 -04:00", True, "2016-03-13 03:00 -04:00"),
    ("0 30 * * 3 SUN#2", "2016-03-13 01:59 -05:00", True, "2016-03-13 03:00 -04:00"),
    ("0 */30 * * * *", "2016-03-13 01:30 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 */30 */2 * * *", "2016-03-13 01:30 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 1-58 */2 * * *", "2016-03-13 01:58 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 0,30 0-23/2 * * *", "2016-03-13 00:30 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 0,30 2 * * *", "2016-03-12 02:30 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 */30 2 13 03 *", "2016-03-13 01:59 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 0,30 02 13 03 *", "2016-03-13 01:45 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 30 2 * * *", "2016-03-12 02:30 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 0 */2 * * *", "2016-03-13 00:00 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 30 0-23/2 * * *", "2016-03-13 00:30 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 0,59 * * * *", "2016-03-13 01:59 -05:00", False, "2016-03-13 03:00 -04:00"),
    ("0 30 * * 3 SUN#2", "2016-03-13 01:59 -05:00", False, "2016-03-13 03:00 -04:00"),
]


CRONOS_EASTERN_FALL_BACK: list[CronosCase] = [
    # 2016-11-06 is date when the clock jumps backward from 2:00 am -04:00 DST to 1:00 am
    # -05:00 ST in Eastern Time Zone.
    # _______1:00 DST____1:59 DST -> 1:00 ST____2:00 ST_______
    # Run at 2:00 ST because 2:00 DST is invalid.
    ("0 */30 */2 * * *", "2016-11-06 01:30 -04:00", True, "2016-11-06 02:00 -05:00"),
    ("0 0 */2 * * *", "2016-11-06 00:30 -04:00", True, "2016-11-06 02:00 -05:00"),
    ("0 0 0/2 * * *", "2016-11-06 00:30 -04:00", True, "2016-11-06 02:00 -05:00"),
    ("0 0 2-3 * * *", "2016-11-06 00:30 -04:00", True, "2016-11-06 02:00 -05:00"),
    # Run twice due to intervals.
    ("0 */30 * * * *", "2016-11-06 01:00 -04:00", True, "2016-11-06 01:00 -04:00"),
    ("0 */30 * * * *", "2016-11-06 01:30 -04:00", True, "2016-11-06 01:30 -04:00"),
    ("0 */30 * * * *", "2016-11-06 01:59 -04:00", True, "2016-11-06 01:00 -05:00"),
    ("0 */30 * * * *", "2016-11-06 01:15 -05:00", True, "2016-11-06 01:30 -05:00"),
    ("0 */30 * * * *", "2016-11-06 01:30 -05:00", True, "2016-11-06 01:30 -05:00"),
    ("0 */30 * * * *", "2016-11-06 01:45 -05:00", True, "2016-11-06 02:00 -05:00"),
    ("0 */30 * * * *", "2016-11-06 01:00 -04:00", False, "2016-11-06 01:30 -04:00"),
    ("0 */30 * * * *", "2016-11-06 01:30 -04:00", False, "2016-11-06 01:00 -05:00"),
    ("0 */30 * * * *", "2016-11-06 01:00 -05:00", False, "2016-11-06 01:30 -05:00"),
    ("0 */30 * * * *", "2016-11-06 01:30 -05:00", False, "2016-11-06 02:00 -05:00"),
    ("0 30 * * * *", "2016-11-06 01:30 -04:00", True, "2016-11-06 01:30 -04:00"),
    ("0 30 * * * *", "2016-11-06 01:59 -04:00", True, "2016-11-06 01:30 -05:00"),
    ("0 30 * * * *", "2016-11-06 01:30 -04:00", False, "2016-11-06 01:30 -05:00"),
    ("0 30 * * * *", "2016-11-06 01:30 -05:00", False, "2016-11-06 02:30 -05:00"),
    ("0 30 */1 * * *", "2016-11-06 01:30 -04:00", True, "2016-11-06 01:30 -04:00"),
    ("0 30 */1 * * *", "2016-11-06 01:59 -04:00", True, "2016-11-06 01:30 -05:00"),
    ("0 30 0/1 * * *", "2016-11-06 01:30 -04:00", True, "2016-11-06 01:30 -04:00"),
    ("0 30 0/1 * * *", "2016-11-06 01:59 -04:00", True, "2016-11-06 01:30 -05:00"),
    ("0 30 */1 * * *", "2016-11-06 01:30 -04:00", False, "2016-11-06 01:30 -05:00"),
    ("0 30 0/1 * * *", "2016-11-06 01:30 -04:00", False, "2016-11-06 01:30 -05:00"),
    ("0 30 1-9 * * *", "2016-11-06 01:30 -04:00", True, "2016-11-06 01:30 -04:00"),
    ("0 30 1-9 * * *", "2016-11-06 01:59 -04:00", True, "2016-11-06 01:30 -05:00"),
    ("0 30 1-9 * * *", "2016-11-06 01:30 -04:00", False, "2016-11-06 01:30 -05:00"),
    ("0 */30 1 * * *", "2016-11-06 01:00 -04:00", True, "2016-11-06 01:00 -04:00"),
    ("0 */30 1 * * *", "2016-11-06 01:20 -04:00", True, "2016-11-06 01:30 -04:00"),
    ("0 */30 1 * * *", "2016-11-06 01:59 -04:00", True, "2016-11-06 01:00 -05:00"),
    ("0 */30 1 * * *", "2016-11-06 01:20 -05:00", True, "2016-11-06 01:30 -05:00"),
    ("0 */30 1 * * *", "2016-11-06 01:00 -04:00", False, "2016-11-06 01:30 -04:00"),
    ("0 */30 1 * * *", "2016-11-06 01:30 -04:00", False, "2016-11-06 01:00 -05:00"),
    ("0 0/30 1 * * *", "2016-11-06 01:00 -04:00", True, "2016-11-06 01:00 -04:00"),
    ("0 0/30 1 * * *", "2016-11-06 01:20 -04:00", True, "2016-11-06 01:30 -04:00"),
    ("0 0/30 1 * * *", "2016-11-06 01:59 -04:00", True, "2016-11-06 01:00 -05:00"),
    ("0 0/30 1 * * *", "2016-11-06 01:20 -05:00", True, "2016-11-06 01:30 -05:00"),
    ("0 0/30 1 * * *", "2016-11-06 01:00 -04:00", False, "2016-11-06 01:30 -04:00"),
    ("0 0/30 1 * * *", "2016-11-06 01:30 -04:00", False, "2016-11-06 01:00 -05:00"),
    ("0 0/30 1 * * *", "2016-11-06 01:00 -05:00", False, "2016-11-06 01:30 -05:00"),
    ("0 0-30 1 * * *", "2016-11-06 01:00 -04:00", True, "2016-11-06 01:00 -04:00"),
    ("0 0-30 1 * * *", "2016-11-06 01:20 -04:00", True, "2016-11-06 01:20 -04:00"),
    ("0 0-30 1 * * *", "2016-11-06 01:59 -04:00", True, "2016-11-06 01:00 -05:00"),
    ("0 0-30 1 * * *", "2016-11-06 01:20 -05:00", True, "2016-11-06 01:20 -05:00"),
    ("0 0-30 1 * * *", "2016-11-06 01:00 -04:00", False, "2016-11-06 01:01 -04:00"),
    ("0 0-30 1 * * *", "2016-11-06 01:20 -04:00", False, "2016-11-06 01:21 -04:00"),
    ("0 0-30 1 * * *", "2016-11-06 01:59 -04:00", False, "2016-11-06 01:00 -05:00"),
    ("0 0-30 1 * * *", "2016-11-06 01:20 -05:00", False, "2016-11-06 01:21 -05:00"),
    ("*/30 0 1 * * *", "2016-11-06 00:30:00 -04:00", True, "2016-11-06 01:00:00 -04:00"),
    ("*/30 0 1 * * *", "2016-11-06 01:00:01 -04:00", True, "2016-11-06 01:00:30 -04:00"),
    ("*/30 0 1 * * *", "2016-11-06 01:00:31 -04:00", True, "2016-11-06 01:00:00 -05:00"),
    ("*/30 0 1 * * *", "2016-11-06 01:00:01 -05:00", True, "2016-11-06 01:00:30 -05:00"),
    ("*/30 0 1 * * *", "2016-11-06 01:00:31 -05:00", True, "2016-11-07 01:00:00 -05:00"),
    ("*/30 0 1 * * *", "2016-11-06 00:30:00 -04:00", False, "2016-11-06 01:00:00 -04:00"),
    ("*/30 0 1 * * *", "2016-11-06 01:00:00 -04:00", False, "2016-11-06 01:00:30 -04:00"),
    ("*/30 0 1 * * *", "2016-11-06 01:00:30 -04:00", False, "2016-11-06 01:00:00 -05:00"),
    ("*/30 0 1 * * *", "2016-11-06 01:00:00 -05:00", False, "2016-11-06 01:00:30 -05:00"),
    ("*/30 0 1 * * *", "2016-11-06 01:00:30 -05:00", False, "2016-11-07 01:00:00 -05:00"),
    ("0/30 0 1 * * *", "2016-11-06 00:30:00 -04:00", True, "2016-11-06 01:00:00 -04:00"),
    ("0/30 0 1 * * *", "2016-11-06 01:00:01 -04:00", True, "2016-11-06 01:00:30 -04:00"),
    ("0/30 0 1 * * *", "2016-11-06 01:00:31 -04:00", True, "2016-11-06 01:00:00 -05:00"),
    ("0/30 0 1 * * *", "2016-11-06 01:00:01 -05:00", True, "2016-11-06 01:00:30 -05:00"),
    ("0/30 0 1 * * *", "2016-11-06 01:00:31 -05:00", True, "2016-11-07 01:00:00 -05:00"),
    ("0/30 0 1 * * *", "2016-11-06 00:30:00 -04:00", False, "2016-11-06 01:00:00 -04:00"),
    ("0/30 0 1 * * *", "2016-11-06 01:00:00 -04:00", False, "2016-11-06 01:00:30 -04:00"),
    ("0/30 0 1 * * *", "2016-11-06 01:00:30 -04:00", False, "2016-11-06 01:00:00 -05:00"),
    ("0/30 0 1 * * *", "2016-11-06 01:00:00 -05:00", False, "2016-11-06 01:00:30 -05:00"),
    ("0/30 0 1 * * *", "2016-11-06 01:00:30 -05:00", False, "2016-11-07 01:00:00 -05:00"),
    ("0-30 0 1 * * *", "2016-11-06 00:30:00 -04:00", True, "2016-11-06 01:00:00 -04:00"),
    ("0-30 0 1 * * *", "2016-11-06 01:00:01 -04:00", True, "2016-11-06 01:00:01 -04:00"),
    ("0-30 0 1 * * *", "2016-11-06 01:00:31 -04:00", True, "2016-11-06 01:00:00 -05:00"),
    ("0-30 0 1 * * *", "2016-11-06 01:00:01 -05:00", True, "2016-11-06 01:00:01 -05:00"),
    ("0-30 0 1 * * *", "2016-11-06 01:00:31 -05:00", True, "2016-11-07 01:00:00 -05:00"),
    ("0-30 0 1 * * *", "2016-11-06 00:30:00 -04:00", False, "2016-11-06 01:00:00 -04:00"),
    ("0-30 0 1 * * *", "2016-11-06 01:00:00 -04:00", False, "2016-11-06 01:00:01 -04:00"),
    ("0-30 0 1 * * *", "2016-11-06 01:00:30 -04:00", False, "2016-11-06 01:00:00 -05:00"),
    ("0-30 0 1 * * *", "2016-11-06 01:00:00 -05:00", False, "2016-11-06 01:00:01 -05:00"),
    ("0-30 0 1 * * *", "2016-11-06 01:00:30 -05:00", False, "2016-11-07 01:00:00 -05:00"),
    # Duplicates skipped due to certain time.
    ("0 0,30 1 * * *", "2016-11-06 01:00 -04:00", True, "2016-11-06 01:00 -04:00"),
    ("0 0,30 1 * * *", "2016-11-06 01:20 -04:00", True, "2016-11-06 01:30 -04:00"),
    ("0 0,30 1 * * *", "2016-11-06 01:00 -05:00", True, "2016-11-07 01:00 -05:00"),
    ("0 0,30 1 * * *", "2016-11-06 01:00 -04:00", False, "2016-11-06 01:30 -04:00"),
    ("0 0,30 1 * * *", "2016-11-06 01:30 -04:00", False, "2016-11-07 01:00 -05:00"),
    ("0 0,30 1 * 1/2 *", "2016-11-06 01:00 -04:00", True, "2016-11-06 01:00 -04:00"),
    ("0 0,30 1 * 1/2 *", "2016-11-06 01:20 -04:00", True, "2016-11-06 01:30 -04:00"),
    ("0 0,30 1 * 1/2 *", "2016-11-06 01:00 -05:00", True, "2016-11-07 01:00 -05:00"),
    ("0 0,30 1 * 1/2 *", "2016-11-06 01:00 -04:00", False, "2016-11-06 01:30 -04:00"),
    ("0 0,30 1 * 1/2 *", "2016-11-06 01:30 -04:00", False, "2016-11-07 01:00 -05:00"),
    ("0 0,30 1 6/1 1-12 0/1", "2016-11-06 01:00 -04:00", True, "2016-11-06 01:00 -04:00"),
    ("0 0,30 1 6/1 1-12 0/1", "2016-11-06 01:20 -04:00", True, "2016-11-06 01:30 -04:00"),
    ("0 0,30 1 6/1 1-12 0/1", "2016-11-06 01:00 -05:00", True, "2016-11-07 01:00 -05:00"),
    ("0 0,30 1 6/1 1-12 0/1", "2016-11-06 01:00 -04:00", False, "2016-11-06 01:30 -04:00"),
    ("0 0,30 1 6/1 1-12 0/1", "2016-11-06 01:30 -04:00", False, "2016-11-07 01:00 -05:00"),
    ("0 0 1 * * *", "2016-11-06 01:00 -04:00", True, "2016-11-06 01:00 -04:00"),
    ("0 0 1 * * *", "2016-11-06 01:00 -05:00", True, "2016-11-07 01:00 -05:00"),
    ("0 0 1 * * *", "2016-11-06 01:00 -04:00", False, "2016-11-07 01:00 -05:00"),
    ("0 0 1 6 11 *", "2015-11-07 01:00 -05:00", True, "2016-11-06 01:00 -04:00"),
    ("0 0 1 6 11 *", "2015-11-07 01:00 -05:00", False, "2016-11-06 01:00 -04:00"),
    ("0 0 1 * 11 SUN#1", "2015-11-01 01:00 -05:00", True, "2016-11-06 01:00 -04:00"),
    ("0 0 1 * 11 SUN#1", "2015-11-01 01:00 -05:00", False, "2016-11-06 01:00 -04:00"),
    # Run at 02:00 ST because 02:00 doesn't exist in DST.
    ("0 0 2 * * *", "2016-11-06 01:45 -04:00", False, "2016-11-06 02:00 -05:00"),
    ("0 0 2 * * *", "2016-11-06 01:45 -05:00", False, "2016-11-06 02:00 -05:00"),
]


CRONOS_LORD_HOWE_SPRING_FORWARD: list[CronosCase] = [
    # 2017-10-01 is date when the clock jumps forward from 1:59 am +10:30 standard time (ST)
    # to 2:30 am +11:00 DST on Lord Howe.
    # ________1:59 ST///invalid///2:30 DST________
    # Run missed.
    ("0 */30 * * * *", "2017-10-01 01:45 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 */30 */2 * * *", "2017-10-01 01:59 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 1-58 */2 * * *", "2017-10-01 01:59 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 0,30 0-23/2 * * *", "2017-10-01 01:59 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 */30 2 * * *", "2017-10-01 01:59 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 0,30 2 * * *", "2017-10-01 01:59 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 */30 2 01 10 *", "2017-10-01 01:59 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 0,30 02 01 10 *", "2017-10-01 01:45 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 30 2 * * *", "2017-10-01 01:59 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 0,30 */2 * * *", "2017-10-01 01:59 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 30 0-23/2 * * *", "2017-10-01 01:59 +10:30", True, "2017-10-01 02:30 +11:00"),
    ("0 0,30,59 * * * *", "2017-10-01 01:59 +10:30", True, "2017-10-01 01:59 +10:30"),
    ("0 0,30,59 * * * *", "2017-10-01 02:30 +11:00", True, "2017-10-01 02:30 +11:00"),
    ("0 30 * * 10 SUN#1", "2017-10-01 01:59 +10:30", True, "2017-10-01 02:30 +11:00"),
]


CRONOS_LORD_HOWE_FALL_BACK: list[CronosCase] = [
    # 2017-04-02 is date when the clock jumps backward from 2:00 am -+11:00 DST to 1:30 am
    # +10:30 ST on Lord Howe.
    # _______1:30 DST____1:59 DST -> 1:30 ST____2:00 ST_______
    # Run at 2:00 ST because 2:00 DST is invalid.
    ("0 */30 */2 * * *", "2017-04-02 01:30 +11:00", True, "2017-04-02 02:00 +10:30"),
    ("0 0 */2 * * *", "2017-04-02 00:30 +11:00", True, "2017-04-02 02:00 +10:30"),
    ("0 0 0/2 * * *", "2017-04-02 00:30 +11:00", True, "2017-04-02 02:00 +10:30"),
    ("0 0 2-3 * * *", "2017-04-02 00:30 +11:00", True, "2017-04-02 02:00 +10:30"),
    # Run twice due to intervals.
    ("0 */30 * * * *", "2017-04-02 01:30 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 */30 * * * *", "2017-04-02 01:59 +11:00", True, "2017-04-02 01:30 +10:30"),
    ("0 */30 * * * *", "2017-04-02 01:15 +10:30", True, "2017-04-02 01:30 +10:30"),
    ("0 30 * * * *", "2017-04-02 01:30 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 30 * * * *", "2017-04-02 01:59 +11:00", True, "2017-04-02 01:30 +10:30"),
    ("0 30 */1 * * *", "2017-04-02 01:30 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 30 */1 * * *", "2017-04-02 01:59 +11:00", True, "2017-04-02 01:30 +10:30"),
    ("0 30 0/1 * * *", "2017-04-02 01:30 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 30 0/1 * * *", "2017-04-02 01:59 +11:00", True, "2017-04-02 01:30 +10:30"),
    ("0 30 1-9 * * *", "2017-04-02 01:30 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 30 1-9 * * *", "2017-04-02 01:59 +11:00", True, "2017-04-02 01:30 +10:30"),
    ("0 */30 1 * * *", "2017-04-02 01:00 +11:00", True, "2017-04-02 01:00 +11:00"),
    ("0 */30 1 * * *", "2017-04-02 01:20 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 */30 1 * * *", "2017-04-02 01:59 +11:00", True, "2017-04-02 01:30 +10:30"),
    ("0 0/30 1 * * *", "2017-04-02 01:00 +11:00", True, "2017-04-02 01:00 +11:00"),
    ("0 0/30 1 * * *", "2017-04-02 01:20 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 0/30 1 * * *", "2017-04-02 01:59 +11:00", True, "2017-04-02 01:30 +10:30"),
    ("0 0-30 1 * * *", "2017-04-02 01:00 +11:00", True, "2017-04-02 01:00 +11:00"),
    ("0 0-30 1 * * *", "2017-04-02 01:20 +11:00", True, "2017-04-02 01:20 +11:00"),
    ("0 0-30 1 * * *", "2017-04-02 01:59 +11:00", True, "2017-04-02 01:30 +10:30"),
    ("*/30 30 1 * * *", "2017-04-02 00:30:00 +11:00", True, "2017-04-02 01:30:00 +11:00"),
    ("*/30 30 1 * * *", "2017-04-02 01:30:01 +11:00", True, "2017-04-02 01:30:30 +11:00"),
    ("*/30 30 1 * * *", "2017-04-02 01:30:31 +11:00", True, "2017-04-02 01:30:00 +10:30"),
    ("*/30 30 1 * * *", "2017-04-02 01:30:01 +10:30", True, "2017-04-02 01:30:30 +10:30"),
    ("*/30 30 1 * * *", "2017-04-02 01:30:31 +10:30", True, "2017-04-03 01:30:00 +10:30"),
    ("0/30 30 1 * * *", "2017-04-02 00:30:00 +11:00", True, "2017-04-02 01:30:00 +11:00"),
    ("0/30 30 1 * * *", "2017-04-02 01:30:01 +11:00", True, "2017-04-02 01:30:30 +11:00"),
    ("0/30 30 1 * * *", "2017-04-02 01:30:31 +11:00", True, "2017-04-02 01:30:00 +10:30"),
    ("0/30 30 1 * * *", "2017-04-02 01:30:01 +10:30", True, "2017-04-02 01:30:30 +10:30"),
    ("0/30 30 1 * * *", "2017-04-02 01:30:31 +10:30", True, "2017-04-03 01:30:00 +10:30"),
    ("0-30 30 1 * * *", "2017-04-02 00:30:00 +11:00", True, "2017-04-02 01:30:00 +11:00"),
    ("0-30 30 1 * * *", "2017-04-02 01:30:01 +11:00", True, "2017-04-02 01:30:01 +11:00"),
    ("0-30 30 1 * * *", "2017-04-02 01:30:31 +11:00", True, "2017-04-02 01:30:00 +10:30"),
    ("0-30 30 1 * * *", "2017-04-02 01:30:01 +10:30", True, "2017-04-02 01:30:01 +10:30"),
    ("0-30 30 1 * * *", "2017-04-02 01:30:31 +10:30", True, "2017-04-03 01:30:00 +10:30"),
    # Duplicates skipped due to certain time.
    ("0 0,30 1 * * *", "2017-04-02 01:00 +11:00", True, "2017-04-02 01:00 +11:00"),
    ("0 0,30 1 * * *", "2017-04-02 01:20 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 0,30 1 * * *", "2017-04-02 01:30 +10:30", True, "2017-04-03 01:00 +10:30"),
    ("0 0,30 1 * 2/2 *", "2017-04-02 01:00 +11:00", True, "2017-04-02 01:00 +11:00"),
    ("0 0,30 1 * 2/2 *", "2017-04-02 01:20 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 0,30 1 * 2/2 *", "2017-04-02 01:30 +10:30", True, "2017-04-03 01:00 +10:30"),
    ("0 0,30 1 2/1 1-12 0/1", "2017-04-02 01:00 +11:00", True, "2017-04-02 01:00 +11:00"),
    ("0 0,30 1 2/1 1-12 0/1", "2017-04-02 01:20 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 0,30 1 2/1 1-12 0/1", "2017-04-02 01:30 +10:30", True, "2017-04-03 01:00 +10:30"),
    ("0 30 1 * * *", "2017-04-02 01:30 +11:00", True, "2017-04-02 01:30 +11:00"),
    ("0 30 1 * * *", "2017-04-02 01:30 +10:30", True, "2017-04-03 01:30 +10:30"),
]


@pytest.mark.parametrize(
    ("zone", "expression", "start", "inclusive", "expected"),
    [("America/New_York", *case) for case in CRONOS_EASTERN_SPRING_FORWARD]
    + [("America/New_York", *case) for case in CRONOS_EASTERN_FALL_BACK]
    + [("Australia/Lord_Howe", *case) for case in CRONOS_LORD_HOWE_SPRING_FORWARD]
    + [("Australia/Lord_Howe", *case) for case in CRONOS_LORD_HOWE_FALL_BACK],
)
def test_cronos_dst_cases(
    zone: str, expression: str, start: str, inclusive: bool, expected: str
) -> None:
    cron = CronExpression(expression, zone)
    found = cronos_next(cron, cronos_time(start), inclusive)
    assert found == cronos_time(expected)


@pytest.mark.parametrize(
    ("zone", "expression", "start", "inclusive", "expected"),
    [
        # Cronos: GetNextOccurrence_HandleDST_WhenTheClockJumpsForwardAndFromIsAroundDST.
        # 2017-03-31 00:00 is time in Jordan Time Zone when the clock jumps forward
        # from 2017-03-30 23:59:59.9999999 +02:00 standard time (ST) to 01:00:00.0000000 am
        # +03:00 DST. (Python's datetimes stop at microseconds: .9999999 is .999999.)
        ("Asia/Amman", "30 0 L * *", "2017-03-30 23:59:59.999999 +02:00", False,
         "2017-03-31 01:00:00 +03:00"),
        ("Asia/Amman", "30 0 L * *", "2017-03-30 23:59:59.999900 +02:00", False,
         "2017-03-31 01:00:00 +03:00"),
        ("Asia/Amman", "30 0 L * *", "2017-03-30 23:59:59.999000 +02:00", False,
         "2017-03-31 01:00:00 +03:00"),
        ("Asia/Amman", "30 0 L * *", "2017-03-30 23:59:59.990000 +02:00", False,
         "2017-03-31 01:00:00 +03:00"),
        ("Asia/Amman", "30 0 L * *", "2017-03-30 23:59:59.900000 +02:00", False,
         "2017-03-31 01:00:00 +03:00"),
        ("Asia/Amman", "30 0 L * *", "2017-03-30 23:59:59.000000 +02:00", False,
         "2017-03-31 01:00:00 +03:00"),
        ("Asia/Amman", "30 0 L * *", "2017-03-31 01:00:00.000001 +02:00", True,
         "2017-04-30 00:30:00 +03:00"),
        # Cronos: GetNextOccurrence_HandleDST_WhenTheClockJumpsBackwardAndFromIsAroundDST.
        # 2017-05-14 00:00 is time in Chile Time Zone when the clock jumps backward
        # from 2017-05-13 23:59:59.9999999 -03:00 standard time (ST) to 2017-05-13
        # 23:00:00.0000000 am -04:00 DST.
        ("America/Santiago", "30 23 * * *", "2017-05-13 23:59:59.999999 -03:00", False,
         "2017-05-14 23:30:00 -04:00"),
        ("America/Santiago", "30 23 * * *", "2017-05-13 23:59:59.999900 -03:00", False,
         "2017-05-14 23:30:00 -04:00"),
        ("America/Santiago", "30 23 * * *", "2017-05-13 23:59:59.999000 -03:00", False,
         "2017-05-14 23:30:00 -04:00"),
        ("America/Santiago", "30 23 * * *", "2017-05-13 23:59:59.990000 -03:00", False,
         "2017-05-14 23:30:00 -04:00"),
        ("America/Santiago", "30 23 * * *", "2017-05-13 23:59:59.900000 -03:00", False,
         "2017-05-14 23:30:00 -04:00"),
        ("America/Santiago", "30 23 * * *", "2017-05-13 23:59:59.000000 -03:00", False,
         "2017-05-14 23:30:00 -04:00"),
        ("America/Santiago", "30 23 * * *", "2017-05-14 00:00:00.000001 -04:00", True,
         "2017-05-14 23:30:00 -04:00"),
        # Cronos: GetNextOccurrence_HandleDifficultDSTCases_WhenTheClockJumpsForwardOnFriday
        # and ...BackwardOnFriday (the 'LW' rows are left out: hfcelery rejects 'LW').
        ("Asia/Amman", "30 0 L * *", "2017-03-30 23:59 +02:00", True, "2017-03-31 01:00 +03:00"),
        # Cronos's row is inclusive; with ``from`` at the very run it moved to 01:00, Cronos
        # skips that run, which an exclusive search does too.
        ("Asia/Amman", "30 0 L * *", "2017-03-31 01:00 +03:00", False, "2017-04-30 00:30 +03:00"),
        ("Asia/Amman", "30 0 L * *", "2014-10-31 00:30 +02:00", True, "2014-11-30 00:30 +02:00"),
        ("Asia/Amman", "30 0 L * *", "2014-10-31 00:30 +03:00", True, "2014-10-31 00:30 +03:00"),
        ("Asia/Amman", "30 0 29 * *", "2019-03-28 23:59 +02:00", True, "2019-03-29 01:00 +03:00"),
        # Cronos: GetNextOccurrence_HandlesBorderConditions_WhenDSTEnds (from is 02:00 -05:00
        # less one tick).
        ("America/New_York", "59 59 01 * * *", "2016-11-06 01:59:59.999999 -05:00", True,
         "2016-11-07 01:59:59 -05:00"),
    ],
)  # fmt: skip
def test_cronos_dst_cases_around_the_change(
    zone: str, expression: str, start: str, inclusive: bool, expected: str
) -> None:
    cron = CronExpression(expression, zone)
    assert cronos_next(cron, cronos_time(start), inclusive) == cronos_time(expected)


# Cronos's rule on whole nights, written out by hand. Europe/London goes back from 02:00 BST to
# 01:00 GMT on 25 October 2026 (01:00-01:59 twice) and forward from 01:00 GMT to 02:00 BST on 29
# March 2026; America/New_York goes back from 02:00 EDT to 01:00 EST on 1 November 2026.
BST, GMT = "+01:00", "+00:00"
EDT, EST = "-04:00", "-05:00"


@pytest.mark.parametrize(
    ("zone", "expression", "start", "end", "expected"),
    [
        # A step in the minutes makes an interval: both 01:00-01:59 hours, even with hour 1.
        ("Europe/London", "*/15 1 * * *", "2026-10-25 00:59 +01:00", "2026-10-25 03:00 +00:00",
         [f"2026-10-25 01:{m} {o}" for o in (BST, GMT) for m in ("00", "15", "30", "45")]),
        ("Europe/London", "0/20 * * * *", "2026-10-25 00:59 +01:00", "2026-10-25 02:00 +00:00",
         [f"2026-10-25 01:{m} {o}" for o in (BST, GMT) for m in ("00", "20", "40")]
         + ["2026-10-25 02:00 +00:00"]),
        ("Europe/London", "0-2 1 * * *", "2026-10-25 00:59 +01:00", "2026-10-26 00:00 +00:00",
         [f"2026-10-25 01:0{m} {o}" for o in (BST, GMT) for m in (0, 1, 2)]),
        # A step in the seconds too.
        ("Europe/London", "*/20 30 1 * * *", "2026-10-25 01:29 +01:00", "2026-10-26 00:00 +00:00",
         [f"2026-10-25 01:30:{s} {o}" for o in (BST, GMT) for s in ("00", "20", "40")]),
        # Fixed values and lists in the second, minute and hour: the first 01:xx only.
        ("Europe/London", "30 1 * * *", "2026-10-24 12:00 +01:00", "2026-10-26 12:00 +00:00",
         ["2026-10-25 01:30 +01:00", "2026-10-26 01:30 +00:00"]),
        ("Europe/London", "0,30 1 * * *", "2026-10-25 00:59 +01:00", "2026-10-26 00:00 +00:00",
         ["2026-10-25 01:00 +01:00", "2026-10-25 01:30 +01:00"]),
        ("Europe/London", "0,30 30 1 * * *", "2026-10-25 00:59 +01:00", "2026-10-26 00:00 +00:00",
         ["2026-10-25 01:30:00 +01:00", "2026-10-25 01:30:30 +01:00"]),
        # Ranges and steps in the day fields do not count.
        ("Europe/London", "30 1 1-31 * 0-6", "2026-10-25 00:59 +01:00", "2026-10-26 00:00 +00:00",
         ["2026-10-25 01:30 +01:00"]),
        # A wildcard hour with a fixed minute is an interval.
        ("America/New_York", "30 * * * *", "2026-11-01 00:59 -04:00", "2026-11-01 02:59 -05:00",
         [f"2026-11-01 01:30 {o}" for o in (EDT, EST)] + ["2026-11-01 02:30 -05:00"]),
        ("America/New_York", "*/30 1 * * *", "2026-11-01 00:59 -04:00", "2026-11-02 00:00 -05:00",
         [f"2026-11-01 01:{m} {o}" for o in (EDT, EST) for m in ("00", "30")]),
        ("America/New_York", "@hourly", "2026-11-01 00:59 -04:00", "2026-11-01 02:00 -05:00",
         [f"2026-11-01 01:00 {o}" for o in (EDT, EST)] + ["2026-11-01 02:00 -05:00"]),
        # Clocks forward: skipped runs run once, when the clocks jump (02:00 BST).
        ("Europe/London", "30 * * * *", "2026-03-29 00:00 +00:00", "2026-03-29 03:00 +01:00",
         ["2026-03-29 00:30 +00:00", "2026-03-29 02:00 +01:00", "2026-03-29 02:30 +01:00"]),
        ("Europe/London", "*/15 1 * * *", "2026-03-29 00:00 +00:00", "2026-03-30 00:00 +01:00",
         ["2026-03-29 02:00 +01:00"]),
        ("Europe/London", "15,45 * * * *", "2026-03-29 00:30 +00:00", "2026-03-29 02:30 +01:00",
         ["2026-03-29 00:45 +00:00", "2026-03-29 02:00 +01:00", "2026-03-29 02:15 +01:00"]),
    ],
)  # fmt: skip
def test_repeated_and_skipped_hours_follow_cronos(
    zone: str, expression: str, start: str, end: str, expected: list[str]
) -> None:
    cron = CronExpression(expression, zone)
    runs = cron.between(cronos_time(start), cronos_time(end), 50)
    assert runs == [cronos_time(run) for run in expected]


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


@pytest.mark.parametrize(
    ("macro", "after", "expected"),
    [
        ("@every_second", utc(2026, 1, 1, 5, 0, 7),
         [utc(2026, 1, 1, 5, 0, 8), utc(2026, 1, 1, 5, 0, 9)]),
        ("@every_minute", utc(2026, 1, 1, 5, 0, 7), [utc(2026, 1, 1, 5, 1), utc(2026, 1, 1, 5, 2)]),
        ("@EVERY_MINUTE", utc(2026, 1, 1, 5), [utc(2026, 1, 1, 5, 1), utc(2026, 1, 1, 5, 2)]),
        ("@hourly", utc(2026, 1, 1, 5, 30), [utc(2026, 1, 1, 6), utc(2026, 1, 1, 7)]),
        ("@midnight", utc(2026, 1, 1, 5), [utc(2026, 1, 2), utc(2026, 1, 3)]),
        ("@weekly", utc(2026, 1, 1), [utc(2026, 1, 4), utc(2026, 1, 11)]),  # Sundays
        ("@monthly", utc(2026, 1, 1), [utc(2026, 2, 1), utc(2026, 3, 1)]),
        ("@annually", utc(2026, 1, 1), [utc(2027, 1, 1), utc(2028, 1, 1)]),
    ],
)  # fmt: skip
def test_cronos_macros(macro: str, after: datetime, expected: list[datetime]) -> None:
    cron = CronExpression(macro)
    occurrences = cron.occurrences(after)
    assert [next(occurrences), next(occurrences)] == expected
    assert cron.expression == macro  # shown as written


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # Friday the 13th: Cronos matches both day fields (Vixie cron: either)
        ("0 0 13 * 5", [utc(2026, 2, 13), utc(2026, 3, 13), utc(2026, 11, 13)]),
        ("0 0 13 * FRI", [utc(2026, 2, 13), utc(2026, 3, 13), utc(2026, 11, 13)]),
        # a Monday that is the first of its month
        ("0 0 1 * MON", [utc(2026, 6, 1), utc(2027, 2, 1), utc(2027, 3, 1)]),
        # the first Monday of the month, as a range of days and a weekday
        ("30 9 1-7 * 1", [utc(2026, 1, 5, 9, 30), utc(2026, 2, 2, 9, 30), utc(2026, 3, 2, 9, 30)]),
        # one field restricted: every matching day
        ("0 0 * * 5", [utc(2026, 1, 2), utc(2026, 1, 9), utc(2026, 1, 16)]),
        ("0 0 ? * 5", [utc(2026, 1, 2), utc(2026, 1, 9), utc(2026, 1, 16)]),
        ("0 0 13 * ?", [utc(2026, 1, 13), utc(2026, 2, 13), utc(2026, 3, 13)]),
        ("0 0 13 * *", [utc(2026, 1, 13), utc(2026, 2, 13), utc(2026, 3, 13)]),
        # the last day of the month when it is a Sunday
        ("0 0 L * 0", [utc(2026, 5, 31), utc(2027, 1, 31), utc(2027, 2, 28)]),
    ],
)  # fmt: skip
def test_day_of_month_and_day_of_week_both_match_as_in_cronos(
    expression: str, expected: list[datetime]
) -> None:
    occurrences = CronExpression(expression).occurrences(utc(2026, 1, 1))
    assert [next(occurrences) for _ in expected] == expected


def test_friday_the_13th_in_a_zone() -> None:
    cron = CronExpression("0 9 13 * 5", "Europe/Berlin")
    assert cron.next_after(utc(2026, 11, 27)) == utc(2027, 8, 13, 7)  # CEST


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
