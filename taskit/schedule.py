"""When periodic tasks fire: cron expressions and fixed intervals.

A schedule answers two questions about Unix times, and nothing else:
`previous(now)`, the latest tick at or before `now`, and `next(now)`, the first tick
after it. Every worker computes the same ticks from the same schedule without talking
to the others, which is what lets them agree on "this tick" (see taskit.periodic).

    Cron("*/15 9-17 * * mon-fri")       minute hour day-of-month month day-of-week
    Cron("@daily", tz=ZoneInfo("Europe/Paris"))
    Every(30) / Every(timedelta(hours=1))   ticks at whole multiples of the interval since the epoch

Cron fields take `*`, numbers, lists (`1,15`), ranges (`1-5`), steps (`*/10`, `8-18/2`,
`5/15`), month names (`jan`..`dec`) and day names (`sun`..`sat`; 0 and 7 are Sunday).
As in Vixie cron, when both day-of-month and day-of-week are restricted a day matches
if either does. Cron runs in UTC unless given `tz`.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import time
from abc import ABC, abstractmethod

from .exceptions import ScheduleError

__all__ = ["Cron", "Every", "Schedule", "parse_schedule"]

UTC = dt.timezone.utc

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
#: field name, lowest, highest, names (the first name stands for `lowest`)
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MINUTE = dt.timedelta(minutes=1)
#: how far `next`/`previous` search before deciding a cron expression never fires
_HORIZON_DAYS = 366 * 8


class Schedule(ABC):
    """Ticks in Unix time. Subclasses: `Cron`, `Every`."""

    @abstractmethod
    def previous(self, now: float) -> float:
        """The latest tick at or before `now`."""

    @abstractmethod
    def next(self, now: float) -> float:
        """The first tick strictly after `now`."""


class Every(Schedule):
    """A tick every `interval` (seconds or a timedelta), at whole multiples of it since
    the Unix epoch: Every(60) fires at the start of each UTC minute on every worker."""

    def __init__(self, interval: float | dt.timedelta) -> None:
        if isinstance(interval, dt.timedelta):
            interval = interval.total_seconds()
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise ScheduleError(f"an interval must be seconds or a timedelta, not {type(interval).__name__}")
        if not math.isfinite(interval) or interval < 1:
            raise ScheduleError(f"an interval must be at least 1 second, not {interval}")
        self.interval = float(interval)

    def previous(self, now: float) -> float:
        return math.floor(now / self.interval) * self.interval

    def next(self, now: float) -> float:
        return self.previous(now) + self.interval

    def __repr__(self) -> str:
        return f"Every({self.interval:g})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Every) and other.interval == self.interval

    def __hash__(self) -> int:
        return hash(self.interval)


class Cron(Schedule):
    """A five-field cron expression, evaluated in UTC or in `tz` (any tzinfo)."""

    def __init__(self, expression: str, tz: dt.tzinfo | None = None) -> None:
        if not isinstance(expression, str):
            raise ScheduleError(f"a cron expression must be a string, not {type(expression).__name__}")
        if tz is not None and not isinstance(tz, dt.tzinfo):
            raise ScheduleError(f"tz must be a tzinfo such as ZoneInfo('Europe/Paris'), not {type(tz).__name__}")
        self.expression = expression.strip()
        self.tz = tz or UTC
        text = _ALIASES.get(self.expression.lower(), self.expression)
        parts = text.split()
        if len(parts) != 5:
            raise ScheduleError(
                f"cron expression {expression!r} has {len(parts)} field{'s' if len(parts) != 1 else ''}; "
                "expected 5: minute hour day-of-month month day-of-week (e.g. '*/5 * * * *')"
            )
        sets = [_parse_field(part, spec, expression) for part, spec in zip(parts, _FIELDS)]
        self.minutes, self.hours, self.days, self.months, weekdays = sets
        self.weekdays = {d % 7 for d in weekdays}  # 7 is Sunday too
        # Vixie cron: a field starting with '*' (also '*/2') does not restrict the day
        self._any_day = parts[2].startswith("*")
        self._any_weekday = parts[4].startswith("*")
        if self._any_weekday and not any(
            day <= (29 if month == 2 else calendar.monthrange(2001, month)[1])
            for month in self.months
            for day in self.days
        ):
            raise ScheduleError(f"cron expression {expression!r} never fires: no month has that day")

    def _day_matches(self, day: dt.datetime) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self._any_day or self._any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next(self, now: float) -> float:
        start = dt.datetime.fromtimestamp(now, self.tz).replace(tzinfo=None, second=0, microsecond=0)
        t, limit = start + _MINUTE, start + dt.timedelta(days=_HORIZON_DAYS)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=28) + dt.timedelta(days=4)).replace(day=1, hour=0, minute=0)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += _MINUTE
            else:
                stamp = t.replace(tzinfo=self.tz).timestamp()
                if stamp > now:  # a wall time inside a DST gap can map before `now`
                    return stamp
                t += _MINUTE
        raise ScheduleError(f"cron expression {self.expression!r} does not fire within {_HORIZON_DAYS // 366} years")

    def previous(self, now: float) -> float:
        t = dt.datetime.fromtimestamp(now, self.tz).replace(tzinfo=None, second=0, microsecond=0)
        limit = t - dt.timedelta(days=_HORIZON_DAYS)
        while t > limit:
            if t.month not in self.months:
                t = t.replace(day=1, hour=0, minute=0) - _MINUTE
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) - _MINUTE
            elif t.hour not in self.hours:
                t = t.replace(minute=0) - _MINUTE
            elif t.minute not in self.minutes:
                t -= _MINUTE
            else:
                stamp = t.replace(tzinfo=self.tz).timestamp()
                if stamp <= now:
                    return stamp
                t -= _MINUTE
        raise ScheduleError(f"cron expression {self.expression!r} did not fire within {_HORIZON_DAYS // 366} years")

    def __repr__(self) -> str:
        tz = "" if self.tz is UTC else f", tz={self.tz}"
        return f"Cron({self.expression!r}{tz})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cron) and (other.expression, other.tz) == (self.expression, self.tz)

    def __hash__(self) -> int:
        return hash(self.expression)


def _parse_field(text: str, spec: tuple[str, int, int, list[str] | None], expression: str) -> set[int]:
    name, low, high, names = spec

    def bad(why: str) -> ScheduleError:
        return ScheduleError(f"cron expression {expression!r}: {name} field {text!r} {why}")

    def number(token: str) -> int:
        if names and token.lower() in names:
            return low + names.index(token.lower())
        if not token.isdigit():
            allowed = f"a number {low}-{high}" + (f" or a name ({names[0]}..{names[-1]})" if names else "")
            raise bad(f"has {token!r}; expected {allowed}")
        value = int(token)
        if not low <= value <= high:
            raise bad(f"has {value}, outside {low}-{high}")
        return value

    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise bad("has an empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise bad(f"has step {step_text!r}; expected a positive number")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = number(a), number(b)
            if first > last:
                raise bad(f"has range {base!r} whose start is after its end")
        else:
            first = number(base)
            last = high if slash else first  # '5/15' means 5, 20, 35, 50
        values.update(range(first, last + 1, step))
    return values


def parse_schedule(value: object) -> Schedule:
    """A Schedule from what `@task(schedule=...)` and `periodic(...)` accept: a Schedule,
    a cron string, or an interval (seconds or a timedelta)."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, str):
        return Cron(value)
    if isinstance(value, (int, float, dt.timedelta)) and not isinstance(value, bool):
        return Every(value)
    raise ScheduleError(
        f"a schedule must be a cron string, seconds, a timedelta, or a taskit.schedule.Cron/Every, "
        f"not {type(value).__name__}"
    )


