"""Instants: everything is UTC microseconds since the Unix epoch.

An instant given without a time zone is refused rather than guessed: Python
reads a naive ``datetime`` as local time, SQL databases often as UTC, and
either guess silently moves a query by hours for half of the callers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from datetime import timedelta as timedelta_type
from typing import Union

from rhei_lake.errors import ConfigError

Instant = Union[datetime, str, int, float]
"""An aware datetime, an ISO 8601 string with ``Z`` or an offset, or epoch seconds (naive instants are refused)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: Instant, *, what: str = "as_of") -> int:
    """Convert an :data:`Instant` to UTC epoch microseconds; ConfigError if it is not one."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a datetime, ISO 8601 string or epoch seconds, got a bool")
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{what}: {value!r} is not a finite number of seconds")
        micros = round(value * 1_000_000)
    elif isinstance(value, datetime):
        if not _aware(value):
            raise ConfigError(
                f"{what}: {value!r} is a naive datetime (no time zone), which rhei_lake does not guess; pass an "
                "aware one: dt.astimezone() for local time, dt.replace(tzinfo=timezone.utc) for UTC, "
                "or datetime.now(timezone.utc)"
            )
        micros = _datetime_micros(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            dt = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise ConfigError(f"{what}: {value!r} is not an ISO 8601 timestamp (e.g. 2026-11-01T12:00:00Z)") from None
        if not _aware(dt):
            spelled = text if any(sep in text[8:] for sep in "T t") else dt.isoformat()  # a date alone: add its time
            raise ConfigError(
                f"{what}: {value!r} has no UTC offset, which rhei_lake does not guess; append Z for UTC "
                f"({spelled}Z) or the offset (e.g. {spelled}+02:00)"
            )
        micros = _datetime_micros(dt)
    else:
        raise ConfigError(f"{what}: expected a datetime, ISO 8601 string or epoch seconds, got {type(value).__name__}")
    if not -62_135_596_800_000_000 <= micros <= 253_402_300_799_999_999:
        raise ConfigError(f"{what}: {value!r} is outside years 1-9999")
    return micros


def _aware(dt: datetime) -> bool:
    return dt.tzinfo is not None and dt.tzinfo.utcoffset(dt) is not None


def _datetime_micros(dt: datetime) -> int:
    delta = dt.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """UTC epoch microseconds to an aware datetime."""
    from datetime import timedelta

    return _EPOCH + timedelta(microseconds=micros)


def sql_timestamp(micros: int) -> str:
    """A DataFusion expression for the instant, typed timestamp[us, UTC]."""
    return f"arrow_cast({int(micros)}, 'Timestamp(Microsecond, Some(\"UTC\"))')"


def now_micros() -> int:
    return _datetime_micros(datetime.now(UTC))


Duration = Union[timedelta_type, str, int, float]
"""A ``timedelta``, seconds, or text such as ``7d``, ``12h``, ``1h30m``, ``90s``, ``0`` or ISO 8601 ``P7D``."""

_DURATION_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])")


def parse_duration(value: Duration, *, what: str | None = "duration") -> timedelta_type:
    """Convert a :data:`Duration` to a non-negative ``timedelta``; ConfigError if it is not one.

    The error message starts with ``what`` (omitted when ``None``).
    """
    where = f"{what}: " if what else ""
    if isinstance(value, timedelta_type):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ConfigError(f"{where}expected a duration such as 7d, 12h or 30m, got a bool")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration_text_seconds(value.strip().lower(), where)
    else:
        raise ConfigError(f"{where}expected a duration such as 7d, 12h or 30m, got {type(value).__name__}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}{value!r} is not a finite duration")
    if seconds < 0:
        raise ConfigError(f"{where}{value!r} is negative")
    return timedelta_type(seconds=seconds)


def _duration_text_seconds(text: str, where: str) -> float:
    if not text:
        raise ConfigError(f"{where}empty duration; write e.g. 7d, 12h, 30m or 0")
    try:
        return float(text)
    except ValueError:
        pass
    if text.startswith("p"):
        from pydantic import TypeAdapter, ValidationError

        try:
            return TypeAdapter(timedelta_type).validate_python(text.upper()).total_seconds()
        except ValidationError:
            raise ConfigError(f"{where}{text!r} is not an ISO 8601 duration (e.g. P7D, PT12H)") from None
    compact = text.replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != compact:
        raise ConfigError(f"{where}{text!r} is not a duration; write e.g. 7d, 12h, 1h30m, 90s or 0")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def format_duration(value: timedelta_type) -> str:
    """A short text form of ``value`` (``7d``, ``1h30m``, ``0s``), the inverse of :func:`parse_duration`."""
    seconds = value.total_seconds()
    if seconds == 0:
        return "0s"
    out = []
    rest = seconds
    for unit in ("d", "h", "m"):
        size = _DURATION_UNITS[unit]
        count = int(rest // size)
        if count:
            out.append(f"{count}{unit}")
            rest -= count * size
    if rest:
        out.append(f"{rest:g}s")
    return "".join(out)
