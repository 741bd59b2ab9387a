"""Prometheus metrics of a served lake, fed only from the library's public report and status objects.

:class:`LakeMetrics` turns each :class:`~rhei_lake.SyncReport` (every sync
cycle), :class:`~rhei_lake.ErrorInfo` (every failed cycle or compaction),
:class:`~rhei_lake.SyncStatus` (lag and sizes, refreshed periodically) and
compaction report into metrics in its own registry, and :meth:`LakeMetrics.serve`
exposes them on ``/metrics``. Names follow Prometheus conventions: the
``rhei_`` prefix, ``_total`` for counters, ``_seconds`` for durations.
Labels carry table names and error class names only, never option values,
so no secret can reach a scrape.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest, start_http_server

from rhei_lake.errors import ConfigError
from rhei_lake.sync.loop import ErrorInfo
from rhei_lake.sync.report import SyncReport
from rhei_lake.sync.status import SyncStatus

LOOP_STATES = ["stopped", "running", "backing_off", "failed"]
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COMPACTION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; :meth:`close` stops it."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class LakeMetrics:
    """The metrics of one lake in service mode, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Info("rhei", "The served lake: rhei_lake version, storage URL and mode.", registry=r)
        self.sync_cycles = Counter(
            "rhei_sync_cycles_total", "Sync cycles run, by result (ok or error).", ["result"], registry=r
        )
        self.events_synced = Counter(
            "rhei_sync_events_total",
            "Change events committed to the lake (snapshot rows included).",
            ["table"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "rhei_sync_commit_seconds",
            "Time to commit one table's batch of events to the store.",
            ["table"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "rhei_sync_cycle_seconds",
            "Duration of a successful sync cycle (all tables).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag_events = Gauge(
            "rhei_sync_lag_events", "Captured change events not committed to the lake yet.", ["table"], registry=r
        )
        self.lag_seconds = Gauge(
            "rhei_sync_lag_seconds",
            "Age of the oldest captured event not committed yet (0 when caught up).",
            ["table"],
            registry=r,
        )
        self.watermark = Gauge(
            "rhei_sync_watermark", "The synced watermark: highest change sequence committed.", ["table"], registry=r
        )
        self.last_commit = Gauge(
            "rhei_sync_last_commit_timestamp_seconds",
            "Unix time of the last commit of this process.",
            ["table"],
            registry=r,
        )
        self.unfolded = Gauge(
            "rhei_unfolded_events", "Change events not folded into the history table yet.", ["table"], registry=r
        )
        self.tail_segments = Gauge(
            "rhei_tail_segments", "Hot-path segments not yet flushed into the Delta changelog.", ["table"], registry=r
        )
        self.tail_age = Gauge(
            "rhei_tail_age_seconds",
            "Age of the oldest synced event not yet in the Delta changelog, which engines reading the Delta "
            "tables directly do not see yet (0 when the tail is empty).",
            ["table"],
            registry=r,
        )
        self.changelog_files = Gauge(
            "rhei_changelog_files", "Data files of the table's Delta changelog.", ["table"], registry=r
        )
        self.loop_state = Enum(
            "rhei_sync_loop_state", "State of the background sync loop.", states=LOOP_STATES, registry=r
        )
        self.loop_failures = Gauge(
            "rhei_sync_loop_consecutive_failures", "Failed sync cycles since the last successful one.", registry=r
        )
        self.compaction_runs = Counter(
            "rhei_compaction_runs_total", "Compaction runs, by result (ok or error).", ["result"], registry=r
        )
        self.compaction_seconds = Histogram(
            "rhei_compaction_duration_seconds",
            "Duration of a compaction run (all tables).",
            buckets=_COMPACTION_BUCKETS,
            registry=r,
        )
        self.compaction_events = Counter(
            "rhei_compaction_events_folded_total",
            "Change events folded into history or current rows.",
            ["table"],
            registry=r,
        )
        self.compaction_files_removed = Counter(
            "rhei_compaction_files_removed_total",
            "Data files a compaction took out of the tables' snapshots.",
            ["table"],
            registry=r,
        )
        self.compaction_files_vacuumed = Counter(
            "rhei_compaction_files_vacuumed_total", "Unreferenced files deleted by vacuum.", ["table"], registry=r
        )
        self.compaction_bytes_removed = Counter(
            "rhei_compaction_bytes_removed_total", "Bytes deleted by vacuum.", ["table"], registry=r
        )
        self.table_files = Gauge(
            "rhei_table_files",
            "Data files of each Delta table after the last compaction.",
            ["table", "store"],
            registry=r,
        )
        self.errors = Counter(
            "rhei_errors_total",
            "Failures, by operation (sync, compaction, status) and error class.",
            ["operation", "kind"],
            registry=r,
        )
        self.sync_cycles.labels("ok")
        self.sync_cycles.labels("error")
        self.compaction_runs.labels("ok")
        self.compaction_runs.labels("error")

    def describe(self, *, version: str, storage: str, mode: str) -> None:
        """Record what is served (``storage`` must be a URL without secrets)."""
        self.info.info({"version": version, "storage": storage, "mode": mode})

    # -- feeding ---------------------------------------------------------------
    def observe_sync(self, report: SyncReport) -> None:
        """One successful sync cycle."""
        self.sync_cycles.labels("ok").inc()
        self.cycle_seconds.observe(report.duration_seconds)
        for name, part in report.tables.items():
            committed = part.events + part.snapshot_rows
            self.watermark.labels(name).set(part.watermark)
            if committed:
                self.events_synced.labels(name).inc(committed)
                self.commit_seconds.labels(name).observe(part.commit_seconds)

    def observe_error(self, operation: str, error: ErrorInfo) -> None:
        """One failure of ``operation`` (``sync``, ``compaction``, ``status``)."""
        self.errors.labels(operation, error.kind).inc()
        if operation == "sync":
            self.sync_cycles.labels("error").inc()
        elif operation == "compaction":
            self.compaction_runs.labels("error").inc()

    def observe_status(self, status: SyncStatus) -> None:
        """The latest :meth:`~rhei_lake.Lake.sync_status`: lag, watermarks, sizes, loop state."""
        for name, table in status.tables.items():
            if table.lag_events is not None:
                self.lag_events.labels(name).set(table.lag_events)
            if table.lag_seconds is not None:
                self.lag_seconds.labels(name).set(table.lag_seconds)
            self.watermark.labels(name).set(table.synced_seq)
            if table.last_commit_at is not None:
                self.last_commit.labels(name).set(table.last_commit_at.timestamp())
            self.unfolded.labels(name).set(table.unfolded_events)
            self.tail_segments.labels(name).set(table.tail_segments)
            self.tail_age.labels(name).set(table.tail_age_seconds)
            self.changelog_files.labels(name).set(table.changelog_files)
        self.loop_state.state(status.loop.state)
        self.loop_failures.set(status.loop.consecutive_failures)

    def observe_compaction(self, report: Any) -> None:
        """One successful compaction (a ``CompactionReport``)."""
        self.compaction_runs.labels("ok").inc()
        self.compaction_seconds.observe(report.duration_seconds)
        for name, table in report.tables.items():
            self.compaction_events.labels(name).inc(table.events_folded)
            removed = sum(max(0, before - after) for before, after in table.files.values())
            self.compaction_files_removed.labels(name).inc(removed)
            self.compaction_files_vacuumed.labels(name).inc(table.files_vacuumed)
            self.compaction_bytes_removed.labels(name).inc(table.bytes_removed)
            for store, (_before, after) in table.files.items():
                self.table_files.labels(name, store).set(after)

    # -- exposing --------------------------------------------------------------
    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (what ``/metrics`` returns)."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve ``/metrics`` over HTTP from a daemon thread; a busy port is a ConfigError."""
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"metrics_port: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return MetricsServer(host, server.server_port, server, thread)
