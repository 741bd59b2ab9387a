"""The columnar snapshot reader (ADBC in a child process) agrees with the row reader exactly."""

from __future__ import annotations

import sqlite3
import threading
import time

import psutil
import pytest

import rhei_lake
from rhei_lake import faults
from rhei_lake.capture.reader_process import fast_reader_available
from rhei_lake.errors import RheiError
from tests.support.oracle import assert_same_state
from tests.support.workload import SCHEMA, Workload

pytestmark = pytest.mark.skipif(not fast_reader_available(), reason="adbc-driver-sqlite is not installed")


def _feed(lake, table):
    cols = "*"
    rows = lake.query(f"SELECT {cols} FROM {table}_changes ORDER BY _rhei_seq").to_pylist()
    for row in rows:
        row.pop("_rhei_ts")
    return rows


def test_same_events_as_the_row_reader(tmp_path):
    feeds = {}
    for name, threshold in (("rows", 0), ("columnar", 1)):
        db = tmp_path / f"{name}.db"
        conn = sqlite3.connect(db, isolation_level=None)
        for ddl in SCHEMA.values():
            conn.execute(ddl)
        Workload(5).run(lambda sql, params: conn.execute(sql, params), 600)
        with rhei_lake.open(oltp_path=str(db), storage="memory://", columnar_min_rows=threshold, batch_size=37) as lake:
            for table in SCHEMA:
                lake.register_table(table)
                assert_same_state(lake, conn, table)
            feeds[name] = {table: _feed(lake, table) for table in SCHEMA}
    assert feeds["rows"] == feeds["columnar"]
    assert sum(len(f) for f in feeds["rows"].values()) > 50


def test_every_declared_type_round_trips(tmp_path):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, r REAL, n NUMERIC, b BOOLEAN, d DATE, ts TIMESTAMP, "
        "dec DECIMAL(10,2), bl BLOB, j JSON)"
    )
    conn.executemany(
        "INSERT INTO t VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            (1, "a", 0.1 + 0.2, 5, 1, "2026-11-23", "2026-11-23 10:00:00", 1.5, b"\x00", '{"a": 1}'),
            (2, None, None, 2.5, 0, None, "2026-11-23T10:00:00.5Z", "2.25", None, None),
            (3, "漢", -0.0, None, None, "2026-01-02", 1700000000, 3, b"", "[]"),
            (4, "", 1e-310, 9007199254740992, 1, "2026-02-28", 1700000000.25, None, b"xx", "x"),
            (5, "x", 2.0, 1.0, 0, "2026-03-01", "2026-11-23T12:00:00+02:00", "7", None, ""),
            (6, "y", 3.0, 4, 1, "2026-03-02", "2026-11-23 10:00", None, None, None),
        ],
    )
    results = []
    for threshold in (0, 1):
        with rhei_lake.open(oltp_path=str(db), storage="memory://", columnar_min_rows=threshold) as lake:
            lake.register_table("t")
            results.append(lake.query("SELECT * FROM t ORDER BY id"))
            lake.unregister_table("t")
    assert results[0].equals(results[1])


