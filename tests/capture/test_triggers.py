"""What the triggers capture, read back through a lake on memory://."""

from __future__ import annotations

import sqlite3
import struct
import threading
import time

import pytest

import rhei_lake
from rhei_lake.errors import SchemaError, TypeMismatchError
from tests.support.exact_state import assert_lake_is_sqlite, captured
from tests.support.oracle import assert_same_state, oltp_oracle


@pytest.fixture
def lake(htap_lake):
    return htap_lake(tier="memory")


def feed(lake, table="t"):
    rows = lake.query(f'SELECT * FROM "{table}_changes" ORDER BY _rhei_seq').to_pylist()
    for row in rows:
        row.pop("_rhei_ts")
        row.pop("_rhei_seq")
    return rows


def test_insert_update_delete_and_key_change(lake):
    lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    lake.register_table("t")
    lake.execute("INSERT INTO t VALUES (1, 'a')")
    lake.execute("UPDATE t SET v = 'b' WHERE id = 1")
    lake.execute("UPDATE t SET v = 'b' WHERE id = 1")  # changes nothing: no event
    lake.execute("UPDATE t SET id = 2 WHERE id = 1")
    lake.execute("DELETE FROM t WHERE id = 2")
    lake.sync_now()
    assert feed(lake) == [
        {"id": 1, "v": "a", "_rhei_op": "I"},
        {"id": 1, "v": "b", "_rhei_op": "U"},
        {"id": 1, "v": "b", "_rhei_op": "D"},
        {"id": 2, "v": "b", "_rhei_op": "I"},
        {"id": 2, "v": "b", "_rhei_op": "D"},
    ]
    assert lake.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 0}]


def test_composite_key_and_replace(lake):
    lake.execute("CREATE TABLE p (a TEXT NOT NULL, b INTEGER NOT NULL, v REAL, u TEXT UNIQUE, PRIMARY KEY (a, b))")
    lake.register_table("p")
    lake.execute("INSERT INTO p VALUES ('x', 1, 1.5, 'u1')")
    lake.execute("INSERT INTO p VALUES ('x', 2, 2.5, 'u2')")
    lake.execute("UPDATE p SET b = 3 WHERE a = 'x' AND b = 1")
    # REPLACE removes the row holding u2 through the UNIQUE constraint: a delete the lake must see.
    lake.execute("INSERT OR REPLACE INTO p VALUES ('y', 9, 9.5, 'u2')")
    lake.sync_now()
    assert_same_state(lake, oltp_oracle(lake), "p")


def test_hostile_identifiers(lake):
    name = "we\"ird ta'ble"
    lake.execute('CREATE TABLE "we""ird ta\'ble" ("k ""q""" INTEGER PRIMARY KEY, "sel\'ect" TEXT, "a-b" REAL)')
    lake.register_table(name)
    lake.execute('INSERT INTO "we""ird ta\'ble" VALUES (1, \'x\', 0.5)')
    lake.sync_now()
    assert_same_state(lake, oltp_oracle(lake), name)


def test_table_without_primary_key_is_refused(lake):
    lake.execute("CREATE TABLE nokey (a INTEGER, b TEXT)")
    with pytest.raises(SchemaError, match="no PRIMARY KEY"):
        lake.register_table("nokey")
    with pytest.raises(SchemaError, match="does not exist"):
        lake.register_table("missing")
    lake.execute("CREATE VIEW v AS SELECT 1 AS x")
    with pytest.raises(SchemaError, match="view"):
        lake.register_table("v")


def test_untyped_column_needs_a_type_override(lake):
    lake.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v)")
    with pytest.raises(SchemaError, match="declares no type"):
        lake.register_table("kv")
    spec = lake.register_table("kv", types={"v": "TEXT"})
    assert str(spec.column("v").arrow_type) == "string"


def test_type_mismatch_stops_before_the_bad_event_and_loses_nothing(lake):
    lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, qty INTEGER)")
    lake.register_table("t")
    lake.execute("INSERT INTO t VALUES (1, 10)")
    lake.execute("INSERT INTO t VALUES (2, 'lots')")
    lake.execute("INSERT INTO t VALUES (3, 30)")
    with pytest.raises(TypeMismatchError) as info:
        lake.sync_now()
    err = info.value
    assert (err.table, err.column, err.primary_key) == ("t", "qty", {"id": 2})
    assert "'lots'" in str(err) and "INTEGER" in str(err)
    assert [r["id"] for r in feed(lake)] == [1]  # everything before the bad event, nothing after
    with pytest.raises(TypeMismatchError):
        lake.sync_now()  # still stopped: nothing is skipped


