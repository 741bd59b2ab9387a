"""Compaction schedules: intervals and cron expressions (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rhei_lake.errors import ConfigError
from rhei_lake.service.schedule import CronSchedule, IntervalSchedule


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 * * * *", at(2026, 5, 1, 12, 0, 0), at(2026, 5, 1, 13, 0, 0)),  # strictly after
        ("0 * * * *", at(2026, 5, 1, 12, 59, 59), at(2026, 5, 1, 13, 0, 0)),
        ("*/15 * * * *", at(2026, 5, 1, 12, 7), at(2026, 5, 1, 12, 15)),
        ("30 2 * * *", at(2026, 12, 31, 3, 0), at(2027, 1, 1, 2, 30)),  # across a year
        ("0 0 29 2 *", at(2026, 3, 1), at(2028, 2, 29)),  # the next leap day
        ("0 9 * * mon-fri", at(2026, 5, 2, 10, 0), at(2026, 5, 4, 9, 0)),  # Saturday -> Monday
        ("0 0 * * 7", at(2026, 5, 1), at(2026, 5, 3)),  # 7 is Sunday too
        ("0 0 1 * 1", at(2026, 5, 2), at(2026, 5, 4)),  # both day fields: either matches (a Monday)
        ("0 12 1 jan,jul *", at(2026, 2, 1), at(2026, 7, 1, 12)),
        ("*/20 * * * * *", at(2026, 5, 1, 12, 0, 41), at(2026, 5, 1, 12, 1, 0)),  # six fields: seconds first
        ("@daily", at(2026, 5, 1, 0, 0, 0, 1), at(2026, 5, 2)),
        ("@hourly", at(2026, 5, 1, 10, 30), at(2026, 5, 1, 11)),
        ("@weekly", at(2026, 5, 1), at(2026, 5, 3)),
        ("0-10/5 8-9 * * *", at(2026, 5, 1, 8, 11), at(2026, 5, 1, 9, 0)),
    ],
)
def test_cron_next_after(expression, after, expected):
    assert CronSchedule.parse(expression).next_after(after) == expected


def test_cron_fires_on_every_matching_minute_and_only_those():
    schedule = CronSchedule.parse("5,35 */6 * * *")
    t, fired = at(2026, 1, 1), []
    while t < at(2026, 1, 3):
        t = schedule.next_after(t)
        fired.append(t)
    expected = [at(2026, 1, d, h, m) for d in (1, 2) for h in (0, 6, 12, 18) for m in (5, 35)] + [at(2026, 1, 3, 0, 5)]
    assert fired == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "has 4 fields"),
        ("60 * * * *", "minute 60 is outside 0-59"),
        ("* 24 * * *", "hour 24 is outside 0-23"),
        ("*/0 * * * *", "bad step"),
        ("5-1 * * * *", "runs backwards"),
        ("0 0 * foo *", "not a valid month"),
        ("0 0 31 2 *", "never fires"),
        ("", "empty cron expression"),
        ("@sometimes", "has 1 fields"),
    ],
)
def test_bad_cron_expressions_say_what_is_wrong(expression, message):
    with pytest.raises(ConfigError, match=message):
        CronSchedule.parse(expression)


def test_interval_schedule_counts_from_the_last_run():
    assert IntervalSchedule(90).next_after(at(2026, 5, 1)) == at(2026, 5, 1) + timedelta(seconds=90)
    assert str(IntervalSchedule(3600)) == "every 3600s"
