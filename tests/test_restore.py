"""restore_sqlite(): a new SQLite database with the tables' state at an instant, from the lake alone."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime

import pytest

import rhei_lake
from rhei_lake.errors import ConfigError, SchemaError
from tests.support.oracle import exact_rows, oltp_oracle, sqlite_state
from tests.support.workload import SCHEMA, Workload


def _instant() -> datetime:
    time.sleep(0.003)  # SQLite's clock has millisecond resolution
    now = datetime.now(UTC)
    time.sleep(0.003)
    return now


def _restored_state(path, table):
    conn = sqlite3.connect(path)
    try:
        return sqlite_state(conn, table)
    finally:
        conn.close()


def test_restore_round_trip_at_several_instants(storage, tmp_path):
    url, options = storage
    db = tmp_path / "app.db"
    oracle = sqlite3.connect(db, isolation_level=None)
    for ddl in SCHEMA.values():
        oracle.execute(ddl)
    workload = Workload(seed=11)
    workload.run(lambda sql, params: oracle.execute(sql, params), 30)
    recorded: list[tuple[datetime, dict[str, list]]] = []
    with rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options, tail_flush_segments=3) as lake:
        for table in SCHEMA:
            lake.register_table(table)
        recorded.append((_instant(), {t: sqlite_state(oracle, t) for t in SCHEMA}))
        for round_ in range(6):
            workload.run(lambda sql, params: lake.execute(sql, params), 25)
            if round_ % 2:
                lake.sync_now()
            recorded.append((_instant(), {t: sqlite_state(oracle, t) for t in SCHEMA}))
        lake.sync_now()
        for i, (instant, expected) in enumerate(recorded):
            target = tmp_path / f"restored-{i}.db"
            report = lake.restore_sqlite(target, as_of=instant)
            assert report.as_of == instant and set(report.rows) == set(SCHEMA)
            for table in SCHEMA:
                assert _restored_state(target, table) == expected[table], (i, table)
                assert report.rows[table] == len(expected[table])
        latest = lake.restore_sqlite(tmp_path / "latest.db")
        assert latest.as_of is None
        for table in SCHEMA:
            assert _restored_state(tmp_path / "latest.db", table) == sqlite_state(oracle, table)
    oracle.close()


def test_restore_from_a_read_only_lake_keeps_declared_types_and_keys(durable_storage, tmp_path):
    url, options = durable_storage
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options) as lake:
        lake.execute(
            "CREATE TABLE kinds (id INTEGER PRIMARY KEY, flag BOOLEAN, day DATE, amount DECIMAL(10,2), "
            "at TIMESTAMP, label VARCHAR(8) NOT NULL, raw BLOB)"
        )
        lake.execute("CREATE TABLE pairs (a TEXT, b INTEGER, PRIMARY KEY (a, b))")
        lake.register_table("kinds")
        lake.register_table("pairs")
        lake.execute(
            "INSERT INTO kinds VALUES (1, 1, '2024-02-29', '12.50', '2024-01-01T10:00:00.25+02:00', 'x', x'00ff')"
        )
        lake.execute("INSERT INTO kinds VALUES (2, 0, NULL, 7, 1700000000, 'y', NULL)")
        lake.execute("INSERT INTO pairs VALUES ('k', 1)")
        lake.sync_now()
        expected = lake.query("SELECT * FROM kinds ORDER BY id").to_pylist()
    target = tmp_path / "restored.db"
    with rhei_lake.open(storage=url, storage_options=options) as reader:
        report = reader.restore_sqlite(target, tables=["KINDS"])
        assert report.rows == {"kinds": 2}
        with pytest.raises(SchemaError, match="no mirrored table"):
            reader.restore_sqlite(tmp_path / "other.db", tables=["nope"])
    conn = sqlite3.connect(target)
    info = [(r[1], r[2], r[3], r[5]) for r in conn.execute("PRAGMA table_info(kinds)")]
    assert info == [
        ("id", "INTEGER", 0, 1),
        ("flag", "BOOLEAN", 0, 0),
        ("day", "DATE", 0, 0),
        ("amount", "DECIMAL(10,2)", 0, 0),
        ("at", "TIMESTAMP", 0, 0),
        ("label", "VARCHAR(8)", 1, 0),
        ("raw", "BLOB", 0, 0),
    ]
    assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == [("kinds",)]
    assert conn.execute("SELECT * FROM kinds ORDER BY id").fetchall() == [
        (1, 1, "2024-02-29", 12.5, "2024-01-01 08:00:00.250000", "x", b"\x00\xff"),
        (2, 0, None, 7, "2023-11-14 22:13:20", "y", None),
    ]
    conn.close()
    # the restored database mirrors to the same values
    with rhei_lake.open(oltp_path=str(target), storage="memory://") as again:
        again.register_table("kinds")
        assert again.query("SELECT * FROM kinds ORDER BY id").to_pylist() == expected


def test_restore_never_clobbers_and_writes_atomically(tmp_path):
    db = tmp_path / "app.db"
    with rhei_lake.open(oltp_path=str(db), storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute_batch([("INSERT INTO t VALUES (?, ?)", (i, f"v{i}")) for i in range(1000)])
        lake.sync_now()
        target = tmp_path / "out.db"
        target.write_bytes(b"precious")
        with pytest.raises(ConfigError, match="already exists"):
            lake.restore_sqlite(target)
        assert target.read_bytes() == b"precious"
        with pytest.raises(ConfigError, match="own live"):
            lake.restore_sqlite(db, overwrite=True)
        with pytest.raises(ConfigError, match="does not exist"):
            lake.restore_sqlite(tmp_path / "missing-dir" / "x.db")

        def interrupt(table, done, total):
            if done:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            lake.restore_sqlite(target, overwrite=True, progress=interrupt)
        assert target.read_bytes() == b"precious"
        assert sorted(os.listdir(tmp_path)) == ["app.db", "app.db-shm", "app.db-wal", "lake", "out.db"]

        (tmp_path / "out.db-wal").write_bytes(b"a stale WAL of the file being replaced")
        calls = []
        report = lake.restore_sqlite(target, overwrite=True, progress=lambda *a: calls.append(a))
        assert not (tmp_path / "out.db-wal").exists()
        assert calls[0] == ("t", 0, 1000) and calls[-1] == ("t", 1000, 1000)
        assert report.rows == {"t": 1000}
        assert _restored_state(target, "t") == sqlite_state(oltp_oracle(lake), "t")


def test_restore_refuses_an_instant_before_the_first_sync(tmp_path):
    """Before its first sync the lake does not know a table's state: restoring it empty would be a lie."""
    before = datetime.now(UTC)
    time.sleep(0.01)
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        lake.execute("INSERT INTO t VALUES (1)")
        lake.register_table("t")
        lake.sync_now()
        with pytest.raises(ConfigError, match="before the lake's history of 't' begins"):
            lake.restore_sqlite(tmp_path / "early.db", as_of=before)
        assert not (tmp_path / "early.db").exists()
        report = lake.restore_sqlite(tmp_path / "now.db", as_of=datetime.now(UTC))
        assert report.rows == {"t": 1}


