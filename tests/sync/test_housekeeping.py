"""Background upkeep: tails are folded into Delta and the CDC log pruned without delaying syncs."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing

import rhei_lake
from rhei_lake.sync.housekeeping import Housekeeper
from tests.support.waiting import wait_for


def test_jobs_are_keyed_and_failures_do_not_stop_the_thread():
    keeper = Housekeeper()
    gate = threading.Event()
    ran: list[str] = []
    keeper.submit("slow", lambda: (gate.wait(5), ran.append("slow")))
    keeper.submit("a", lambda: ran.append("a"))
    keeper.submit("a", lambda: ran.append("a-again"))  # already waiting: dropped
    keeper.submit("boom", lambda: 1 / 0)
    keeper.submit("b", lambda: ran.append("b"))
    gate.set()
    assert keeper.wait_idle(5)
    assert ran == ["slow", "a", "b"]
    assert isinstance(keeper.last_error, ZeroDivisionError)
    keeper.close()


def test_tails_are_flushed_and_the_log_pruned_in_the_background(tmp_path):
    db = tmp_path / "app.db"
    with rhei_lake.open(
        oltp_path=str(db), storage=str(tmp_path / "lake"), tail_flush_segments=4, prune_interval=0
    ) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        for i in range(12):
            lake.execute("INSERT INTO t VALUES (?, 'x')", (i,))
            lake.sync_now()
            # readers never see the folded rows twice, even while a flush runs
            assert lake.query("SELECT count(*) AS n FROM t_changes").to_pylist() == [{"n": i + 1}]
        assert lake.sync_engine.wait_idle(30)
        status = lake.sync_status().tables["t"]
        assert status.changelog_rows > 0 and status.tail_segments < 4

        def log_rows() -> int:
            with closing(sqlite3.connect(db)) as conn:
                return conn.execute("SELECT count(*) FROM _rhei_cdc_log").fetchone()[0]

        # the newest row stays as the sequence's high-water mark
        wait_for(lambda: log_rows() <= 2, timeout=10, what="the CDC log to be pruned to its newest row or two")
        assert lake.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 12}]
