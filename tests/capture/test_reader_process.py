"""The ADBC reader process: its protocol, pinned snapshots and failure modes."""

from __future__ import annotations

import marshal
import sqlite3
import struct
import subprocess
import threading

import pytest

from rhei_lake.capture.reader_process import (
    _RUN_SCRIPT,
    PIPE_BYTES,
    ReaderProcess,
    _child_command,
    encoded,
    fast_reader_available,
    reader_error,
)
from rhei_lake.errors import SchemaError, SourceError, SourceUnavailableError

pytestmark = pytest.mark.skipif(not fast_reader_available(), reason="adbc-driver-sqlite is not installed")


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "r.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, f"v{i}") for i in range(1000)))
    yield path, conn
    conn.close()


def test_pinned_snapshot_ignores_later_writes(db):
    path, conn = db
    with ReaderProcess(str(path)) as reader:
        reader.begin()
        assert reader.query("SELECT count(*) AS n FROM t").read_all().to_pylist() == [{"n": 1000}]
        conn.execute("INSERT INTO t VALUES (5000, 'late')")
        assert reader.query("SELECT count(*) AS n FROM t").read_all().to_pylist() == [{"n": 1000}]
        reader.rollback()
        assert reader.query("SELECT count(*) AS n FROM t").read_all().to_pylist() == [{"n": 1001}]


def test_sql_errors_leave_the_process_usable(db):
    path, _ = db
    with ReaderProcess(str(path)) as reader:
        with pytest.raises(SourceError, match="no such table"):
            reader.query("SELECT * FROM missing").read_all()
        rows = reader.query("SELECT id FROM t WHERE id < 3", batch_rows=2, prefetch=2).read_all()
        assert rows.column(0).to_pylist() == [0, 1, 2]


def test_an_abandoned_stream_stops_the_process(db):
    path, _ = db
    reader = ReaderProcess(str(path))
    stream = reader.query("SELECT * FROM t", batch_rows=10)
    next(iter(stream))
    del stream  # half read: the protocol cannot continue
    with pytest.raises(SourceError):
        reader.query("SELECT 1").read_all()
    reader.close()


def test_a_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError):
        ReaderProcess(str(tmp_path / "nope" / "x.db"), readonly=True)


def _frames(data: bytes) -> list[tuple[bytes, dict]]:
    frames, at = [], 0
    while at < len(data):
        (length,) = struct.unpack(">I", data[at + 1 : at + 5])
        frames.append((data[at : at + 1], marshal.loads(data[at + 5 : at + 5 + length])))
        at += 5 + length
    return frames


def test_commands_before_open_are_protocol_errors():
    # A query on no connection used to crash the process (SIGSEGV inside ADBC), a begin to answer
    # with an AttributeError.
    ops = ("begin", "query", "rollback", "sing", "close")
    commands = b"".join(encoded({"op": op, "sql": "SELECT 1"}) for op in ops)
    child = subprocess.run(_child_command(), input=commands, capture_output=True, timeout=60)
    assert child.returncode == 0
    no_database = {"type": "ProtocolError", "message": "no database is open: send an open command first"}
    assert _frames(child.stdout) == [
        (b"E", no_database),
        (b"E", no_database),
        (b"E", no_database),
        (b"E", {"type": "ProtocolError", "message": "unknown op 'sing'"}),
    ]


def test_the_child_runs_from_its_cached_bytecode_and_sees_the_arguments_a_script_would(tmp_path):
    """A script named on the command line is compiled at every start; the child is run through the
    importer's loader instead, which keeps its bytecode in ``__pycache__``. Shown by a cached file
    whose bytecode says something else than its source (same size and time: the loader trusts it)."""
    import importlib.util
    import os
    import py_compile
    import sys

    script, other = tmp_path / "child.py", tmp_path / "other.py"
    body = "import sys; print(__name__, sys.argv[1:], sys.path[0] == {!r}, {!r})"
    script.write_text(body.format(str(tmp_path), "source"))
    other.write_text(body.format(str(tmp_path), "cached"))
    os.utime(other, (1_700_000_000, 1_700_000_000))
    os.utime(script, (1_700_000_000, 1_700_000_000))
    py_compile.compile(str(other), cfile=importlib.util.cache_from_source(str(script)), doraise=True)

    def run() -> str:
        command = [sys.executable, "-P", "-S", "-c", _RUN_SCRIPT, str(script), "driver.so"]
        return subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()

    assert run() == "__main__ ['driver.so'] False cached"
    os.utime(script, (1_700_000_001, 1_700_000_001))  # the source changed: read, not the stale bytecode
    assert run() == "__main__ ['driver.so'] False source"
    assert _child_command()[1:4] == ["-P", "-S", "-c"]


def test_a_read_waits_for_a_writer_holding_the_database_like_the_lakes_own_connections(tmp_path):
    """In rollback-journal mode a committing writer locks readers out for a moment: the reader waits it out
    (busy timeout), as sqlite3 connections of the lake do, instead of failing at once with a terminal error."""
    path = str(tmp_path / "journal.db")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    with ReaderProcess(path, readonly=True) as reader:
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("INSERT INTO t VALUES (2)")
        commit = threading.Timer(0.3, conn.execute, ("COMMIT",))
        commit.start()
        try:
            reader.begin()
            assert reader.query("SELECT count(*) AS n FROM t").read_all().to_pylist() == [{"n": 2}]
        finally:
            commit.join()
    conn.close()


def test_the_readers_sqlite_errors_are_classified_as_the_lakes_own(db):
    """A table gone is a SchemaError, a lock held past the timeout transient, as from a sqlite3 connection."""
    path, _ = db
    with ReaderProcess(str(path), readonly=True) as reader:
        with pytest.raises(SchemaError, match="no such table"):
            reader.query("SELECT * FROM missing").read_all()
    locked = reader_error(str(path), {"message": "[SQLite] Failed to prepare query: database is locked"})
    assert isinstance(locked, SourceUnavailableError) and locked.transient


def test_without_ctypes_the_lake_reads_through_sqlite3(monkeypatch):
    # The child calls the driver through ctypes, which some Python builds lack: then no fast reader.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "_ctypes" else real(name, *a))
    assert not fast_reader_available()


@pytest.mark.skipif(not hasattr(__import__("fcntl"), "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
def test_the_childs_batches_cross_a_wide_pipe(db):
    import fcntl
    from pathlib import Path

    path, _ = db
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < PIPE_BYTES:
        pytest.skip("this system allows narrower pipes only")
    with ReaderProcess(str(path)) as reader:
        assert fcntl.fcntl(reader._proc.stdout.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_BYTES
        assert reader.query("SELECT count(*) AS n FROM t").read_all().to_pylist() == [{"n": 1000}]
