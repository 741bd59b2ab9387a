"""Instants: everything is UTC microseconds since the Unix epoch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Union

from rhei_lake.errors import ConfigError

Instant = Union[datetime, str, int, float]
"""An aware datetime, an ISO 8601 string (naive means UTC), or epoch seconds."""

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
        dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        micros = _datetime_micros(dt)
    elif isinstance(value, str):
        text = value.strip()
        try:
            dt = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise ConfigError(f"{what}: {value!r} is not an ISO 8601 timestamp (e.g. 2026-11-01T12:00:00Z)") from None
        micros = _datetime_micros(dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC))
    else:
        raise ConfigError(f"{what}: expected a datetime, ISO 8601 string or epoch seconds, got {type(value).__name__}")
    if not -62_135_596_800_000_000 <= micros <= 253_402_300_799_999_999:
        raise ConfigError(f"{what}: {value!r} is outside years 1-9999")
    return micros


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
