"""A pipelined first read killed mid-way (reader thread ahead, Delta writer mid-file) loses and doubles nothing.

The columnar snapshot of a registered table and a sidecar's first sync stream
batches from a reader process through a reader thread into one Delta write.
A child is killed while batches are in flight; a fresh open then finishes
the work, and the lake must hold every row of SQLite exactly once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

import rhei_lake
from rhei_lake import faults
from rhei_lake.capture.reader_process import fast_reader_available
from rhei_lake.catalog import SEQ
from rhei_lake.errors import SourceError, TableNotReadyError
from tests.support.first_read_child import open_lake
from tests.support.oracle import assert_same_state

ROOT = Path(__file__).resolve().parents[2]
ROWS = 12_000  # 24 batches of the child's 500 rows

pytestmark = pytest.mark.skipif(not fast_reader_available(), reason="needs adbc-driver-sqlite")


def _database(path: Path) -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, amount REAL, updated_at INTEGER NOT NULL)")
    conn.execute(
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) "
        # ~250 bytes a row, ~3 MB in all: more than the reader's pipe (1 MiB) and the batches in flight hold,
        # so a reader killed a few batches in is still sending
        "INSERT INTO items SELECT i, 'item ' || i || ' ' || hex(randomblob(120)), random() / 7.0, 1700000000 + i FROM n"
    )
    conn.close()
    return path


def _killed_child(mode: str, db: Path, lake: Path, spec: str) -> None:
    env = {**os.environ, "RHEI_FAULTS": spec}
    child = subprocess.run(
        [sys.executable, "-m", "tests.support.first_read_child", mode, str(db), str(lake)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    # A kill timed at random may come after the child finished: then the lake is simply complete.
    done = (-signal.SIGKILL, 0) if "~" in spec else (-signal.SIGKILL,)
    assert child.returncode in done, f"the child was not killed at {spec}:\n{child.stderr.decode()}"


def _assert_exactly_once(lake: rhei_lake.Lake, db: Path) -> None:
    seqs = lake.query(f"SELECT {SEQ} FROM items_changes").column(0).to_pylist()
    assert len(seqs) == ROWS, f"{len(seqs)} events for {ROWS} rows"
    assert len(set(seqs)) == ROWS, "an event was committed twice"
    conn = sqlite3.connect(db)
    try:
        assert_same_state(lake, conn, "items")
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["trigger", "sidecar"])
@pytest.mark.parametrize(
    "spec",
    [
        "first_read.batch_converted=kill@3",  # early: the writer has little or nothing (a snapshot: maybe no changelog)
        "first_read.batch_converted=kill@20",  # late: the writer is deep into its file
        # any moment of the Delta write, while batches come in slowly
        "delta.before_commit=kill~300, first_read.batch_converted=sleep~25*0",
    ],
)
def test_a_first_read_killed_mid_pipeline_is_redone_exactly_once(mode, spec, tmp_path):
    db = _database(tmp_path / "app.db")
    lake_path = tmp_path / "lake"
    _killed_child(mode, db, lake_path, spec)
    with open_lake(mode, str(db), str(lake_path)) as lake:
        if mode == "trigger":
            lake.register_table("items")  # an unfinished registration: snapshot again
        else:
            lake.sync_now()
        _assert_exactly_once(lake, db)


@pytest.mark.parametrize("mode", ["trigger", "sidecar"])
def test_a_first_read_whose_reader_dies_mid_pipeline_leaves_nothing_behind_and_a_retry_commits_once(mode, tmp_path):
    """The reader process dies after a few batches: nothing is committed, no thread or reader
    process is left behind (nor a reader that close() would wait for), and the next attempt
    commits every row once."""
    db = _database(tmp_path / "app.db")

    def kill_the_reader(_point: str) -> None:
        for process in _reader_processes():
            process.kill()

    with open_lake(mode, str(db), str(tmp_path / "lake")) as lake:
        with faults.armed("first_read.batch_converted", kill_the_reader, hit=4):
            with pytest.raises(SourceError):
                lake.register_table("items") if mode == "trigger" else lake.sync_now()
        assert not _reader_threads(), f"threads of the read outlived it: {_reader_threads()}"
        assert not [p for p in _reader_processes() if p.status() != psutil.STATUS_ZOMBIE], "a reader outlived its read"
        if mode == "trigger":  # a registration whose snapshot failed waits: nothing of it is answered
            with pytest.raises(TableNotReadyError):
                lake.query("SELECT count(*) AS n FROM items_changes")
        else:
            assert lake.query("SELECT count(*) AS n FROM items_changes").column(0)[0].as_py() == 0
        lake.register_table("items") if mode == "trigger" else lake.sync_now()
        _assert_exactly_once(lake, db)


def _reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("rhei-snapshot-read", "rhei-first-read"))]


def _reader_processes() -> list[psutil.Process]:
    """This process's children running the reader script."""
    found = []
    for process in psutil.Process().children():
        try:
            if any(part.endswith("reader_child.py") for part in process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found
