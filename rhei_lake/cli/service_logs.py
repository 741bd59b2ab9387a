"""Where ``rh serve`` sends the library's log records: structured lines on stdout, or the dashboard.

Records of the ``rhei_lake`` loggers may carry ``extra={"event": ..., "fields": {...}}``
(the service does); a JSON line puts those beside the message, so a log
collector can filter on ``event`` and read numbers without parsing text.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

ROOT_LOGGER = "rhei_lake"


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``event``, ``msg``, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "msg": record.getMessage(),
        }
        for key, value in (getattr(record, "fields", None) or {}).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextLineFormatter(logging.Formatter):
    """``2026-05-01T12:00:00.000Z INFO rhei_lake.serve: synced 10 events (orders: 10)``."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def log_to_stream(fmt: str = "json", stream: TextIO | None = None) -> logging.Handler:
    """Send ``rhei_lake`` records at INFO and above to ``stream`` (stdout), one line each."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonLineFormatter() if fmt == "json" else TextLineFormatter())
    _attach(handler)
    return handler


@dataclass(frozen=True)
class LogLine:
    at: datetime
    level: str
    message: str


class RecentLog(logging.Handler):
    """Keeps the last ``size`` records for the dashboard's log panel."""

    def __init__(self, size: int = 200) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[LogLine] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().splitlines()[0] if record.getMessage() else ""
            self.lines.append(LogLine(datetime.fromtimestamp(record.created, UTC), record.levelname, message))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)

    def recent(self, count: int) -> list[LogLine]:
        return list(self.lines)[-count:] if count > 0 else []


def log_to_dashboard(size: int = 200) -> RecentLog:
    handler = RecentLog(size)
    _attach(handler)
    return handler


def detach(handler: logging.Handler) -> None:
    logging.getLogger(ROOT_LOGGER).removeHandler(handler)


def _attach(handler: logging.Handler) -> None:
    logger = logging.getLogger(ROOT_LOGGER)
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # nothing else prints over the dashboard or doubles the lines
