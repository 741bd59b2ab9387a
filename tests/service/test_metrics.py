"""Prometheus metrics fed from the public report and status objects."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from rhei_lake import ErrorInfo, LoopStatus, SyncReport, SyncStatus, TableStatus, TableSyncReport
from rhei_lake.errors import StorageUnavailableError
from rhei_lake.service.metrics import LakeMetrics
from tests.service.serve_process import scrape, value


def _samples(metrics: LakeMetrics) -> dict:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _status(lag: int) -> SyncStatus:
    table = TableStatus(
        table="orders",
        synced_seq=42,
        lag_events=lag,
        lag_seconds=1.5 if lag else 0.0,
        last_commit_at=datetime(2026, 5, 1, tzinfo=UTC),
        last_commit_seconds=0.01,
        events_synced=40,
        last_error=None,
        tail_segments=3,
        tail_rows=12,
        changelog_rows=30,
        changelog_files=2,
        folded_seq=None,
        unfolded_events=42,
        tail_age_seconds=2.5,
    )
    loop = LoopStatus("backing_off" if lag else "running", 1.0, 5, 1 if lag else 0, 0.5, None)
    return SyncStatus({"orders": table}, loop, 42, lag, 1.5, None, None, 5, False, None)


def test_sync_reports_errors_and_status_become_metrics():
    metrics = LakeMetrics()
    metrics.observe_sync(
        SyncReport(
            {
                "orders": TableSyncReport("orders", 30, 30, snapshot_rows=10, commit_seconds=0.02),
                "idle": TableSyncReport("idle", 0, 7),
            },
            0.05,
        )
    )
    metrics.observe_sync(SyncReport({"orders": TableSyncReport("orders", 2, 42, commit_seconds=0.004)}, 0.01))
    metrics.observe_error("sync", ErrorInfo.of(StorageUnavailableError("s3 down")))
    metrics.observe_status(_status(lag=7))
    s = _samples(metrics)
    assert value(s, "rhei_sync_events_total", table="orders") == 42
    assert value(s, "rhei_sync_events_total", table="idle") is None  # nothing committed: no sample
    assert value(s, "rhei_sync_commit_seconds_count", table="orders") == 2
    assert value(s, "rhei_sync_commit_seconds_sum", table="orders") == 0.024
    assert value(s, "rhei_sync_commit_seconds_bucket", table="orders", le="0.005") == 1
    assert (
        value(s, "rhei_sync_cycles_total", result="ok") == 2 and value(s, "rhei_sync_cycles_total", result="error") == 1
    )
    assert value(s, "rhei_errors_total", operation="sync", kind="StorageUnavailableError") == 1
    assert (
        value(s, "rhei_sync_lag_events", table="orders") == 7
        and value(s, "rhei_sync_lag_seconds", table="orders") == 1.5
    )
    assert value(s, "rhei_sync_watermark", table="orders") == 42 and value(s, "rhei_sync_watermark", table="idle") == 7
    assert (
        value(s, "rhei_unfolded_events", table="orders") == 42 and value(s, "rhei_tail_segments", table="orders") == 3
    )
    assert value(s, "rhei_tail_age_seconds", table="orders") == 2.5
    assert (
        value(s, "rhei_sync_last_commit_timestamp_seconds", table="orders")
        == datetime(2026, 5, 1, tzinfo=UTC).timestamp()
    )
    assert value(s, "rhei_sync_loop_state", rhei_sync_loop_state="backing_off") == 1
    assert value(s, "rhei_sync_loop_state", rhei_sync_loop_state="running") == 0
    metrics.observe_status(_status(lag=0))
    s = _samples(metrics)
    assert (
        value(s, "rhei_sync_lag_events", table="orders") == 0 and value(s, "rhei_sync_loop_consecutive_failures") == 0
    )


class _TableReport:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_compaction_reports_become_metrics():
    metrics = LakeMetrics()
    report = _TableReport(
        events_folded=100, files={"changes": (40, 1), "history": (0, 1)}, files_vacuumed=39, bytes_removed=4096
    )
    metrics.observe_compaction(_TableReport(duration_seconds=2.0, tables={"orders": report}))
    metrics.observe_error("compaction", ErrorInfo.of(RuntimeError("boom")))
    s = _samples(metrics)
    assert value(s, "rhei_compaction_runs_total", result="ok") == 1
    assert value(s, "rhei_compaction_runs_total", result="error") == 1
    assert value(s, "rhei_compaction_duration_seconds_count") == 1
    assert value(s, "rhei_compaction_events_folded_total", table="orders") == 100
    assert value(s, "rhei_compaction_files_removed_total", table="orders") == 39
    assert value(s, "rhei_compaction_files_vacuumed_total", table="orders") == 39
    assert value(s, "rhei_compaction_bytes_removed_total", table="orders") == 4096
    assert value(s, "rhei_table_files", table="orders", store="history") == 1
    assert value(s, "rhei_errors_total", operation="compaction", kind="RuntimeError") == 1


def test_names_follow_prometheus_conventions():
    metrics = LakeMetrics()
    metrics.describe(version="0.1.0", storage="s3://bucket/lake", mode="htap")
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        assert family.name.startswith("rhei_"), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert family.documentation, family.name


def test_the_endpoint_serves_the_registry_over_http():
    metrics = LakeMetrics()
    metrics.describe(version="0.1.0", storage="./lake", mode="lake only")
    server = metrics.serve("127.0.0.1", 0)
    try:
        samples = scrape(server.url)
        assert value(samples, "rhei_info", version="0.1.0", storage="./lake", mode="lake only") == 1
    finally:
        server.close()