@pytest.mark.parametrize(
    ("ddl", "bad_row", "column", "fragment"),
    [
        ("id INTEGER PRIMARY KEY, v INTEGER", (700, "lots"), "v", "'lots'"),  # ADBC fails across batches
        ("id INTEGER PRIMARY KEY, v INTEGER", (5, 2.5), "v", "2.5"),  # widened inside a batch
        ("id INTEGER PRIMARY KEY, v NUMERIC", (900, 2**53 + 1), "v", "9007199254740993"),
        ("id INTEGER PRIMARY KEY, v JSON", (3, b"\x02"), "v", "b'\\x02' (BLOB)"),
        ("id INTEGER PRIMARY KEY, v TEXT", (800, b"\x01"), "v", "b'\\x01' (BLOB)"),
        ("id INTEGER PRIMARY KEY, v DATE", (4, "2026-13-45"), "v", "2026-13-45"),
        ("id INTEGER PRIMARY KEY, v BOOLEAN", (6, 2), "v", "2"),
        ("id TEXT PRIMARY KEY, v INTEGER", (None, 1), "id", "NULL"),
    ],
)
def test_misfits_are_reported_exactly_and_nothing_is_committed(tmp_path, ddl, bad_row, column, fragment):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"CREATE TABLE t ({ddl})")
    key_is_text = ddl.startswith("id TEXT")
    value = {"JSON": "{}", "TEXT": "ok", "DATE": "2026-01-01"}.get(ddl.split()[-1], 1)
    good = [(str(i) if key_is_text else i, value) for i in range(1000, 2000)]
    conn.executemany("INSERT INTO t VALUES (?, ?)", good[:500] + [bad_row] + good[500:])
    with rhei_lake.open(oltp_path=str(db), storage="memory://", columnar_min_rows=1, batch_size=128) as lake:
        with pytest.raises(rhei_lake.TypeMismatchError) as info:
            lake.register_table("t")
        assert info.value.column == column
        assert fragment in str(info.value)
        assert lake.tables() == [] or lake.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 0}]
        conn.execute("DELETE FROM t WHERE id IS ?", (bad_row[0],))
        lake.register_table("t")  # fixed: registering again retries the snapshot
        ids = [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")]
        assert lake.query("SELECT id FROM t ORDER BY id").column(0).to_pylist() == ids


def _readers() -> list[psutil.Process]:
    """This process's live children running the reader script."""
    found = []
    for process in psutil.Process().children():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and any("reader_child" in part for part in process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def _snapshot_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "rhei-snapshot-read"]


def _big_table(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)")
    with conn:
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO {name} VALUES (?, ?)", ((i, "x" * 50) for i in range(200_000)))


@pytest.mark.parametrize("failing", ["changelog", "counting", "before the snapshot", "interrupted before the snapshot"])
def test_the_snapshot_streams_while_its_changelog_is_made_and_stops_when_the_registration_fails(
    tmp_path, monkeypatch, failing
):
    from rhei_lake.capture import trigger_source
    from rhei_lake.sync import trigger_sync

    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    conn = sqlite3.connect(db, isolation_level=None)
    _big_table(conn, "t")
    seen = []
    opened = trigger_sync.open_changelog

    def open_changelog(*args, **kwargs):
        seen.append(_snapshot_threads())
        if failing == "changelog" and len(seen) == 2:  # the second registration: its changelog cannot be made
            time.sleep(0.3)  # by now the snapshot's reader is as far ahead as it may go, waiting
            raise OSError("no space left on device")
        return opened(*args, **kwargs)

    def interrupt(_point: str) -> None:
        time.sleep(0.3)
        raise KeyboardInterrupt

    monkeypatch.setattr(trigger_sync, "open_changelog", open_changelog)
    with rhei_lake.open(oltp_path=db, storage=url, columnar_min_rows=1, batch_size=1000) as lake:
        lake.register_table("t")
        assert seen == [["rhei-snapshot-read"]], "the snapshot did not start reading before its changelog was made"
        assert lake.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 200_000}]
        _big_table(conn, "u")
        if failing == "changelog":
            with pytest.raises(OSError, match="no space"):
                lake.register_table("u")
        elif failing == "counting":  # the read has begun when the registering transaction counts the rows

            def count_fails(connection, table):
                time.sleep(0.3)
                raise sqlite3.OperationalError("disk I/O error")

            with monkeypatch.context() as patched, pytest.raises(RheiError, match="disk I/O error"):
                patched.setattr(trigger_source, "_count_rows", count_fails)
                lake.register_table("u")
        elif failing == "before the snapshot":
            with faults.armed("snapshot.before_start", "enospc"), pytest.raises(OSError):
                lake.register_table("u")
        else:
            with faults.armed("snapshot.before_start", interrupt), pytest.raises(KeyboardInterrupt):
                lake.register_table("u")
        assert _snapshot_threads() == []
        assert _readers() == [], "the snapshot's reader process outlived its failed registration"
        monkeypatch.setattr(trigger_sync, "open_changelog", opened)
        lake.register_table("u")  # retried: nothing of the failed attempt is in the way
        assert lake.query("SELECT count(*) AS n FROM u").to_pylist() == [{"n": 200_000}]