def test_snapshot_is_exact_under_concurrent_writes(tmp_path):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, i) for i in range(20_000)))
    conn.execute("COMMIT")
    stop = threading.Event()

    def writer():
        w = sqlite3.connect(db, isolation_level=None, timeout=30)
        i = 20_000
        while not stop.is_set():
            w.execute("INSERT INTO t VALUES (?, ?)", (i, i))
            w.execute("UPDATE t SET v = v + 1 WHERE id = ?", (i % 20_000,))
            w.execute("DELETE FROM t WHERE id = ?", ((i * 7) % 20_000,))
            i += 1
            time.sleep(0.0005)  # an application leaves gaps; SQLite's lock is not fair to waiters
        w.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with rhei_lake.open(oltp_path=str(db), storage="memory://", batch_size=1000) as lake:
            lake.register_table("t")
            stop.set()
            thread.join()
            lake.sync_now()
            assert_same_state(lake, conn, "t")
            seqs = lake.query("SELECT _rhei_seq FROM t_changes").column(0).to_pylist()
            assert len(seqs) == len(set(seqs))
    finally:
        stop.set()
        thread.join()


def test_repair_event_unblocks_a_type_mismatch_without_losing_anything(lake):
    lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, qty INTEGER)")
    lake.register_table("t")
    lake.execute("INSERT INTO t VALUES (1, 10)")
    lake.execute("INSERT INTO t VALUES (2, 'lots')")
    lake.execute("UPDATE t SET qty = 20 WHERE id = 2")  # the source is fixed; the bad event remains
    with pytest.raises(TypeMismatchError) as info:
        lake.sync_now()
    seq = info.value.seq
    assert f"repair_event('t', {seq}" in str(info.value)
    with pytest.raises(TypeMismatchError):
        lake.repair_event("t", seq, {"qty": "still text"})
    with pytest.raises(SchemaError):
        lake.repair_event("t", seq, {"nope": 1})
    lake.repair_event("t", seq, {"qty": 0})
    lake.sync_now()
    assert [(r["id"], r["qty"], r["_rhei_op"]) for r in feed(lake)] == [(1, 10, "I"), (2, 0, "I"), (2, 20, "U")]
    assert_same_state(lake, oltp_oracle(lake), "t")
    with pytest.raises(rhei_lake.SourceError, match="not in the CDC log"):
        lake.repair_event("t", 10_000, {"qty": 1})


def test_repair_event_while_another_connection_holds_the_write_lock_raises_a_lake_error(lake, tmp_path):
    lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, qty INTEGER)")
    lake.register_table("t")
    lake.execute("INSERT INTO t VALUES (1, 'lots')")
    with pytest.raises(TypeMismatchError) as info:
        lake.sync_now()
    other = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # an application's transaction, held past the busy timeout
    try:
        with pytest.raises(rhei_lake.RheiError, match="locked|busy") as refused:
            lake.repair_event("t", info.value.seq, {"qty": 0})
        assert refused.value.transient, refused.value
    finally:
        other.execute("ROLLBACK")
        other.close()
    lake.repair_event("t", info.value.seq, {"qty": 0})  # the failed attempt left nothing half done
    lake.sync_now()
    assert lake.query("SELECT qty FROM t").column(0).to_pylist() == [0]


# -- comparisons are byte-exact whatever the collation --------------------------------------------


def test_case_only_update_under_nocase_is_captured(tmp_path):
    ddl = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE)"
    with captured(tmp_path, ddl, "INSERT INTO t VALUES (1, 'alice')") as (_, app, lake):
        app.execute("UPDATE t SET name = 'Alice' WHERE id = 1")
        lake.execute("UPDATE t SET name = 'ALICE' WHERE id = 1")
        lake.sync_now()
        assert [(r["_rhei_op"], r["name"]) for r in feed(lake)] == [("I", "alice"), ("U", "Alice"), ("U", "ALICE")]
        assert_lake_is_sqlite(lake, app, "t")


def test_key_case_change_under_nocase_is_a_delete_and_an_insert(tmp_path):
    ddl = "CREATE TABLE t (code TEXT COLLATE NOCASE PRIMARY KEY, v INTEGER)"
    with captured(tmp_path, ddl, "INSERT INTO t VALUES ('a', 1)") as (_, app, lake):
        app.execute("UPDATE t SET code = 'A' WHERE code = 'a'")
        lake.sync_now()
        assert [(r["_rhei_op"], r["code"]) for r in feed(lake)] == [("I", "a"), ("D", "a"), ("I", "A")]
        assert_lake_is_sqlite(lake, app, "t")