def test_restore_gives_back_what_sqlite_stored_under_each_affinity(tmp_path):
    """A JSON column's integers and reals, a whole decimal past 2**53, text keys: stored as SQLite held them."""
    db = tmp_path / "app.db"
    with rhei_lake.open(oltp_path=str(db), storage="memory://") as lake:
        lake.execute("CREATE TABLE v (id TEXT PRIMARY KEY, j JSON, d DECIMAL(38,2), u UUID, b BOOLEAN)")
        lake.execute_batch(
            [
                ("INSERT INTO v VALUES (?, ?, ?, ?, ?)", ("a", "42", 9007199254740993, "12345678901234567890123", 1)),
                ("INSERT INTO v VALUES (?, ?, ?, ?, ?)", ("b", "0.30000000000000004", "12.5", "7e3f-x", 0)),
                ("INSERT INTO v VALUES (?, ?, ?, ?, ?)", ("c", '{"a": 1}', -0.25, None, None)),
            ]
        )
        lake.register_table("v")
        original = sqlite_state(oltp_oracle(lake), "v")
        lake.restore_sqlite(tmp_path / "restored.db")
    assert _restored_state(tmp_path / "restored.db", "v") == original
    conn = sqlite3.connect(tmp_path / "restored.db")
    assert conn.execute("SELECT typeof(j), typeof(d), typeof(u) FROM v WHERE id = 'a'").fetchone() == (
        "integer",
        "integer",
        "real",
    )


def test_restore_gives_back_reals_held_in_text_mirrored_columns_bit_for_bit(tmp_path):
    """A REAL in a NUMERIC-affinity column the lake mirrors as text comes back as the same double.

    SQLite's own text-to-REAL conversion is one unit off for some spellings
    ('1.0359917127425884e-297'): restore must not route the value through it.
    """
    db = tmp_path / "app.db"
    reals = [1.0359917127425884e-297, 0.30000000000000004, 5e-324, 1.7976931348623157e308, -2.5e-300]
    with rhei_lake.open(oltp_path=str(db), storage="memory://") as lake:
        lake.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, at TIME, j JSON)")
        lake.execute_batch([("INSERT INTO r VALUES (?, ?, ?)", (i, v, v)) for i, v in enumerate(reals)])
        lake.register_table("r")
        assert str(lake.table_spec("r").columns[1].arrow_type) == "string"
        original = exact_rows(sqlite_state(oltp_oracle(lake), "r"))
        lake.restore_sqlite(tmp_path / "restored.db")
    assert exact_rows(_restored_state(tmp_path / "restored.db", "r")) == original