def test_the_snapshot_reads_while_its_rows_are_counted_and_the_count_agrees_with_concurrent_writers(
    tmp_path, monkeypatch
):
    """The read starts once the reader is pinned, before the registering transaction counts the rows;
    both see the rows as they are under its write lock, whatever other connections commit around it."""
    from rhei_lake.capture import trigger_source

    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    conn = sqlite3.connect(db, isolation_level=None)
    _big_table(conn, "t")
    reading_at_count = []
    counted = trigger_source._count_rows

    def count_rows(connection, table):
        reading_at_count.append(_snapshot_threads())
        return counted(connection, table)

    monkeypatch.setattr(trigger_source, "_count_rows", count_rows)
    stop = threading.Event()

    def write() -> None:  # another connection, committing all along
        other = sqlite3.connect(db, isolation_level=None, timeout=30)
        n = 1_000_000
        while not stop.is_set():
            other.execute("INSERT INTO t VALUES (?, 'w')", (n,))
            other.execute("UPDATE t SET v = 'u' WHERE id = ?", (n % 200_000,))
            n += 1
            time.sleep(0.001)  # a moment between commits: SQLite's locks are not fair, and a writer with
            # none starves the registration's BEGIN IMMEDIATE past its busy timeout on a loaded machine
        other.close()

    writer = threading.Thread(target=write)
    with rhei_lake.open(oltp_path=db, storage=url, columnar_min_rows=1, batch_size=1000) as lake:
        writer.start()
        try:
            time.sleep(0.05)
            lake.register_table("t")
            time.sleep(0.05)
        finally:
            stop.set()
            writer.join()
        assert reading_at_count == [["rhei-snapshot-read"]], "the rows were counted before the read began"
        lake.sync_now()
        assert_same_state(lake, conn, "t")


def test_the_reader_lets_go_of_the_database_once_every_row_is_read(tmp_path, monkeypatch):
    """Not after the Delta commit: the pinned read transaction holds back WAL checkpoints."""
    from rhei_lake.storage.changelog import Changelog

    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    conn = sqlite3.connect(db, isolation_level=None)
    _big_table(conn, "t")
    seen = []
    bridge = Changelog._bridge

    def bridged(self, start, end):  # the snapshot's commit is done, commit_stream not yet returned
        busy, _, _ = sqlite3.connect(db, isolation_level=None).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        seen.append((len(_readers()), busy))
        return bridge(self, start, end)

    monkeypatch.setattr(Changelog, "_bridge", bridged)
    with rhei_lake.open(oltp_path=db, storage=url, columnar_min_rows=1, batch_size=1000) as lake:
        lake.register_table("t")
        assert seen == [(0, 0)], "the snapshot's reader still pinned the database when its commit was done"
        assert lake.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 200_000}]


def test_a_registration_starts_its_reader_before_importing_deltalake_and_none_when_registered(tmp_path, monkeypatch):
    from rhei_lake.capture import reader_process, spare_reader
    from rhei_lake.storage import delta

    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    conn = sqlite3.connect(db, isolation_level=None)
    _big_table(conn, "t")
    started = []
    at_import = []
    start = reader_process.start_reader_child
    preload = delta.preload

    def counting():
        started.append(True)
        return start()

    def importing():
        at_import.append(len(_readers()))
        preload()

    monkeypatch.setattr(reader_process, "start_reader_child", counting)
    monkeypatch.setattr(spare_reader, "start_reader_child", counting)
    monkeypatch.setattr(delta, "preload", importing)
    with rhei_lake.open(oltp_path=db, storage=url, columnar_min_rows=1, batch_size=1000) as lake:
        lake.register_table("t")
        assert at_import == [1], "deltalake was not imported while the reader process started"
        assert len(started) == 1
        lake.register_table("T")  # registered already: no snapshot, no reader process, no import
        assert len(started) == 1 and at_import == [1]
        assert _readers() == []


@pytest.mark.parametrize("interrupted", ["importing deltalake", "after the registration commits"])
def test_an_interrupted_registration_leaves_no_reader_or_read_behind(tmp_path, monkeypatch, interrupted):
    from rhei_lake.phase_times import PhaseTimes
    from rhei_lake.storage import delta

    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    conn = sqlite3.connect(db, isolation_level=None)
    _big_table(conn, "t")
    add = PhaseTimes.add

    def preload() -> None:
        raise KeyboardInterrupt

    def add_interrupted(self, phase, seconds, **kwargs):
        if phase == "registration":  # the end of `with times.around("registration")`: committed, not returned
            raise KeyboardInterrupt
        return add(self, phase, seconds, **kwargs)

    with rhei_lake.open(oltp_path=db, storage=url, columnar_min_rows=1, batch_size=1000) as lake:
        with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
            if interrupted == "importing deltalake":
                patched.setattr(delta, "preload", preload)
            else:
                patched.setattr(PhaseTimes, "add", add_interrupted)
            lake.register_table("t")
        time.sleep(0.3)  # a read left running would have started by now
        assert _readers() == [] and _snapshot_threads() == []
        lake.register_table("t")  # retried: the snapshot (taken anew if its registration committed) lands once
        assert lake.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 200_000}]
