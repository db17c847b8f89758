"""Cron expressions: Hangfire's ``Cron`` helpers, validation, and next runs in a time zone.

croniter parses and iterates. Five fields are minute precision; six fields put seconds first
(``"*/10 * * * * *"`` is every ten seconds); Cronos's macros (``@daily``, ``@every_minute``, ...)
are accepted. As in Cronos, an expression that restricts both the day of the month and the day
of the week runs on days that match both (``0 0 13 * 5``: Friday the 13th), not on either as in
Vixie cron.

Daylight saving time follows Cronos, Hangfire's cron library: occurrences are matched on the
wall clock of the job's zone. On the night the clocks go forward, the occurrences in the skipped
hour run once, when the clocks jump (a daily 02:30 job runs at 03:00). On the night they go back,
an expression whose second, minute and hour fields hold only values and lists (``30 1 * * *``,
``0,30 1 * * *``) runs in the first of the repeated hours only; one with ``*``, a range or a step
in any of them (``0 * * * *``, ``*/15 1 * * *``, ``0-30 1 * * *``, or ``*/30 0 1 * * *`` with
seconds) runs in both.
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
        if self.expression.startswith("@") and self.expression.lower() not in _MACROS:
            macros = ", ".join(_MACROS)
            raise InvalidCronError(f"unknown cron macro {self.expression!r}: use one of {macros}")
        fields = self._fields.split()
        if len(fields) not in (5, 6):
            raise InvalidCronError(
                f"cron expression {self.expression!r} has {len(fields)} fields: "
                "use 5 (minute precision) or 6 (seconds first)"
            )
        unsupported = _unsupported_cronos_form(self._fields)
        if unsupported is not None:
            raise InvalidCronError(
                f"cron expression {self.expression!r} uses {unsupported}, which Hangfire's "
                "Cronos accepts but hfcelery does not support yet"
            )
        if not croniter.is_valid(self._croniter_form, second_at_beginning=self.has_seconds):
            raise InvalidCronError(f"invalid cron expression {self.expression!r}")
        time_zone(self.zone)

    @cached_property
    def _fields(self) -> str:
        """The expression in fields: a macro as Cronos expands it."""
        return _MACROS.get(self.expression.lower(), self.expression)

    @cached_property
    def _croniter_form(self) -> str:
        """The expression as croniter reads it: Cronos's ``5L`` (the last Friday of the month)
        is croniter's ``L5``; ``FRIL`` becomes ``L5`` too."""
        fields = self._fields.split()
        day_of_week = fields[-1]
        match = _LAST_WEEKDAY.fullmatch(day_of_week)
        if match:
            day = match.group(1)
            number = _WEEKDAY_NUMBERS.get(day.upper(), day)
            fields[-1] = f"L{number}"
        return " ".join(fields)

    @property
    def has_seconds(self) -> bool:
        return len(self._fields.split()) == 6

    @cached_property
    def tz(self) -> ZoneInfo:
        return time_zone(self.zone)

    @cached_property
    def _interval(self) -> bool:
        """Cronos's ``Interval`` flag: a ``*``, ``?``, range or step in the second, minute or hour
        field. Such an expression also runs in the second of two repeated hours; one with only
        fixed values and lists there runs in the first only. ``@hourly`` is ``0 * * * *``."""
        fields = self._fields.split()
        time_fields = fields[:3] if self.has_seconds else fields[:2]
        return any(mark in field for field in time_fields for mark in "*?-/")

    def next_after(self, after: datetime) -> datetime | None:
        """The first occurrence strictly after ``after`` (aware), in UTC; None if none."""
        return next(self.occurrences(after), None)

    def occurrences(self, after: datetime) -> Iterator[datetime]:
        """Occurrences strictly after ``after`` (aware), in UTC, in order."""
        if after.tzinfo is None:
            raise ValueError("occurrences() needs an aware datetime")
        wall_clock = _WallClock(self._croniter_form, self.has_seconds)
        cursor = after.astimezone(UTC).replace(microsecond=0)  # Cronos floors to the second
        while True:
            found = self._next_in_zone(cursor, wall_clock)
            if found is None:
                return
            yield found
            cursor = found

    def _next_in_zone(self, cursor: datetime, wall_clock: _WallClock) -> datetime | None:
        """The first occurrence after the instant ``cursor``, as Cronos's
        ``GetOccurrenceConsideringTimeZone`` finds it."""
        local = cursor.astimezone(self.tz)
        wall = _naive(local)
        inclusive = False
        first, second = _offsets(wall, self.tz)
        if first > second:  # the cursor is in a repeated hour
            change = _offset_change(wall, self.tz)
            repeat_start, repeat_end = _naive(change + second), _naive(change + first)
            if local.fold == 0:  # the first time round: the rest of it
                found = wall_clock.next(wall, inclusive)
                if found is not None and found < repeat_end:
                    return _instant(found, self.tz, fold=0)
                wall, inclusive = repeat_start, True
            if self._interval:  # the second time round: only intervals run in it
                found = wall_clock.next(wall, inclusive)
                if found is not None and found < repeat_end:
                    return _instant(found, self.tz, fold=1)
            wall, inclusive = repeat_end, True
        found = wall_clock.next(wall, inclusive)
        if found is None:
            return None
        first, second = _offsets(found, self.tz)
        if first < second:  # skipped by the clocks going forward: runs when they jump
            return _offset_change(found, self.tz)
        return _instant(found, self.tz, fold=0)  # a repeated time: the first of the two

    def between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Occurrences in ``(after, until]``, in UTC, at most ``limit`` (the earliest)."""
        found: list[datetime] = []
        for occurrence in self.occurrences(after):
            if occurrence > until or len(found) >= limit:
                break
            found.append(occurrence)
        return found


#: Cronos's macros and the expressions they stand for.
_MACROS = {
    "@every_second": "* * * * * *",
    "@every_minute": "* * * * *",
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
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
    if len(fields) not in (5, 6):
        return None
    day_of_month = fields[-3]
    for part in day_of_month.split(","):
        for pattern, description in _CRONOS_DAY_OF_MONTH.items():
            if pattern.match(part.upper()):
                return description
    if "," in fields[-1] and "L" in fields[-1].upper():
        return "'nL' (the last given weekday of the month) in a list"
    return None


class _WallClock:
    """croniter over naive wall-clock times (Cronos's ``FindOccurrence``): no time zone, so no
    DST; the iterator continues when asked for the occurrence after the one it gave last."""

    def __init__(self, expression: str, has_seconds: bool) -> None:
        self._expression = expression
        self._has_seconds = has_seconds
        self._iterator: croniter | None = None
        self._last: datetime | None = None

    def next(self, start: datetime, inclusive: bool) -> datetime | None:
        """The first match after ``start`` (at or after it when ``inclusive``), or None."""
        if inclusive:
            start -= timedelta(seconds=1)  # croniter is exclusive; matches are whole seconds
        if self._iterator is None:
            self._iterator = croniter(
                self._expression,
                start,
                ret_type=datetime,
                second_at_beginning=self._has_seconds,
                day_or=False,  # Cronos: both day fields must match
            )
        elif start != self._last:
            self._iterator.set_current(start, force=True)
        try:
            found: datetime = self._iterator.get_next(datetime)
        except CroniterBadDateError:  # no further match (Cron.never())
            return None
        self._last = found
        return found


def _naive(moment: datetime) -> datetime:
    """The wall-clock time of an aware ``moment``, naive (and without its fold)."""
    return moment.replace(tzinfo=None, fold=0)


def _offsets(wall: datetime, tz: ZoneInfo) -> tuple[timedelta, timedelta]:
    """The UTC offsets of the first and second reading of a naive wall-clock time. They differ
    only around a change: first > second for a repeated time, first < second for a skipped one."""
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert first is not None and second is not None  # ZoneInfo always has an offset
    return first, second


def _instant(wall: datetime, tz: ZoneInfo, fold: int) -> datetime:
    """The naive wall-clock time ``wall`` in ``tz`` (the second reading when ``fold``), in UTC."""
    return wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)


def _offset_change(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant (UTC) the offset changes around the repeated or skipped wall time ``wall``."""
    low, high = sorted((_instant(wall, tz, 0), _instant(wall, tz, 1)))
    after_change = high.astimezone(tz).utcoffset()
    seconds = int((high - low).total_seconds())
    while seconds > 1:  # low is before the change, high at or after it
        middle = low + timedelta(seconds=seconds // 2)
        if middle.astimezone(tz).utcoffset() == after_change:
            high = middle
        else:
            low = middle
        seconds = int((high - low).total_seconds())
    return high


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
