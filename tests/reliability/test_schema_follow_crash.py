"""A process killed while it follows a schema change made outside rhei_lake: the next one finishes the work.

The child is SIGKILLed at each named moment of a follow (:mod:`rhei_lake.faults`)
and inside the commits of the captured and of the derived events; the
application keeps writing while no process syncs. Then a new process must
follow the change (or find it followed), lose no event and double none: the
lake equals SQLite (current rows, every marked ``as_of`` instant, history
chains), and no sequence number is in the change feed twice.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys

import pytest

import rhei_lake
from tests.reliability.crash_lab import CHILD_TIMEOUT, ROOT
from tests.support.mirror_check import MirrorCheck
from tests.sync.test_schema_follow import rebuild, run

KILLS = [
    "schema.follow_detected=kill",
    "schema.follow_before_commit=kill",
    "schema.follow_after_commit=kill",
    "changelog.before_commit=kill@1",  # committing the captured events, inside the follow's transaction
    "changelog.before_commit=kill@2",  # committing the derived events
    "blob.after_data_before_commit=kill@2",  # the derived events' segment written, not linked into place
]


def _child(db: str, url: str, spec: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "RHEI_FAULTS": spec, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "tests.support.schema_follow_child", db, url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=CHILD_TIMEOUT,
    )


@pytest.mark.parametrize("kill", KILLS, ids=[k.replace("=kill", "") for k in KILLS])
def test_a_crash_while_following_a_rebuild_loses_and_doubles_nothing(tmp_path, kill):
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    app = sqlite3.connect(db, isolation_level=None)
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
        lake.register_table("t")
        lake.execute_batch([("INSERT INTO t VALUES (?, ?, ?)", (i, f"n{i}", i / 3)) for i in range(1, 41)])
        lake.sync_now()
        check = MirrorCheck(lake, app, "t")
        check.mark()
        lake.execute("UPDATE t SET name = 'captured' WHERE id < 5")  # in the CDC log at the crash
    run(
        app,
        rebuild("t", "id INTEGER PRIMARY KEY, name TEXT, score REAL, note TEXT", "id, name, score"),
        transaction=True,
    )
    app.execute("UPDATE t SET note = 'blind' WHERE id % 3 = 0")
    app.execute("DELETE FROM t WHERE id > 35")

    child = _child(db, url, kill)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")

    app.execute("INSERT INTO t VALUES (100, 'while no one synced', NULL, 'x')")
    app.execute("UPDATE t SET score = -1 WHERE id = 1")
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        lake.sync_now()
        check.lake = lake
        check.mark()
        app.execute("UPDATE t SET note = 'captured again' WHERE id = 2")
        assert lake.sync_now().events == 1
        check.mark()
        seqs = lake.query("SELECT _rhei_seq FROM t_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs)), "an event was committed twice"
        check.assert_all()
        names = lake.query("SELECT name FROM t_history WHERE id = 4 ORDER BY _rhei_seq").column(0).to_pylist()
        assert names == ["n4", "captured"]  # the captured change kept its own version
        assert app.execute("SELECT count(*) FROM _rhei_reconcile").fetchone() == (0,)
    app.close()


AFTER_THE_OLD_LAYOUT = [
    "changelog.before_commit=kill@1",  # committing the events logged before the rebuild
    "schema.follow_before_commit=kill",
    "schema.follow_after_commit=kill",
    "sync.after_commit_before_prune=kill",
    "cdc.before_prune_commit=kill",  # the log keeps every event logged before the rebuild
]


@pytest.mark.parametrize("kill", AFTER_THE_OLD_LAYOUT, ids=[k.replace("=kill", "") for k in AFTER_THE_OLD_LAYOUT])
def test_events_logged_before_a_rebuild_are_read_in_their_own_layout_after_a_crash(tmp_path, kill):
    """Events captured before a rebuild that drops a column before others reach the lake once, with the
    values they were logged with, wherever the follow is killed; then the next process, which reads the
    log from the idle table's older watermark, goes on and the table can be altered."""
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    app = sqlite3.connect(db, isolation_level=None)
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        lake.execute("CREATE TABLE idle (id INTEGER PRIMARY KEY, v TEXT)")
        lake.execute("CREATE TABLE mig (id INTEGER PRIMARY KEY, a TEXT, b INTEGER, x1 TEXT)")
        lake.register_table("idle")
        lake.register_table("mig")
        lake.execute("INSERT INTO mig VALUES (1, 'x', 1, NULL)")
        lake.sync_now()
        check = MirrorCheck(lake, app, "mig")
        check.mark()
        # in the CDC log at the crash; in the rebuilt layout 'a' would read as 'b', which it does not fit
        lake.execute("INSERT INTO mig VALUES (5, '20212566361', NULL, ' ')")
        lake.execute("UPDATE mig SET a = 'text', x1 = 'y' WHERE id = 1")
    run(app, rebuild("mig", "id INTEGER PRIMARY KEY, b INTEGER, x1 TEXT", "id, b, x1"), transaction=True)

    child = _child(db, url, kill)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")

    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        lake.sync_now()
        check.lake = lake
        check.mark()
        check.assert_all()
        history = lake.query("SELECT id, x1 FROM mig_history ORDER BY _rhei_seq").to_pylist()
        assert history == [{"id": 1, "x1": None}, {"id": 5, "x1": " "}, {"id": 1, "x1": "y"}]  # not b's slot
    with rhei_lake.open(oltp_path=db, storage=url) as lake:  # from the idle table's watermark again
        assert lake.sync_now().events == 0
        lake.drop_column("mig", "b")
        app.execute("UPDATE mig SET x1 = 'after' WHERE id = 5")
        assert lake.sync_now().events == 1
        check.lake = lake
        check.mark()
        check.assert_all()
        seqs = lake.query("SELECT _rhei_seq FROM mig_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs)), "an event was committed twice"
    app.close()
