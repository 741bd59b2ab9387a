"""The service's compaction scheduler: runs on its schedule and on request, reports failures, never overlaps."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from rhei_lake.errors import StorageUnavailableError
from rhei_lake.service.compaction_scheduler import CompactionScheduler
from rhei_lake.service.metrics import LakeMetrics
from rhei_lake.service.schedule import IntervalSchedule
from tests.service.serve_process import value
from tests.support.waiting import wait_for


class FakeLake:
    """Just ``compact()``: returns a report, or raises the queued errors first; records overlap."""

    def __init__(self, errors=(), seconds: float = 0.0) -> None:
        self.errors = list(errors)
        self.seconds = seconds
        self.calls = 0
        self.active = 0
        self.overlapped = False
        self.lock = threading.Lock()

    def compact(self):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.overlapped |= self.active > 1
        try:
            time.sleep(self.seconds)
            if self.errors:
                raise self.errors.pop(0)
            table = SimpleNamespace(
                table="orders",
                events_folded=5,
                files={"changes": (3, 1)},
                files_vacuumed=2,
                bytes_removed=10,
                files_before=3,
                files_after=1,
            )
            return SimpleNamespace(tables={"orders": table}, duration_seconds=self.seconds, events_folded=5)
        finally:
            with self.lock:
                self.active -= 1


def _samples(metrics):
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(metrics.exposition().decode())
        for s in f.samples
    }


def test_runs_on_its_interval_reports_failures_and_goes_on():
    lake, metrics = FakeLake(errors=[StorageUnavailableError("s3 is down")]), LakeMetrics()
    scheduler = CompactionScheduler(lake, IntervalSchedule(0.1), metrics)
    assert scheduler.state.schedule == "every 0.1s" and scheduler.state.next_at is not None
    scheduler.start()
    try:
        wait_for(lambda: scheduler.state.runs >= 2, timeout=10, what="two scheduled runs")
    finally:
        scheduler.stop()
    state = scheduler.state
    assert state.failures == 1 and state.last_error is None and state.last_summary.startswith("folded 5 events")
    s = _samples(metrics)
    assert value(s, "rhei_compaction_runs_total", result="error") == 1
    assert value(s, "rhei_errors_total", operation="compaction", kind="StorageUnavailableError") == 1
    assert value(s, "rhei_compaction_runs_total", result="ok") == state.runs
    assert value(s, "rhei_compaction_events_folded_total", table="orders") == 5 * state.runs


def test_without_a_schedule_it_runs_only_on_request_and_stop_waits_for_the_run():
    lake = FakeLake(seconds=0.5)
    scheduler = CompactionScheduler(lake, None, LakeMetrics())
    scheduler.start()
    time.sleep(1.2)
    assert lake.calls == 0 and scheduler.state.next_at is None
    scheduler.request()
    scheduler.request()  # while one is pending: still one run
    wait_for(lambda: scheduler.state.running, timeout=10, what="the requested run to start")
    scheduler.stop()  # returns only after the run in progress finished
    assert lake.active == 0 and scheduler.state.runs == 1 and not scheduler.state.running
    assert lake.calls == 1 and not lake.overlapped
