"""Compaction on a schedule (or on request) in a service: one thread calling ``lake.compact()``.

A failed run is logged (``compaction_failed``), counted in the metrics and
shown in :class:`CompactionState`; the schedule goes on. Runs never overlap,
and stopping waits for a run in progress to finish (every compaction step is
a commit that is safe to interrupt, but a finished run reports what it did).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import rhei_lake
from rhei_lake.errors import RheiError
from rhei_lake.service.metrics import LakeMetrics
from rhei_lake.service.schedule import Schedule
from rhei_lake.sync.loop import ErrorInfo, summary

log = logging.getLogger("rhei_lake.serve")


@dataclass(frozen=True)
class CompactionState:
    """The compaction schedule and its last run, as the dashboard shows it."""

    schedule: str | None
    next_at: datetime | None
    running: bool = False
    runs: int = 0
    failures: int = 0
    last_at: datetime | None = None
    last_seconds: float | None = None
    last_summary: str | None = None
    last_error: ErrorInfo | None = None


class CompactionScheduler:
    """Runs ``lake.compact()`` when ``schedule`` says (never without one) and whenever :meth:`request` is called."""

    def __init__(self, lake: rhei_lake.Lake, schedule: Schedule | None, metrics: LakeMetrics) -> None:
        self.lake = lake
        self.schedule = schedule
        self.metrics = metrics
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._request = threading.Event()
        self._state = CompactionState(str(schedule) if schedule is not None else None, self._next())
        self._thread = threading.Thread(target=self._run, name="rhei-serve-compaction", daemon=True)

    @property
    def state(self) -> CompactionState:
        with self._lock:
            return self._state

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        """Compact as soon as possible (a request during a run starts another one after it)."""
        log.info("compaction requested", extra={"event": "compaction_requested"})
        self._request.set()

    def stop(self) -> None:
        """Stop scheduling; waits for a run in progress."""
        self._stop.set()
        if self._thread.is_alive():
            if self.state.running:
                log.info("waiting for the compaction in progress to finish", extra={"event": "compaction_waiting"})
            self._thread.join()

    def _next(self) -> datetime | None:
        return self.schedule.next_after(datetime.now(UTC)) if self.schedule is not None else None

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def _run(self) -> None:
        while not self._stop.is_set():
            next_at = self.state.next_at
            remaining = 1.0 if next_at is None else (next_at - datetime.now(UTC)).total_seconds()
            if (next_at is None or remaining > 0) and not self._request.wait(min(max(remaining, 0.0), 1.0)):
                continue
            if self._stop.is_set():
                return
            self._request.clear()
            self._compact()
            self._update(next_at=self._next())

    def _compact(self) -> None:
        self._update(running=True)
        log.info("compaction started", extra={"event": "compaction_started"})
        started = time.perf_counter()
        at = datetime.now(UTC)
        try:
            report = self.lake.compact()
        except Exception as exc:  # noqa: BLE001 - a failed run is reported and the schedule goes on
            info = ErrorInfo.of(exc)
            self.metrics.observe_error("compaction", info)
            log.error(
                "compaction failed: %s",
                summary(exc),
                exc_info=not isinstance(exc, RheiError),
                extra={"event": "compaction_failed", "fields": {"kind": info.kind}},
            )
            self._update(
                running=False,
                failures=self.state.failures + 1,
                last_at=at,
                last_seconds=time.perf_counter() - started,
                last_error=info,
            )
            return
        self.metrics.observe_compaction(report)
        tables = report.tables.values()
        line = (
            f"folded {report.events_folded} events in {len(report.tables)} table(s), "
            f"files {sum(t.files_before for t in tables)} -> {sum(t.files_after for t in tables)}"
        )
        log.info(
            "compaction done in %.2f s: %s",
            report.duration_seconds,
            line,
            extra={
                "event": "compaction",
                "fields": {
                    "seconds": round(report.duration_seconds, 3),
                    "tables": {
                        t.table: {
                            "events_folded": t.events_folded,
                            "files_before": t.files_before,
                            "files_after": t.files_after,
                            "files_vacuumed": t.files_vacuumed,
                            "bytes_removed": t.bytes_removed,
                        }
                        for t in tables
                    },
                },
            },
        )
        self._update(
            running=False,
            runs=self.state.runs + 1,
            last_at=at,
            last_seconds=report.duration_seconds,
            last_summary=line,
            last_error=None,
        )
