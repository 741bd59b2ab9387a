"""``rh serve --headless``: background sync, structured log lines, /metrics, Flight SQL, clean stops."""

from __future__ import annotations

import signal
import sqlite3

import pytest

import rhei_lake
from tests.flight.flight_clients import adbc_connect
from tests.service.serve_process import ServeProcess, scrape, value
from tests.support.rh import one_error_line, rh
from tests.support.waiting import wait_for


def _htap_lake(tmp_path, extra: str = "") -> tuple[str, str]:
    db, lake = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=lake) as setup:
        setup.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL)")
        setup.register_table("events")
    (tmp_path / "serve.toml").write_text(
        f'oltp_path = "{db}"\nstorage = "{lake}"\nsync_interval = 0.2\nflight_port = 0\n'
        f"[serve]\nmetrics_port = 0\nstatus_interval = 0.2\n{extra}"
    )
    return db, lake


def _insert(db: str, ids: range) -> None:
    conn = sqlite3.connect(db, timeout=30)
    with conn:
        conn.executemany("INSERT INTO events VALUES (?, 'click')", [(i,) for i in ids])
    conn.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_after_a_final_sync_and_metrics_move(tmp_path, sig):
    db, lake = _htap_lake(tmp_path)
    serve = ServeProcess("--config", "serve.toml", cwd=tmp_path)
    try:
        start = serve.event("start")
        assert start["mode"] == "htap" and start["tables"] == ["events"]
        metrics = start["metrics"]
        before = scrape(metrics)
        assert value(before, "rhei_sync_events_total", table="events") in (None, 0.0)

        _insert(db, range(0, 200))
        synced = wait_for(
            lambda: (s := scrape(metrics)) and (value(s, "rhei_sync_events_total", table="events") or 0) >= 200 and s
        )
        assert value(synced, "rhei_sync_commit_seconds_count", table="events") >= 1
        assert value(synced, "rhei_sync_cycles_total", result="ok") > value(
            before, "rhei_sync_cycles_total", result="ok"
        )
        caught_up = wait_for(
            lambda: (
                (s := scrape(metrics))
                and value(s, "rhei_sync_lag_events", table="events") == 0
                and value(s, "rhei_sync_watermark", table="events") >= 200
                and s
            )
        )
        assert value(caught_up, "rhei_sync_lag_seconds", table="events") == 0
        assert value(caught_up, "rhei_sync_loop_state", rhei_sync_loop_state="running") == 1
        assert value(caught_up, "rhei_errors_total", operation="sync", kind="StorageUnavailableError") is None

        with adbc_connect(start["flight"]) as conn, conn.cursor() as cur:  # Flight SQL, served alongside
            cur.execute("SELECT count(*) AS n FROM events")
            assert cur.fetch_arrow_table().to_pylist() == [{"n": 200}]

        _insert(db, range(200, 1200))  # and stop at once: the final sync must commit these
        assert serve.stop(sig) == 0, serve.stderr
    finally:
        serve.kill()
    events = [line["event"] for line in serve.lines]
    assert events[-2:] == ["final_sync", "stopped"] and "stopping" in events, events
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in serve.lines)
    # Every cycle that committed events logs a "sync" line, the final sync's included (it logs "final_sync"
    # too): which cycle took the last 1000 depends on whether the loop ran before the signal.
    assert sum(line.get("events", 0) for line in serve.lines if line["event"] == "sync") == 1200
    with rhei_lake.open(storage=lake) as reopened:
        rows = reopened.query("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events").to_pylist()
        assert rows == [{"n": 1200, "ids": 1200}]
        changes = reopened.query("SELECT count(*) AS n, max(_rhei_seq) AS top FROM events_changes").to_pylist()[0]
        assert changes["n"] == 1200
    left, newest = sqlite3.connect(db).execute("SELECT count(*), max(seq) FROM _rhei_cdc_log").fetchone()
    assert left <= 1 and newest <= changes["top"]  # pruned (the log keeps its newest row by design)


def test_serve_refuses_a_busy_metrics_port_in_one_line(tmp_path):
    import socket

    _htap_lake(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = rh("serve", "--headless", "--config", "serve.toml", "--metrics-port", str(port), cwd=tmp_path)
    assert f"metrics_port: cannot listen on 127.0.0.1:{port}" in one_error_line(result)


def test_serve_with_a_bad_environment_value_names_the_variable(tmp_path):
    _htap_lake(tmp_path)
    result = rh("serve", "--headless", "--config", "serve.toml", cwd=tmp_path, env={"RHEI_STATUS_INTERVAL": "often"})
    line = one_error_line(result)
    assert "serve.status_interval" in line and "RHEI_STATUS_INTERVAL" in line


def test_a_terminal_sync_error_shows_in_metrics_and_the_exit_code(tmp_path):
    db, lake = _htap_lake(tmp_path, extra="heartbeat_interval = 0.5\n")
    serve = ServeProcess("--config", "serve.toml", cwd=tmp_path)
    try:
        metrics = serve.event("start")["metrics"]
        _insert(db, range(0, 10))
        conn = sqlite3.connect(db)
        with conn:  # SQLite lets a TEXT column hold a blob: the sync stops on it, nothing is skipped
            conn.execute("INSERT INTO events VALUES (10, x'00ff')")
        conn.close()
        failed = wait_for(
            lambda: (
                (s := scrape(metrics)) and value(s, "rhei_sync_loop_state", rhei_sync_loop_state="failed") == 1 and s
            )
        )
        assert value(failed, "rhei_errors_total", operation="sync", kind="TypeMismatchError") >= 1
        assert value(failed, "rhei_sync_cycles_total", result="error") >= 1
        status = serve.event("status", where=lambda line: line["loop"] == "failed")
        assert status["level"] == "error" and "TypeMismatchError" in status["msg"]
        assert serve.stop() == 1  # the final sync fails on the same event: not a clean stop
    finally:
        serve.kill()
    assert serve.stderr.count("error:") == 1 and "kind" in serve.stderr and "Traceback" not in serve.stderr, (
        serve.stderr
    )
    assert serve.lines[-1]["event"] == "final_sync_failed"
    with rhei_lake.open(storage=lake) as reopened:  # what came before the bad event is committed
        assert reopened.query("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 10}]


def test_a_lake_without_a_source_serves_metrics_only(tmp_path):
    _htap_lake(tmp_path)
    serve = ServeProcess("--storage", "lake", "--metrics-port", "0", cwd=tmp_path)
    try:
        start = serve.event("start")
        assert start["mode"] == "lake only" and start["tables"] == ["events"] and start["sync_interval"] is None
        # The table gauges come with the first status refresh, which may follow the start line.
        samples = wait_for(
            lambda: (
                (s := scrape(start["metrics"])) and value(s, "rhei_sync_watermark", table="events") is not None and s
            )
        )
        assert value(samples, "rhei_sync_loop_state", rhei_sync_loop_state="stopped") == 1
        assert serve.stop() == 0
    finally:
        serve.kill()
    assert [line["event"] for line in serve.lines][-2:] == ["stopping", "stopped"]
