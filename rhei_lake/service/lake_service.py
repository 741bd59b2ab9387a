"""Service mode around one open lake: background sync, scheduled compaction, status, metrics, Flight SQL.

:class:`LakeService` drives the lake through its public API only
(``start_sync``, ``add_sync_listener``, ``sync_status``, ``compact``,
``sync_now``, ``close``) and reports what happens through the
``rhei_lake.serve`` logger and :class:`~rhei_lake.service.metrics.LakeMetrics`.
It has no user interface: ``rh serve`` puts a dashboard or structured log
lines on top.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rhei_lake
from rhei_lake.errors import RheiError
from rhei_lake.service.compaction_scheduler import CompactionScheduler, CompactionState
from rhei_lake.service.metrics import LakeMetrics, MetricsServer
from rhei_lake.service.config import ServiceConfig
from rhei_lake.sync.loop import ErrorInfo, summary
from rhei_lake.sync.report import SyncReport
from rhei_lake.sync.status import SyncStatus

log = logging.getLogger("rhei_lake.serve")

RATE_WINDOW = 10.0
"""Seconds over which events/s is averaged."""


@dataclass(frozen=True)
class ServiceSnapshot:
    """Everything a dashboard shows, read at one moment."""

    status: SyncStatus | None
    rates: dict[str, float]
    compaction: CompactionState
    started_at: datetime
    sync_interval: float | None
    metrics_url: str | None
    flight_url: str | None
    status_error: ErrorInfo | None
    stopping: bool


@dataclass
class _Rates:
    """Events committed per table over a sliding window, for events/s."""

    window: float = RATE_WINDOW
    samples: deque[tuple[float, dict[str, int]]] = field(default_factory=deque)

    def add(self, at: float, events: dict[str, int]) -> None:
        self.samples.append((at, events))
        self.prune(at)

    def prune(self, now: float) -> None:
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()

    def per_second(self, now: float, started: float) -> dict[str, float]:
        self.prune(now)
        span = max(1e-9, min(self.window, now - started))
        totals: dict[str, int] = {}
        for _at, events in self.samples:
            for table, count in events.items():
                totals[table] = totals.get(table, 0) + count
        return {table: count / span for table, count in totals.items()}


class LakeService:
    """Runs a lake as a service until :meth:`stop`; see the module docstring.

    ``sync_interval`` is ``None`` for a lake without a source (compaction,
    metrics and Flight SQL only). ``flight`` starts the Flight SQL server.
    """

    def __init__(
        self,
        lake: rhei_lake.Lake,
        config: ServiceConfig,
        *,
        sync_interval: float | None,
        flight: bool = False,
        metrics: LakeMetrics | None = None,
    ) -> None:
        self.lake = lake
        self.config = config
        self.sync_interval = sync_interval
        self.metrics = metrics or LakeMetrics()
        self._flight_wanted = flight
        self._flight: Any = None
        self.flight_abandoned = False  # True when Flight SQL stopped with streams to stalled clients open
        self._metrics_server: MetricsServer | None = None
        self.compaction = CompactionScheduler(lake, config.compaction_schedule, self.metrics)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._rates = _Rates()
        self._status: SyncStatus | None = None
        self._status_error: ErrorInfo | None = None
        self._threads: list[threading.Thread] = []
        self._remove_listener: Callable[[], None] | None = None
        self._started = time.monotonic()
        self.started_at = datetime.now(UTC)

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Start everything; on failure, whatever started is stopped again and the error raised."""
        lake = self.lake
        self.metrics.describe(version=rhei_lake.__version__, storage=lake.location.url, mode=self.mode)
        try:
            if self.config.metrics_port is not None:
                self._metrics_server = self.metrics.serve(self.config.metrics_host, self.config.metrics_port)
            if self._flight_wanted:
                from rhei_lake.flight import serve_flight

                self._flight = serve_flight(lake)
            self._remove_listener = lake.add_sync_listener(self._on_sync)
            log.info(
                "serving %s (%s)%s%s%s",
                lake.location.url,
                self.mode,
                f", sync every {self.sync_interval:g}s" if self.sync_interval is not None else "",
                f", compaction {self.compaction.schedule}" if self.compaction.schedule is not None else "",
                f", metrics at {self.metrics_url}" if self.metrics_url else "",
                extra={"event": "start", "fields": self._start_fields()},
            )
            if self.sync_interval is not None:
                lake.start_sync(self.sync_interval)
            self._refresh_status()
            self._spawn("rhei-serve-status", self._status_loop)
            self.compaction.start()
        except BaseException:
            self._teardown()
            raise

    def stop(self) -> SyncReport | None:
        """Stop cleanly: Flight SQL and the scheduler first, then a final sync, then close the lake.

        Returns the final sync's report (``None`` without a source, or with
        ``final_sync = false`` in the lake's configuration). If the final
        sync fails, the lake is still closed and the error raised: the events
        stay in the source's log for the next start.
        """
        with self._lock:
            if self._stop.is_set():
                return None
            self._stop.set()
        log.info("stopping: finishing work in progress, then a final sync", extra={"event": "stopping"})
        if self._flight is not None:
            self.flight_abandoned = not self._flight.shutdown()
        self.compaction.stop()
        for thread in self._threads:
            thread.join()
        final: SyncReport | None = None
        error: BaseException | None = None
        try:
            if self.sync_interval is not None:
                self.lake.stop_sync()
            if self.sync_interval is not None and self.lake.config.final_sync:
                final = self.lake.sync_now()
                log.info(
                    "final sync: %s",
                    final,
                    extra={"event": "final_sync", "fields": {"events": final.events, "tables": _table_events(final)}},
                )
        except RheiError as exc:
            error = exc
            log.error(
                "final sync failed; the events stay in the source's log for the next start: %s",
                summary(exc),
                extra={"event": "final_sync_failed", "fields": {"kind": type(exc).__name__}},
            )
        finally:
            try:
                self._teardown(final_sync=False)
            except RheiError as exc:
                error = error or exc
        if error is not None:
            raise error
        log.info("stopped", extra={"event": "stopped"})
        return final

    def _teardown(self, final_sync: bool = False) -> None:
        self._stop.set()
        self.compaction.stop()
        if self._remove_listener is not None:
            self._remove_listener()
        if self._flight is not None:
            self._flight.shutdown()
        try:
            self.lake.close(final_sync=final_sync)
        finally:
            if self._metrics_server is not None:
                self._metrics_server.close()

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- what the UI reads -----------------------------------------------------
    @property
    def mode(self) -> str:
        config = self.lake.config
        if config.oltp_path is not None:
            return "htap"
        if config.source is not None:
            return "sidecar"
        return "lake only"

    @property
    def metrics_url(self) -> str | None:
        return self._metrics_server.url if self._metrics_server is not None else None

    @property
    def flight_url(self) -> str | None:
        return self._flight.location if self._flight is not None else None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> ServiceSnapshot:
        now = time.monotonic()
        with self._lock:
            rates = self._rates.per_second(now, self._started)
            return ServiceSnapshot(
                status=self._status,
                rates=rates,
                compaction=self.compaction.state,
                started_at=self.started_at,
                sync_interval=self.sync_interval,
                metrics_url=self.metrics_url,
                flight_url=self.flight_url,
                status_error=self._status_error,
                stopping=self._stop.is_set(),
            )

    def compact_now(self) -> None:
        """Compact as soon as possible, schedule or not (a request during a run starts another after it)."""
        self.compaction.request()

    # -- sync events -----------------------------------------------------------
    def _on_sync(self, report: SyncReport | None, error: ErrorInfo | None) -> None:
        if report is not None:
            self.metrics.observe_sync(report)
            events = _table_events(report)
            if events:
                with self._lock:
                    self._rates.add(time.monotonic(), events)
                log.info(
                    "synced %d events in %.1f ms (%s)",
                    report.events,
                    report.duration_seconds * 1000,
                    ", ".join(f"{t}: {n}" for t, n in events.items()),
                    extra={
                        "event": "sync",
                        "fields": {
                            "events": report.events,
                            "seconds": round(report.duration_seconds, 6),
                            "tables": events,
                        },
                    },
                )
        elif error is not None:
            self.metrics.observe_error("sync", error)

    # -- status ----------------------------------------------------------------
    def _status_loop(self) -> None:
        last_heartbeat = time.monotonic()
        while not self._stop.wait(self.config.status_interval):
            self._refresh_status()
            every = self.config.heartbeat_interval
            if every and time.monotonic() - last_heartbeat >= every:
                last_heartbeat = time.monotonic()
                self._heartbeat()

    def _refresh_status(self) -> None:
        try:
            status = self.lake.sync_status()
        except Exception as exc:  # noqa: BLE001 - the store may be unreachable for a while; keep serving
            info = ErrorInfo.of(exc)
            with self._lock:
                repeated = self._status_error is not None and self._status_error.message == info.message
                self._status_error = info
            self.metrics.observe_error("status", info)
            if not repeated:
                log.warning(
                    "reading the sync status failed: %s",
                    summary(exc),
                    exc_info=not isinstance(exc, RheiError),
                    extra={"event": "status_failed"},
                )
            return
        self.metrics.observe_status(status)
        with self._lock:
            self._status = status
            self._status_error = None

    def _heartbeat(self) -> None:
        status = self._status
        if status is None:
            return
        level = logging.ERROR if status.loop.state == "failed" else logging.INFO
        tables = {
            name: {
                "synced_seq": t.synced_seq,
                "lag_events": t.lag_events,
                "lag_seconds": t.lag_seconds,
                "unfolded_events": t.unfolded_events,
            }
            for name, t in status.tables.items()
        }
        log.log(
            level,
            "status: loop %s, lag %s events / %s s%s",
            status.loop.state,
            status.lag_events if status.lag_events is not None else "-",
            f"{status.lag_seconds:.1f}" if status.lag_seconds is not None else "-",
            f", last error: {status.loop.last_error}" if status.loop.last_error else "",
            extra={
                "event": "status",
                "fields": {
                    "loop": status.loop.state,
                    "lag_events": status.lag_events,
                    "lag_seconds": status.lag_seconds,
                    "tables": tables,
                },
            },
        )

    def _start_fields(self) -> dict[str, Any]:
        return {
            "storage": self.lake.location.url,
            "mode": self.mode,
            "tables": self.lake.tables(),
            "sync_interval": self.sync_interval,
            "compaction": self.compaction.state.schedule,
            "metrics": self.metrics_url,
            "flight": self.flight_url,
        }


def _table_events(report: SyncReport) -> dict[str, int]:
    return {
        name: part.events + part.snapshot_rows
        for name, part in report.tables.items()
        if part.events + part.snapshot_rows
    }
