"""When scheduled work runs: a fixed interval, or a cron-like schedule in UTC.

A cron schedule has five fields, ``minute hour day-of-month month day-of-week``,
or six with a leading ``second`` field. Each field is ``*``, a number, a range
``a-b``, a step ``*/n`` or ``a-b/n``, or a comma-separated list of those; months
and weekdays also take names (``jan``, ``mon``), and Sunday is 0 or 7. As in
cron, when both day fields are restricted a day matching either one fires.
``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and
``@yearly`` (``@annually``) are shorthands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rhei_lake.errors import ConfigError

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name: i for i, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
_WEEKDAYS = {name: i for i, name in enumerate("sun mon tue wed thu fri sat".split())}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (  # name, lowest, highest, names
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
_SEARCH_LIMIT = timedelta(days=366 * 8)  # every valid schedule fires within a leap cycle


@dataclass(frozen=True)
class IntervalSchedule:
    """Every ``seconds`` seconds, counted from the previous run."""

    seconds: float

    def next_after(self, when: datetime) -> datetime:
        return when + timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        return f"every {self.seconds:g}s"


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression; :meth:`next_after` gives the next instant it fires (UTC)."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        """Parse ``text``; a malformed or never-firing expression is a ConfigError naming the problem."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("compact_schedule: empty cron expression; write e.g. '0 * * * *' or '@hourly'")
        source = " ".join(text.split())
        fields = _MACROS.get(source.lower(), source).split()
        if len(fields) == 5:
            fields = ["0", *fields]
        elif len(fields) != 6:
            raise ConfigError(
                f"compact_schedule: {text!r} has {len(fields)} fields; a cron expression has 5 "
                "(minute hour day-of-month month day-of-week) or 6 (with seconds first)"
            )
        parsed = [_parse_field(value, spec, text) for value, spec in zip(fields, _FIELDS)]
        weekdays = frozenset(d % 7 for d in parsed[5])
        schedule = cls(
            text=source,
            seconds=parsed[0],
            minutes=parsed[1],
            hours=parsed[2],
            days=parsed[3],
            months=parsed[4],
            weekdays=weekdays,
            any_day=fields[3] in ("*", "?"),
            any_weekday=fields[5] in ("*", "?"),
        )
        start = datetime(2024, 1, 1, tzinfo=UTC)
        if schedule._search(start) is None:
            raise ConfigError(f"compact_schedule: {text!r} never fires (no such date)")
        return schedule

    def next_after(self, when: datetime) -> datetime:
        """The first instant strictly after ``when`` that the schedule fires at (UTC)."""
        found = self._search(when)
        assert found is not None  # parse() proved the schedule fires
        return found

    def _day_matches(self, day: datetime) -> bool:
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow

    def _search(self, when: datetime) -> datetime | None:
        t = when.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        limit = t + _SEARCH_LIMIT
        while t <= limit:
            if t.month not in self.months:
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
            elif not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0, second=0)
            elif t.minute not in self.minutes:
                t = (t + timedelta(minutes=1)).replace(second=0)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        return None

    def __str__(self) -> str:
        return f"cron {self.text!r} (UTC)"


Schedule = IntervalSchedule | CronSchedule


def _parse_field(value: str, spec: tuple[str, int, int, dict[str, int]], text: str) -> frozenset[int]:
    name, low, high, names = spec
    out: set[int] = set()
    for part in value.lower().split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ConfigError(f"compact_schedule: {text!r}: bad step {step_text!r} in the {name} field")
            step = int(step_text)
        if base in ("*", "?"):
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _number(a, spec, text), _number(b, spec, text)
            if first > last:
                raise ConfigError(f"compact_schedule: {text!r}: range {base!r} runs backwards in the {name} field")
        else:
            first = _number(base, spec, text)
            last = high if step_text else first
        out.update(range(first, last + 1, step))
    return frozenset(out)


def _number(token: str, spec: tuple[str, int, int, dict[str, int]], text: str) -> int:
    name, low, high, names = spec
    if token in names:
        return names[token]
    if not token.isdigit():
        raise ConfigError(f"compact_schedule: {text!r}: {token!r} is not a valid {name}")
    number = int(token)
    if not low <= number <= high:
        raise ConfigError(f"compact_schedule: {text!r}: {name} {number} is outside {low}-{high}")
    return number
