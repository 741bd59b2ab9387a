"""The ``rh serve`` dashboard, driven in a real terminal (tmux): what it shows, its keys, a clean stop."""

from __future__ import annotations

import re
import signal
import sqlite3

import rhei_lake
from tests.support.rh import RH, ROOT
from tests.support.tmux import Terminal


def _row(screen: str, table: str) -> dict[str, str]:
    """The dashboard's row of ``table``, by column heading."""
    lines = [line.strip().strip("┃│").strip() for line in screen.splitlines()]  # with or without the box's edges
    header = next((line for line in lines if line.startswith("table") and "┃" in line), None)
    row = next((line for line in lines if line.startswith(table + " ") and "│" in line), None)
    if header is None or row is None:
        return {}
    names = [cell.strip() for cell in header.split("┃")]
    return dict(zip(names, (cell.strip() for cell in row.split("│"))))


def test_dashboard_shows_tables_lag_throughput_and_log_and_quits_cleanly(tmp_path):
    db, lake = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=lake) as setup:
        setup.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        setup.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        setup.register_table("orders")
        setup.register_table("customers")
    (tmp_path / "serve.toml").write_text(
        f'oltp_path = "{db}"\nstorage = "{lake}"\nsync_interval = 0.3\n[serve]\nstatus_interval = 0.3\n'
    )
    term = Terminal(tmp_path, width=150, height=40)
    term.start([str(RH), "serve", "--config", "serve.toml"], env={"PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    try:
        screen = term.wait_for("sync: running every 0.3s")
        assert "rh serve" in screen and "(htap)" in screen and "q quit" in screen
        for table in ("orders", "customers"):
            cells = _row(screen, table)
            assert cells["lag"] == "0" and cells["synced"] == "0" and cells["committed"] == "-", screen

        conn = sqlite3.connect(db)
        with conn:
            conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i * 1.5) for i in range(1, 501)])
        conn.close()
        # orders: no lag, a non-zero events/s, a last commit, 500 events synced, and a log line about them
        screen = term.wait_for(lambda s: _row(s, "orders").get("synced") == "500" and "synced 500 events" in s)
        orders = _row(screen, "orders")
        assert orders["lag"] == "0" and orders["lag s"] == "0.0" and float(orders["ev/s"]) > 0, screen
        assert re.fullmatch(r"[\d.]+s ago", orders["committed"]) and float(orders["ms"]) > 0, screen
        assert int(orders["unfolded"].replace(",", "")) >= 500, screen
        assert _row(screen, "customers")["synced"] == "0"
        assert "recent log" in screen and "serving" in screen

        term.type("c")  # compact now: the request shows in the recent log
        term.wait_for("compaction requested")

        term.type("q")
        assert term.wait_exit() == 0
    finally:
        term.close()
    with rhei_lake.open(storage=lake) as reopened:
        assert reopened.query("SELECT count(*) AS n FROM orders").to_pylist() == [{"n": 500}]


def test_dashboard_stops_on_sigterm_after_a_final_sync(tmp_path):
    db, lake = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=lake) as setup:
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        setup.register_table("t")
    term = Terminal(tmp_path, width=120, height=30)
    pid_file = tmp_path / "pid"
    term.start(
        [
            "sh",
            "-c",
            f'echo $$ > {pid_file}; exec "$0" "$@"',
            str(RH),
            "serve",
            "--db",
            db,
            "--storage",
            lake,
            "--sync-interval",
            "30",
        ],
        env={"PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    try:
        term.wait_for("q quit")
        conn = sqlite3.connect(db)
        with conn:
            conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        conn.close()
        import os

        os.kill(int(pid_file.read_text()), signal.SIGTERM)  # long before the next 30 s cycle
        assert term.wait_exit() == 0
        screen = term.screen()
        assert "final sync: synced 100 events" in screen, screen
    finally:
        term.close()
    with rhei_lake.open(storage=lake) as reopened:
        assert reopened.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 100}]


def test_rh_dashboard_follows_a_lake_another_process_writes_and_quits_on_q(tmp_path):
    db, lake = str(tmp_path / "app.db"), str(tmp_path / "lake")
    writer = rhei_lake.open(oltp_path=db, storage=lake)
    try:
        writer.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT)")
        writer.register_table("events")
        term = Terminal(tmp_path, width=120, height=30)
        term.start(
            [str(RH), "dashboard", "--storage", lake, "--interval", "0.3"], env={"PYTHONPATH": str(ROOT)}, cwd=tmp_path
        )
        try:
            screen = term.wait_for(lambda s: "synced" in _row(s, "events"))
            assert "rh dashboard (read-only)" in screen, screen
            before = int(_row(screen, "events")["synced"].replace(",", ""))
            writer.execute_batch([("INSERT INTO events VALUES (?, ?)", (i, "k")) for i in range(1, 251)])
            writer.sync_now()
            term.wait_for(lambda s: _row(s, "events").get("synced", "").replace(",", "") == str(before + 250))
            term.type("q")
            assert term.wait_exit() == 0
        finally:
            term.close()
        writer.execute("INSERT INTO events VALUES (251, 'after')")
        assert writer.sync_now().events == 1  # the dashboard never held the writer lease
    finally:
        writer.close()
