"""Settings of service mode (``rh serve``): the ``[serve]`` table of a configuration file."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rhei_lake.config import format_validation_error
from rhei_lake.errors import ConfigError
from rhei_lake.service.schedule import CronSchedule, IntervalSchedule, Schedule

DEFAULT_SYNC_INTERVAL = 1.0
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_STATUS_INTERVAL = 1.0
DEFAULT_HEARTBEAT_INTERVAL = 60.0


class ServiceConfig(BaseModel):
    """How ``rh serve`` runs a lake: compaction schedule, metrics endpoint, status and log cadence.

    The lake itself (storage, source, ``sync_interval``, ``flight_port``) is
    configured by :class:`~rhei_lake.LakeConfig`; these are the service's own
    settings. Unknown fields are errors.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    compact_interval: timedelta | None = Field(
        None,
        description="Run compaction this often (a duration: 15m, 1h, 1d, or seconds); exclusive with compact_schedule.",
    )
    compact_schedule: str | None = Field(
        None,
        description="Run compaction on a cron schedule in UTC: 'minute hour day month weekday' "
        "(e.g. '0 * * * *' hourly), an optional leading seconds field, or @hourly/@daily/@weekly.",
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Serve Prometheus metrics on http://HOST:PORT/metrics (0: any free port)."
    )
    metrics_host: str = Field(
        DEFAULT_METRICS_HOST,
        min_length=1,
        description="Address the metrics endpoint binds (127.0.0.1: this machine only; 0.0.0.0 in a container).",
    )
    status_interval: float = Field(
        DEFAULT_STATUS_INTERVAL,
        gt=0,
        le=3600,
        description="Seconds between refreshes of the status behind the dashboard and the lag metrics.",
    )
    heartbeat_interval: float = Field(
        DEFAULT_HEARTBEAT_INTERVAL,
        ge=0,
        description="Headless mode: seconds between status lines in the log (0: none).",
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="Headless mode: one JSON object per log line, or plain text lines."
    )

    @field_validator("compact_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value is None:
            return None
        try:  # TEMP(issue 3): parse_duration arrives with compaction
            from rhei_lake.timeutil import parse_duration
        except ImportError:
            return value
        interval = parse_duration(value, what=None)
        if interval.total_seconds() <= 0:
            raise ValueError("must be longer than 0")
        return interval

    @field_validator("compact_schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronSchedule.parse(value)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("compact_schedule: ")) from None
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> ServiceConfig:
        if self.compact_interval is not None and self.compact_schedule is not None:
            raise ValueError("compact_interval and compact_schedule exclude each other: choose one")
        return self

    @property
    def compaction_schedule(self) -> Schedule | None:
        """When compaction runs, or ``None`` when it is not scheduled."""
        if self.compact_schedule is not None:
            return CronSchedule.parse(self.compact_schedule)
        if self.compact_interval is not None:
            return IntervalSchedule(self.compact_interval.total_seconds())
        return None


def build_service_config(options: dict[str, Any]) -> ServiceConfig:
    """Validate ``options`` into a :class:`ServiceConfig`; errors name the field (as ``serve.FIELD``)."""
    try:
        return ServiceConfig(**options)
    except ValidationError as exc:
        message = format_validation_error(exc, known=ServiceConfig.model_fields).removeprefix("invalid configuration: ")
        parts = [f"serve.{part}" if not part.startswith("config:") else part for part in message.split("; ")]
        raise ConfigError("invalid configuration: " + "; ".join(parts)) from None