def test_trailing_blank_change_under_rtrim_is_captured(tmp_path):
    ddl = "CREATE TABLE t (k TEXT COLLATE RTRIM PRIMARY KEY, v TEXT COLLATE RTRIM)"
    with captured(tmp_path, ddl, "INSERT INTO t VALUES ('x', 'y')") as (_, app, lake):
        app.execute("UPDATE t SET v = 'y  ' WHERE k = 'x'")
        app.execute("UPDATE t SET k = 'x ' WHERE k = 'x'")
        lake.sync_now()
        assert [(r["_rhei_op"], r["k"], r["v"]) for r in feed(lake)] == [
            ("I", "x", "y"),
            ("U", "x", "y  "),
            ("D", "x", "y  "),
            ("I", "x ", "y  "),
        ]
        assert_lake_is_sqlite(lake, app, "t")


def test_a_collation_only_the_application_registers_is_neither_needed_nor_used(tmp_path):
    """The app's connection registers a collation that ignores case; the lake's never does."""
    db = str(tmp_path / "app.db")
    app = sqlite3.connect(db, isolation_level=None)
    app.create_collation("ci", lambda a, b: (a.lower() > b.lower()) - (a.lower() < b.lower()))
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT COLLATE ci, tag TEXT COLLATE ci UNIQUE)")
    app.execute("INSERT INTO t VALUES (1, 'bob', 'x'), (2, 'eve', 'y')")
    with rhei_lake.open(oltp_path=db, storage="memory://") as lake:
        lake.register_table("t")
        lake.execute("UPDATE t SET name = 'Bob' WHERE id = 1")  # no index on name: the lake can write it
        app.execute("PRAGMA recursive_triggers = OFF")
        app.execute("UPDATE t SET name = 'BOB' WHERE id = 1")
        app.execute("INSERT OR REPLACE INTO t VALUES (3, 'mallory', 'Y')")  # conflicts with 2 under ci
        lake.sync_now()
        assert [(r["_rhei_op"], r["id"], r["name"]) for r in feed(lake)][2:] == [
            ("U", 1, "Bob"),
            ("U", 1, "BOB"),
            ("D", 2, "eve"),
            ("I", 3, "mallory"),
        ]
        assert_lake_is_sqlite(lake, app, "t")


def test_storage_class_changes_are_captured(tmp_path):
    """1 -> 1.0 -> '1' compare equal in SQL; in a column without a type each is stored as given."""
    ddl = "CREATE TABLE t (id INTEGER PRIMARY KEY, v, n NUMERIC, i INTEGER)"
    row = "INSERT INTO t VALUES (1, 'x', 1, -9223372036854775808)"
    with captured(tmp_path, ddl, row, types={"v": "TEXT"}) as (_, app, _lake):
        app.execute("UPDATE t SET v = 1")
        app.execute("UPDATE t SET v = 1.0")
        app.execute("UPDATE t SET v = '1'")
        app.execute("UPDATE t SET v = '1'")  # no change: no event
        app.execute("UPDATE t SET n = 1.0, i = -9223372036854775808")  # stored as before: no event
        app.execute("UPDATE t SET i = -9223372036854775808.0")  # too big to be an integer: stays a real
        logged = app.execute(
            "SELECT op, typeof(c1), typeof(c3) FROM _rhei_cdc_log WHERE op != 'S' ORDER BY seq"
        ).fetchall()
        assert logged == [
            ("U", "integer", "integer"),
            ("U", "real", "integer"),
            ("U", "text", "integer"),
            ("U", "text", "real"),
        ]


def test_negative_zero_is_kept_where_sqlite_keeps_it(tmp_path):
    """A REAL column stores -0.0 as 0 (an integer on disk); a column without a type keeps the sign."""
    ddl = "CREATE TABLE t (id INTEGER PRIMARY KEY, r REAL, v)"
    with captured(tmp_path, ddl, "INSERT INTO t VALUES (1, 0.0, 0.0)", types={"v": "REAL"}) as (_, app, lake):
        app.execute("UPDATE t SET r = -0.0, v = -0.0")
        lake.sync_now()
        assert_lake_is_sqlite(lake, app, "t")
        (row,) = lake.query("SELECT r, v FROM t", hint="olap").to_pylist()
        assert struct.pack(">d", row["r"]) == struct.pack(">d", 0.0)
        assert struct.pack(">d", row["v"]) == struct.pack(">d", -0.0)
        app.execute("UPDATE t SET v = 0.0")
        lake.sync_now()
        assert_lake_is_sqlite(lake, app, "t")
