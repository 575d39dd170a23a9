"""The cron parser and interval schedules (taskit.schedule): pure computation, no Redis."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from taskit.exceptions import ConfigurationError, ScheduleError
from taskit.schedule import Cron, Every, parse_schedule

UTC = dt.timezone.utc


def ts(*args: int, tz: dt.tzinfo = UTC) -> float:
    return dt.datetime(*args, tzinfo=tz).timestamp()


def ticks(schedule: Cron | Every, start: float, count: int) -> list[dt.datetime]:
    out, now = [], start
    for _ in range(count):
        now = schedule.next(now)
        out.append(dt.datetime.fromtimestamp(now, UTC))
    return out


def test_every_minute_and_steps() -> None:
    assert ticks(Cron("* * * * *"), ts(2024, 1, 1, 0, 0, 30), 2) == [
        dt.datetime(2024, 1, 1, 0, 1, tzinfo=UTC), dt.datetime(2024, 1, 1, 0, 2, tzinfo=UTC)
    ]
    assert [t.minute for t in ticks(Cron("*/20 * * * *"), ts(2024, 1, 1), 4)] == [20, 40, 0, 20]
    assert [t.minute for t in ticks(Cron("5/20 * * * *"), ts(2024, 1, 1), 4)] == [5, 25, 45, 5]
    assert [t.hour for t in ticks(Cron("0 8-18/4 * * *"), ts(2024, 1, 1), 4)] == [8, 12, 16, 8]


def test_lists_ranges_and_names() -> None:
    cron = Cron("15,45 9-10 * * MON-fri")
    got = ticks(cron, ts(2024, 5, 3, 10, 50), 3)  # a Friday, after the last run of the day
    assert got == [
        dt.datetime(2024, 5, 6, 9, 15, tzinfo=UTC),
        dt.datetime(2024, 5, 6, 9, 45, tzinfo=UTC),
        dt.datetime(2024, 5, 6, 10, 15, tzinfo=UTC),
    ]
    assert ticks(Cron("0 0 1 jan,jul *"), ts(2024, 2, 1), 2) == [
        dt.datetime(2024, 7, 1, tzinfo=UTC), dt.datetime(2025, 1, 1, tzinfo=UTC)
    ]


def test_sunday_is_0_and_7() -> None:
    assert Cron("0 0 * * 0").next(ts(2024, 5, 1)) == Cron("0 0 * * 7").next(ts(2024, 5, 1)) == ts(2024, 5, 5)
    assert Cron("0 0 * * sun").next(ts(2024, 5, 1)) == ts(2024, 5, 5)


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # Vixie cron: the 13th of the month, or any Friday
    got = ticks(Cron("0 0 13 * fri"), ts(2024, 9, 1), 4)
    assert [t.date() for t in got] == [dt.date(2024, 9, 6), dt.date(2024, 9, 13), dt.date(2024, 9, 20), dt.date(2024, 9, 27)]
    # with '*' in one of them, both must match
    assert Cron("0 0 * * fri").next(ts(2024, 9, 13)) == ts(2024, 9, 20)


def test_leap_day_and_aliases() -> None:
    assert Cron("0 0 29 2 *").next(ts(2024, 3, 1)) == ts(2028, 2, 29)
    assert Cron("@daily") == Cron("@daily") and Cron("@daily").next(ts(2024, 1, 1, 5)) == ts(2024, 1, 2)
    assert Cron("@hourly").next(ts(2024, 1, 1, 5, 1)) == ts(2024, 1, 1, 6)
    assert Cron("@weekly").next(ts(2024, 5, 1)) == ts(2024, 5, 5)
    assert Cron("@monthly").next(ts(2024, 5, 1)) == ts(2024, 6, 1)
    assert Cron("@yearly").next(ts(2024, 5, 1)) == Cron("@annually").next(ts(2024, 5, 1)) == ts(2025, 1, 1)


def test_previous_is_at_or_before_now() -> None:
    cron = Cron("*/15 * * * *")
    assert cron.previous(ts(2024, 1, 1, 10, 30)) == ts(2024, 1, 1, 10, 30)  # a tick exactly now counts
    assert cron.previous(ts(2024, 1, 1, 10, 29, 59)) == ts(2024, 1, 1, 10, 15)
    assert cron.next(ts(2024, 1, 1, 10, 30)) == ts(2024, 1, 1, 10, 45)  # next is strictly after
    assert Cron("0 0 1 1 *").previous(ts(2024, 6, 1)) == ts(2024, 1, 1)
    assert Cron("0 12 * * mon").previous(ts(2024, 5, 6, 11, 59)) == ts(2024, 4, 29, 12)


def test_timezone() -> None:
    paris = ZoneInfo("Europe/Paris")
    cron = Cron("0 9 * * *", tz=paris)
    assert cron.next(ts(2024, 7, 1)) == ts(2024, 7, 1, 9, tz=paris) == ts(2024, 7, 1, 7)  # CEST, UTC+2
    assert cron.next(ts(2024, 12, 1)) == ts(2024, 12, 1, 8)  # CET, UTC+1
    # a wall time skipped by a DST change still yields ticks in order
    ny = Cron("30 2 * * *", tz=ZoneInfo("America/New_York"))
    now = ts(2024, 3, 10, 8)
    assert ny.previous(now) <= now < ny.next(now)


def test_every() -> None:
    every = Every(dt.timedelta(minutes=5))
    assert every.interval == 300
    assert every.previous(ts(2024, 1, 1, 0, 7)) == ts(2024, 1, 1, 0, 5)
    assert every.next(ts(2024, 1, 1, 0, 5)) == ts(2024, 1, 1, 0, 10)
    assert Every(1).previous(100.5) == 100 and Every(1.5).next(3.0) == 4.5
    assert parse_schedule(60) == Every(60) and parse_schedule("@daily") == Cron("@daily")
    assert parse_schedule(every) is every


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "has 4 fields; expected 5"),
        ("* * * * * *", "has 6 fields"),
        ("", "has 0 fields"),
        ("60 * * * *", "minute field '60' has 60, outside 0-59"),
        ("* 24 * * *", "hour field '24' has 24, outside 0-23"),
        ("* * 0 * *", "day of month field '0' has 0, outside 1-31"),
        ("* * * 13 *", "month field '13' has 13, outside 1-12"),
        ("* * * * 8", "day of week field '8' has 8, outside 0-7"),
        ("*/0 * * * *", "step '0'"),
        ("*/x * * * *", "step 'x'"),
        ("5-1 * * * *", "range '5-1' whose start is after its end"),
        ("1,,2 * * * *", "empty list item"),
        ("* * * foo *", "has 'foo'; expected a number 1-12 or a name (jan..dec)"),
        ("* * * * mon-xyz", "has 'xyz'"),
        ("-1 * * * *", "has ''"),
        ("0 0 30 2 *", "never fires"),
        ("@every5m", "has 1 field"),
    ],
)
def test_bad_cron_expressions(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        Cron(expression)


@pytest.mark.parametrize("value", [0, 0.5, -60, float("nan"), float("inf"), dt.timedelta(0), True, "60", None])
def test_bad_intervals(value: object) -> None:
    with pytest.raises(ScheduleError):
        if isinstance(value, str) or value is None:
            parse_schedule(value if value is None else [value])
        else:
            Every(value)  # type: ignore[arg-type]


def test_schedule_error_is_a_configuration_error() -> None:
    assert issubclass(ScheduleError, ConfigurationError)
    with pytest.raises(ScheduleError, match="a cron expression must be a string"):
        Cron(5)  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match="tz must be a tzinfo"):
        Cron("* * * * *", tz="Europe/Paris")  # type: ignore[arg-type]
