"""Reader processes started ahead of need (:mod:`rhei_lake.capture.spare_reader`): used when a lake opens
with a big table to read whole, and never left behind (close, the parent's death, a fork), nor started by a
lake that has nothing to read whole."""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
import struct
import subprocess
import sys
import time
import warnings

import psutil
import pytest

import rhei_lake
from rhei_lake import faults
from rhei_lake.capture import reader_process
from rhei_lake.capture.reader_process import ReaderProcess, fast_reader_available
from rhei_lake.capture.spare_reader import SpareReader
from rhei_lake.errors import SchemaError, SourceError

pytestmark = pytest.mark.skipif(not fast_reader_available(), reason="needs adbc_driver_sqlite")

ROWS = 500


def _database(path, rows: int = ROWS) -> str:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, amount REAL, updated_at INTEGER NOT NULL)")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", [(i, f"n{i}", i / 3, 1000 + i) for i in range(rows)])
    conn.commit()
    conn.close()
    return str(path)


def _readers() -> list[psutil.Process]:
    """This process's live children running the reader script."""
    found = []
    for process in psutil.Process().children():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and any(
                part.endswith("reader_child.py") for part in process.cmdline()
            ):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _sidecar(db: str, storage: str, min_rows: int = 100) -> rhei_lake.Lake:
    polled = rhei_lake.PolledTable("items", primary_key=["id"], updated_at="updated_at")
    return rhei_lake.open(
        source=f"sqlite:///{db}",
        storage=storage,
        tables=[polled],
        columnar_min_rows=min_rows,
        hard_delete_interval=3600,
    )


def _count_starts(monkeypatch) -> list[int]:
    """Counts reader processes started (ahead or not)."""
    started: list[int] = []
    real = reader_process.start_reader_child

    def counting():
        proc = real()
        started.append(proc.pid)
        return proc

    monkeypatch.setattr(reader_process, "start_reader_child", counting)
    monkeypatch.setattr("rhei_lake.capture.spare_reader.start_reader_child", counting)
    return started


def test_a_taken_spare_reads_and_close_stops_an_untaken_one(tmp_path):
    db = _database(tmp_path / "app.db")
    spare = SpareReader()
    pid = spare.pid
    with ReaderProcess(db, readonly=True, process=spare.take()) as reader:
        assert reader._proc.pid == pid
        assert reader.query("SELECT count(*) FROM items").read_all().column(0)[0].as_py() == ROWS
    assert spare.take() is None  # handed over once
    spare.close()  # taken: nothing to stop, and the reader's own close stopped it
    assert _gone(pid)

    untaken = SpareReader()
    pid = untaken.pid
    untaken.close()
    assert untaken.pid is None and untaken.take() is None
    assert _gone(pid, timeout=0.5), "close() reaps the spare at once"


def test_a_spare_that_cannot_open_its_database_is_stopped(tmp_path):
    spare = SpareReader()
    pid = spare.pid
    with pytest.raises(SourceError):
        ReaderProcess(str(tmp_path / "nope" / "x.db"), readonly=True, process=spare.take())
    assert _gone(pid, timeout=0.5)


def test_a_dead_spare_is_not_taken(tmp_path):
    db = _database(tmp_path / "app.db")
    spare = SpareReader()
    psutil.Process(spare.pid).kill()
    assert _gone(spare.pid)
    assert spare.take() is None
    with ReaderProcess(db, readonly=True, process=None) as reader:  # the caller starts its own
        assert reader.query("SELECT count(*) FROM items").read_all().num_rows == 1


