"""Cron expressions: Hangfire's ``Cron`` helpers, validation, and next runs in a time zone.

croniter parses and iterates. Five fields are minute precision; six fields put seconds first
(``"*/10 * * * * *"`` is every ten seconds); ``@daily``-style macros are accepted.

Daylight saving time, for a job in a zone that has it: on the night the clocks go forward, an
occurrence in the skipped hour runs when the clocks jump (a daily 02:30 job runs at 03:00); on
the night they go back, an expression with fixed hours runs once (at the first 02:30), while
one that runs every hour runs in both of the repeated hours.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from hfcelery.errors import InvalidCronError, InvalidTimeZoneError
from hfcelery.validation import MAX_CRON_LENGTH

#: The most missed occurrences a Strict recurring job catches up in one pass.
MAX_CATCH_UP = 1000


class MisfireHandling(StrEnum):
    """What happens to the occurrences missed while no beat was running (Hangfire's modes)."""

    #: One job for any number of missed occurrences.
    RELAXED = "relaxed"
    #: One job per missed occurrence.
    STRICT = "strict"
    #: No job for missed occurrences.
    IGNORABLE = "ignorable"


class Cron:
    """Hangfire's cron helpers, with Hangfire's exact output. Days of the week count from
    Sunday = 0."""

    @staticmethod
    def minutely() -> str:
        return "* * * * *"

    @staticmethod
    def hourly(minute: int = 0) -> str:
        return f"{minute} * * * *"

    @staticmethod
    def daily(hour: int = 0, minute: int = 0) -> str:
        return f"{minute} {hour} * * *"

    @staticmethod
    def weekly(day_of_week: int = 1, hour: int = 0, minute: int = 0) -> str:
        return f"{minute} {hour} * * {day_of_week}"

    @staticmethod
    def monthly(day: int = 1, hour: int = 0, minute: int = 0) -> str:
        return f"{minute} {hour} {day} * *"

    @staticmethod
    def yearly(month: int = 1, day: int = 1, hour: int = 0, minute: int = 0) -> str:
        return f"{minute} {hour} {day} {month} *"

    @staticmethod
    def never() -> str:
        """February 31st: an expression that never fires (for jobs triggered by hand)."""
        return "0 0 31 2 *"

    @staticmethod
    def minute_interval(interval: int) -> str:
        return f"*/{interval} * * * *"

    @staticmethod
    def hour_interval(interval: int) -> str:
        return f"0 */{interval} * * *"

    @staticmethod
    def day_interval(interval: int) -> str:
        return f"0 0 */{interval} * *"

    @staticmethod
    def month_interval(interval: int) -> str:
        return f"0 0 1 */{interval} *"


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises InvalidTimeZoneError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise InvalidTimeZoneError(f"unknown time zone {name!r}") from exc


@dataclass(frozen=True)
class CronExpression:
    """A validated cron expression in a time zone."""

    expression: str
    zone: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or not self.expression.strip():
            raise InvalidCronError(f"invalid cron expression {self.expression!r:.120}")
        if len(self.expression) > MAX_CRON_LENGTH:
            raise InvalidCronError(
                f"cron expression {self.expression[:40]!r}... is longer than {MAX_CRON_LENGTH} "
                "characters"
            )
        if not self.expression.isprintable():
            raise InvalidCronError(
                f"cron expression {self.expression!r} contains a control character"
            )
        fields = self.expression.split()
        if not self.expression.startswith("@") and len(fields) not in (5, 6):
            raise InvalidCronError(
                f"cron expression {self.expression!r} has {len(fields)} fields: "
                "use 5 (minute precision) or 6 (seconds first)"
            )
        unsupported = _unsupported_cronos_form(self.expression)
        if unsupported is not None:
            raise InvalidCronError(
                f"cron expression {self.expression!r} uses {unsupported}, which Hangfire's "
                "Cronos accepts but hfcelery does not support yet"
            )
        if not croniter.is_valid(self._croniter_form, second_at_beginning=self.has_seconds):
            raise InvalidCronError(f"invalid cron expression {self.expression!r}")
        time_zone(self.zone)

    @cached_property
    def _croniter_form(self) -> str:
        """The expression as croniter reads it: Cronos's ``5L`` (the last Friday of the month)
        is croniter's ``L5``; ``FRIL`` becomes ``L5`` too."""
        if self.expression.startswith("@"):
            return self.expression
        fields = self.expression.split()
        day_of_week = fields[-1]
        match = _LAST_WEEKDAY.fullmatch(day_of_week)
        if match:
            day = match.group(1)
            number = _WEEKDAY_NUMBERS.get(day.upper(), day)
            fields[-1] = f"L{number}"
        return " ".join(fields)

    @property
    def has_seconds(self) -> bool:
        return len(self.expression.split()) == 6

    @cached_property
    def tz(self) -> ZoneInfo:
        return time_zone(self.zone)

    @cached_property
    def _fixed_hours(self) -> bool:
        fields = self.expression.split()
        if self.expression.startswith("@"):
            return self.expression not in ("@hourly",)
        hour = fields[2] if self.has_seconds else fields[1]
        return "*" not in hour and "/" not in hour and "-" not in hour

    def next_after(self, after: datetime) -> datetime | None:
        """The first occurrence strictly after ``after`` (aware), in UTC; None if none."""
        return next(self.occurrences(after), None)

    def occurrences(self, after: datetime) -> Iterator[datetime]:
        """Occurrences strictly after ``after`` (aware), in UTC, in order."""
        if after.tzinfo is None:
            raise ValueError("occurrences() needs an aware datetime")
        iterator = croniter(
            self._croniter_form,
            after.astimezone(self.tz),
            ret_type=datetime,
            second_at_beginning=self.has_seconds,
        )
        while True:
            try:
                local: datetime = iterator.get_next(datetime)
            except CroniterBadDateError:  # no further match (Cron.never())
                return
            if local.fold and self._fixed_hours and _repeated_wall_time(local):
                continue  # the second 02:30 of a night the clocks go back
            yield local.astimezone(UTC)

    def between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Occurrences in ``(after, until]``, in UTC, at most ``limit`` (the earliest)."""
        found: list[datetime] = []
        for occurrence in self.occurrences(after):
            if occurrence > until or len(found) >= limit:
                break
            found.append(occurrence)
        return found


_LAST_WEEKDAY = re.compile(r"([0-7]|[A-Za-z]{3})L")
_WEEKDAY_NUMBERS = {
    "SUN": "0",
    "MON": "1",
    "TUE": "2",
    "WED": "3",
    "THU": "4",
    "FRI": "5",
    "SAT": "6",
}
_CRONOS_DAY_OF_MONTH = {
    re.compile(r"^LW$"): "'LW' (the last weekday of the month)",
    re.compile(r"^L-\d+W?$"): "'L-n' (n days before the last day of the month)",
}


def _unsupported_cronos_form(expression: str) -> str | None:
    """The Cronos form in ``expression`` croniter cannot evaluate, described, or None."""
    fields = expression.split()
    if expression.startswith("@") or len(fields) not in (5, 6):
        return None
    day_of_month = fields[-3]
    for part in day_of_month.split(","):
        for pattern, description in _CRONOS_DAY_OF_MONTH.items():
            if pattern.match(part.upper()):
                return description
    if "," in fields[-1] and "L" in fields[-1].upper():
        return "'nL' (the last given weekday of the month) in a list"
    return None


def _repeated_wall_time(local: datetime) -> bool:
    """Whether this wall-clock time also happened an hour earlier (fold=0), as it does on a
    night the clocks go back."""
    first = local.replace(fold=0)
    return first.utcoffset() != local.utcoffset()


def plan(
    cron: CronExpression,
    cursor: datetime,
    now: datetime,
    misfire: MisfireHandling,
    grace: timedelta,
    active_since: datetime | None = None,
) -> tuple[list[datetime], datetime]:
    """Which occurrences after ``cursor`` (the last one handled) to fire at ``now``.

    Returns the occurrences to fire and the new cursor. An occurrence was *missed* when it fell
    due before this beat became active (``active_since``) or more than ``grace`` ago; one that
    is merely a little late is not, and fires in every mode. Of the missed, Relaxed fires the
    latest once, however many there were; Strict fires every one (at most ``MAX_CATCH_UP`` per
    pass); Ignorable fires none.
    """
    due = cron.between(cursor, now, MAX_CATCH_UP)
    if not due:
        return [], cursor
    if misfire is MisfireHandling.STRICT:
        return due, due[-1]
    missed = [o for o in due if now - o > grace or (active_since is not None and o < active_since)]
    on_time = due[len(missed) :]  # occurrences are in order: the missed ones come first
    if misfire is MisfireHandling.RELAXED:
        return missed[-1:] + on_time, due[-1]
    return on_time, due[-1]