#: the longest duration taskit accepts (ttl, result_ttl, failure_ttl, timeout, countdown):
#: 100 years, far past any real use and far below what Redis's EXPIRE or a float can hold
MAX_SECONDS = 3_155_760_000


def run_at(countdown: dt.timedelta | float | None = None, eta: dt.datetime | None = None) -> float:
    """Unix time for a countdown or an eta; refuses negative delays and naive datetimes."""
    if countdown is not None and eta is not None:
        raise ScheduleError("give a countdown or an eta, not both")
    if eta is not None:
        if not isinstance(eta, dt.datetime):
            raise ScheduleError(f"eta must be a datetime, not {type(eta).__name__}")
        if eta.tzinfo is None or eta.utcoffset() is None:
            raise ScheduleError(
                f"eta {eta.isoformat()} has no timezone; pass an aware datetime, "
                "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        return eta.timestamp()
    if isinstance(countdown, dt.timedelta):
        countdown = countdown.total_seconds()
    if isinstance(countdown, bool) or not isinstance(countdown, (int, float)):
        raise ScheduleError(f"countdown must be seconds or a timedelta, not {type(countdown).__name__}")
    if not 0 <= countdown <= MAX_SECONDS:  # also refuses NaN
        raise ScheduleError(f"countdown must be 0 to {MAX_SECONDS:,} seconds (100 years), not {countdown}")
    return time.time() + countdown
