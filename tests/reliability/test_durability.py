"""The durability contract, per storage tier, statement by statement (docs/reliability.md).

* ``memory://``: the lake lives in the process. A new process sees none of it;
  a lake reopened on the same database starts again from a snapshot of the
  tables' current rows (the history before is gone).
* local path: when ``sync_now()`` returns, every change captured before the
  call is committed; a SIGKILL right after it (or after ``flush()``) loses
  nothing, and each commit's files are fsynced, so neither does an OS crash.
* ``s3://``: the same; a commit is durable once its conditional PUT returned.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import rhei_lake
from tests.reliability import summary
from tests.support.oracle import assert_same_state

ROOT = Path(__file__).resolve().parents[2]


def _child(db: Path, url: str, options: dict[str, str], rows: int, how: str) -> int:
    env = {**os.environ, **options, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.durability_child", str(db), url, str(rows), how],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    expected_code = 0 if how == "exit" else -9
    assert result.returncode == expected_code, result.stderr
    return int(result.stdout.split()[-1])


@pytest.mark.parametrize("how", ["sync", "flush"])
def test_sigkill_right_after_a_commit_returns_loses_nothing(durable_storage, tmp_path, how):
    url, options = durable_storage
    db = tmp_path / "app.db"
    total = 0
    for rows in (1, 250, 3):
        total = _child(db, url, options, rows, how)
        summary.count("faults.sigkill_after_commit")
        with rhei_lake.open(storage=url, storage_options=options) as reader:  # before any recovery runs
            ids = reader.query("SELECT id FROM t ORDER BY id").column(0).to_pylist()
            assert ids == list(range(1, total + 1)), f"{total - len(ids)} committed rows lost"
    conn = sqlite3.connect(db)
    with rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options) as lake:
        assert_same_state(lake, conn, "t")
        assert lake.sync_now().events == 0, "the commits were complete: nothing left to sync"
    conn.close()


def test_local_commits_are_fsynced_before_they_are_reported(tmp_path, monkeypatch):
    """An OS crash loses what the page cache held: every file a commit needs must be fsynced first."""
    synced: set[str] = set()
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    lake_dir = tmp_path / "lake"
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(lake_dir)) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'a')")
        lake.sync_now()
        tail = lake_dir / "t" / "_tail"
        assert list(tail.glob("*.arrow")) and str(tail) in synced, "the segment's directory entry was not fsynced"
        # the segment's bytes are fsynced under a temporary name, then linked into place
        assert [p for p in synced if p.startswith(f"{tail}/.tmp-")], "the segment's data was not fsynced"
        synced.clear()
        lake.flush()
    changes = lake_dir / "t" / "changes"
    newest = max((changes / "_delta_log").glob("*.json"))
    added = [
        str(changes / line.split('"path":"')[1].split('"')[0])
        for line in newest.read_text().splitlines()
        if '"add"' in line
    ]
    assert added, "the flush added no data file"
    for path in [str(newest), *added, str(changes), str(changes / "_delta_log")]:
        assert path in synced, f"{path} was not fsynced"


def test_memory_lakes_end_with_their_process(tmp_path):
    db = tmp_path / "app.db"
    _child(db, "memory://shared-by-name", {}, 20, "exit")
    script = (
        "import rhei_lake\n"
        "with rhei_lake.open(storage='memory://shared-by-name') as lake:\n"
        "    print(len(lake.tables()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.stdout.strip() == "0", result.stderr
    conn = sqlite3.connect(db)
    with rhei_lake.open(oltp_path=str(db), storage="memory://shared-by-name") as lake:
        assert_same_state(lake, conn, "t")  # current rows: a fresh snapshot from SQLite
        ops = lake.query("SELECT DISTINCT _rhei_op FROM t_changes").column(0).to_pylist()
        assert ops == ["I"], "the history before the restart is gone: only the snapshot's inserts remain"
    conn.close()