_ORPHAN = """
import os, sys, time
from rhei_lake.capture.spare_reader import SpareReader
spare = SpareReader()
fork = os.fork() if sys.argv[1] == "fork" else 0
if fork == 0 and sys.argv[1] == "fork":  # a forked worker that lives on: it must not keep the spare alive
    time.sleep(60)
    os._exit(0)
print(spare.pid, fork, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("fork", ["no fork", "fork"] if hasattr(os, "fork") else ["no fork"])
def test_a_spare_ends_when_its_parent_is_killed(fork):
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN, fork], stdout=subprocess.PIPE, text=True)
    forked = 0
    try:
        pid, forked = (int(part) for part in parent.stdout.readline().split())
        assert psutil.pid_exists(pid)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    try:
        assert _gone(pid), "a spare outlived its parent"
    finally:
        if forked:
            psutil.Process(forked).kill()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_neither_takes_nor_stops_its_parents_spare(tmp_path):
    db = _database(tmp_path / "app.db")
    spare = SpareReader()
    pid = spare.pid
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        child = os.fork()
        if child == 0:  # the fork: the spare is not its own, and its copy of the pipes is closed once, quietly
            gc.collect()
            code = 0 if spare.take() is None and spare.pid is None and not seen else 1
            spare.close()
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert psutil.pid_exists(pid) and not _gone(pid, timeout=0.2), "the fork stopped its parent's spare"
    with ReaderProcess(db, readonly=True, process=spare.take()) as reader:
        assert reader._proc.pid == pid
        assert reader.query("SELECT count(*) FROM items").read_all().column(0)[0].as_py() == ROWS


def test_a_sidecar_lake_starts_its_first_reads_reader_while_it_opens_and_leaves_none(tmp_path, monkeypatch):
    db = _database(tmp_path / "app.db")
    started = _count_starts(monkeypatch)
    with _sidecar(db, str(tmp_path / "lake")) as lake:
        assert [p.pid for p in _readers()] == started and len(started) == 1, "no reader started at open"
        report = lake.sync_now()
        assert report.events == ROWS
        assert len(started) == 1, "the first read started another reader instead of the spare"
        assert not _readers()
        assert lake.query("SELECT count(*) AS n FROM items").column(0)[0].as_py() == ROWS
    assert not _readers()


def test_a_sidecar_lake_closed_before_its_first_sync_leaves_no_reader(tmp_path):
    db = _database(tmp_path / "app.db")
    lake = _sidecar(db, str(tmp_path / "lake"))
    pids = [p.pid for p in _readers()]
    assert len(pids) == 1
    lake.close()
    assert all(_gone(pid, timeout=0.5) for pid in pids)


def test_a_sidecar_lake_with_nothing_to_read_whole_starts_no_reader(tmp_path, monkeypatch):
    db = _database(tmp_path / "app.db")
    storage = str(tmp_path / "lake")
    started = _count_starts(monkeypatch)
    with _sidecar(db, storage, min_rows=ROWS + 1) as lake:  # too small to read whole
        assert not started
        lake.sync_now()
    with _sidecar(db, storage) as lake:  # the lake holds it already
        assert not started
        lake.sync_now()
    with _sidecar(db, str(tmp_path / "rows"), min_rows=0) as lake:  # the columnar read turned off
        assert not started
        lake.sync_now()
    assert not started


def test_a_trigger_lake_with_nothing_to_snapshot_starts_no_reader(tmp_path, monkeypatch):
    db = _database(tmp_path / "app.db")
    storage = str(tmp_path / "lake")
    started = _count_starts(monkeypatch)
    with rhei_lake.open(oltp_path=db, storage=storage, columnar_min_rows=100) as lake:
        assert not started
        lake.register_table("items")  # its snapshot starts its own reader, as before
        assert len(started) == 1
    with rhei_lake.open(oltp_path=db, storage=storage, columnar_min_rows=100) as lake:  # mirrored: nothing to take
        lake.sync_now()
    assert len(started) == 1 and not _readers()


def test_a_spare_opened_on_one_database_is_not_used_for_another(tmp_path):
    one, other = _database(tmp_path / "one.db"), _database(tmp_path / "other.db", rows=7)
    spare = SpareReader(one)
    pid = spare.pid
    with spare.reader(other, readonly=True) as reader:
        assert reader._proc.pid != pid
        assert reader.query("SELECT count(*) FROM items").read_all().column(0)[0].as_py() == 7
    assert _gone(pid, timeout=0.5)
    spare = SpareReader(one, readonly=True)
    pid = spare.pid
    with spare.reader(one, readonly=True) as reader:  # the same database, opened ahead: its reply awaited
        assert reader._proc.pid == pid
        assert reader.query("SELECT count(*) FROM items").read_all().column(0)[0].as_py() == ROWS


def test_a_spare_that_cannot_open_its_database_fails_the_read_that_takes_it_with_a_source_error(tmp_path):
    spare = SpareReader(str(tmp_path / "nope" / "x.db"), readonly=True)
    pid = spare.pid
    with pytest.raises(SourceError):
        spare.reader(str(tmp_path / "nope" / "x.db"), readonly=True)
    assert _gone(pid, timeout=0.5)


def test_a_trigger_lake_opening_with_a_snapshot_to_retake_starts_its_reader_ahead(tmp_path, monkeypatch):
    db = _database(tmp_path / "app.db")
    storage = str(tmp_path / "lake")

    def lost(_point: str) -> None:
        raise SourceError("the reader went away")

    with rhei_lake.open(oltp_path=db, storage=storage, columnar_min_rows=100) as lake:
        with faults.armed("first_read.batch_converted", lost), pytest.raises(SourceError):
            lake.register_table("items")  # the registration waits: its snapshot did not land
    assert not _readers()
    started = _count_starts(monkeypatch)
    spares: list[int] = []
    real = SpareReader.__init__

    def noting(self, *args, **kwargs) -> None:
        real(self, *args, **kwargs)
        spares.append(self.pid)

    monkeypatch.setattr(SpareReader, "__init__", noting)
    with rhei_lake.open(oltp_path=db, storage=storage, columnar_min_rows=100) as lake:  # the open retakes it
        assert spares and started == spares, "the retaken snapshot did not use a reader started ahead"
        assert not _readers()
        assert lake.query("SELECT count(*) AS n FROM items").column(0)[0].as_py() == ROWS
    assert not _readers()


def test_a_first_read_through_a_spare_reads_the_table_as_it_is_at_the_sync_not_at_the_open(
    tmp_path, monkeypatch, caplog
):
    """The spare pins nothing: rows written between the open and the first sync are in it, deleted ones are
    not, and a table that shrank below columnar_min_rows meanwhile is still read whole, exactly once."""
    db = _database(tmp_path / "app.db")
    started = _count_starts(monkeypatch)
    with _sidecar(db, str(tmp_path / "lake")) as lake:
        assert len(started) == 1
        conn = sqlite3.connect(db)
        conn.execute("DELETE FROM items WHERE id >= 60")
        conn.execute("UPDATE items SET amount = 0.1 + 0.2, updated_at = 9000 WHERE id = 7")
        conn.execute("INSERT INTO items VALUES (1000, 'late', -0.0, 9001)")
        conn.commit()
        expected = conn.execute("SELECT id, name, amount, updated_at FROM items ORDER BY id").fetchall()
        conn.close()
        with caplog.at_level(logging.INFO, logger="rhei_lake"):
            assert lake.sync_now().events == len(expected) == 61
        assert any("committed in one read" in r.getMessage() for r in caplog.records), "not read whole"
        assert len(started) == 1, "the spare was not the first read's reader"
        got = lake.query("SELECT id, name, amount, updated_at FROM items ORDER BY id").to_pylist()
        assert [(r["id"], r["name"], r["amount"], r["updated_at"]) for r in got] == expected
        assert [struct.pack("<d", r["amount"]) for r in got] == [struct.pack("<d", e[2]) for e in expected]
    assert not _readers()


def test_a_spare_that_cannot_start_leaves_the_open_and_the_first_sync_as_they_were(tmp_path, monkeypatch, caplog):
    """Only a head start: a spare that fails to start (no process to spare) fails neither the open nor
    the first read, which starts its own reader."""
    db = _database(tmp_path / "app.db")

    def refused():
        raise SourceError("could not start the SQLite reader process: [Errno 11] Resource temporarily unavailable")

    monkeypatch.setattr("rhei_lake.capture.spare_reader.start_reader_child", refused)
    with _sidecar(db, str(tmp_path / "lake")) as lake:
        assert not _readers()
        with caplog.at_level(logging.INFO, logger="rhei_lake"):
            assert lake.sync_now().events == ROWS
        assert any("committed in one read" in r.getMessage() for r in caplog.records)
    assert not _readers()


def test_an_open_that_fails_after_starting_a_spare_leaves_no_reader(tmp_path):
    db = _database(tmp_path / "app.db")
    tables = [
        rhei_lake.PolledTable("items", primary_key=["id"], updated_at="updated_at"),
        rhei_lake.PolledTable("missing", primary_key=["id"], updated_at="updated_at"),
    ]
    with pytest.raises(rhei_lake.RheiError):
        rhei_lake.open(source=f"sqlite:///{db}", storage=str(tmp_path / "lake"), tables=tables, columnar_min_rows=100)
    assert not _readers()


@pytest.mark.parametrize("min_rows", [100, 0], ids=["through the spare", "row poll"])
def test_a_table_dropped_between_the_open_and_the_first_sync_stops_it_with_a_schema_error(tmp_path, min_rows):
    """With or without a spare the first sync names the table gone with a SchemaError (through the spare
    it was a plain SourceError carrying ADBC's message)."""
    db = _database(tmp_path / "app.db")
    with _sidecar(db, str(tmp_path / "lake"), min_rows=min_rows) as lake:
        assert len(_readers()) == (1 if min_rows else 0)
        conn = sqlite3.connect(db)
        conn.execute("DROP TABLE items")
        conn.close()
        with pytest.raises(SchemaError, match="no such table: items"):
            lake.sync_now()
    assert not _readers()


def test_an_idle_spare_holding_its_database_open_lets_the_application_write_and_checkpoint(tmp_path):
    """A sidecar's spare opens the database at the lake's open: meanwhile another connection writes and
    truncates the WAL without waiting (busy timeout 0), and the first sync reads what SQLite then holds."""
    db = _database(tmp_path / "app.db")
    setup = sqlite3.connect(db)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.close()
    with _sidecar(db, str(tmp_path / "lake")) as lake:
        assert len(_readers()) == 1
        time.sleep(0.5)  # started, and its database opened
        app = sqlite3.connect(db, timeout=0)
        app.execute("DELETE FROM items WHERE id % 3 = 0")
        app.execute("INSERT INTO items VALUES (1000, 'late', 0.1 + 0.2, 9001)")
        app.commit()
        assert app.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone() == (0, 0, 0), "the spare held the WAL"
        expected = app.execute("SELECT id, name, amount, updated_at FROM items ORDER BY id").fetchall()
        app.close()
        assert lake.sync_now().events == len(expected)
        got = lake.query("SELECT id, name, amount, updated_at FROM items ORDER BY id").to_pylist()
        assert [tuple(r.values()) for r in got] == expected
        assert [struct.pack("<d", r["amount"]) for r in got] == [struct.pack("<d", e[2]) for e in expected]
    assert not _readers()


def test_a_database_file_replaced_after_the_spare_opened_it_is_read_anew(tmp_path):
    """A restore renames another file over the database after the lake's open: the first sync reads
    the file at the path, not the one the spare opened (which would bring back rows the database no
    longer has)."""
    db = _database(tmp_path / "app.db")
    with _sidecar(db, str(tmp_path / "lake")) as lake:
        time.sleep(0.5)  # started, and its database opened
        os.replace(_database(tmp_path / "restored.db", rows=200), db)
        lake.sync_now()
        assert lake.query("SELECT count(*) AS n FROM items").to_pylist() == [{"n": 200}]
    assert not _readers()
