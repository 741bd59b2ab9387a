"""Bounded staleness: an idle table's tail reaches Delta within tail_flush_interval, in-process and under rh serve."""

from __future__ import annotations

import time

from deltalake import DeltaTable

import rhei_lake
from tests.service.serve_process import ServeProcess, scrape, value
from tests.service.test_serve import _htap_lake, _insert
from tests.support.outside import table_uri
from tests.support.waiting import wait_for

INTERVAL = 1.0


def _delta_top(url: str, table: str) -> int:
    dt = DeltaTable(table_uri(url, table, "changes"))
    return max(dt.to_pyarrow_table(columns=["_rhei_seq"]).column(0).to_pylist(), default=0)


def test_an_idle_tables_tail_reaches_delta_while_another_table_stays_busy(tmp_path):
    url = str(tmp_path / "lake")
    lake = rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"),
        storage=url,
        sync_interval=0.1,
        tail_flush_interval=INTERVAL,
        tail_flush_segments=10_000,
    )
    try:
        lake.execute("CREATE TABLE quiet (id INTEGER PRIMARY KEY, v TEXT)")
        lake.execute("CREATE TABLE busy (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("quiet")
        lake.register_table("busy")
        for i in range(20):
            lake.execute("INSERT INTO quiet VALUES (?, 'x')", (i,))
        lake.sync_now()
        synced_at = time.monotonic()
        quiet = lake.sync_status().tables["quiet"]
        assert quiet.tail_rows == 20 and quiet.tail_age_seconds < INTERVAL
        assert _delta_top(url, "quiet") < quiet.synced_seq, "right after the sync the events wait in the tail"
        n = 0
        while time.monotonic() - synced_at < INTERVAL + 3:  # the busy table keeps the loop committing
            lake.execute("INSERT INTO busy VALUES (?, 'y')", (n,))
            n += 1
            if _delta_top(url, "quiet") == quiet.synced_seq:
                break
            time.sleep(0.05)
        waited = time.monotonic() - synced_at
        assert _delta_top(url, "quiet") == quiet.synced_seq, "the idle table's tail never reached Delta"
        assert waited >= INTERVAL * 0.9, f"flushed after {waited:.2f}s, before the interval: size thresholds fired?"
        status = lake.sync_status()
        assert status.tables["quiet"].tail_age_seconds == 0.0 and status.tables["quiet"].tail_rows == 0
        assert status.tail_age_seconds < INTERVAL + 1
    finally:
        lake.close()


def test_rh_serve_flushes_an_idle_tail_and_reports_its_age(tmp_path):
    db, url = _htap_lake(tmp_path)
    serve = ServeProcess("--config", "serve.toml", cwd=tmp_path, env={"RHEI_TAIL_FLUSH_INTERVAL": "2"})
    try:
        metrics = serve.event("start")["metrics"]
        _insert(db, range(50))
        waiting = wait_for(
            lambda: (s := scrape(metrics)) and (value(s, "rhei_tail_age_seconds", table="events") or 0) > 0 and s,
            what="a tail age above 0",
        )
        top = value(waiting, "rhei_sync_watermark", table="events")
        wait_for(lambda: _delta_top(url, "events") >= top, timeout=15, what="the tail flushed into Delta")
        wait_for(lambda: value(scrape(metrics), "rhei_tail_age_seconds", table="events") == 0, what="age back to 0")
    finally:
        serve.stop()
        serve.kill()
