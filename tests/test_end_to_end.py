"""The core user story on every storage tier, checked against SQLite."""

from __future__ import annotations

import sqlite3

import pyarrow as pa
import pytest

import rhei_lake
from tests.support.oracle import assert_same_state, oltp_oracle
from tests.support.workload import SCHEMA, Workload


def test_user_story(storage, engine, tmp_path):
    url, options = storage
    db = tmp_path / "app.db"
    with rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options, engine=engine) as lake:
        lake.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL, placed_at TEXT)")
        spec = lake.register_table("orders")
        assert spec.primary_key == ("id",)
        assert spec.schema.field("total").type == pa.float64()
        lake.execute("INSERT INTO orders VALUES (?, ?, ?, ?)", (1, "ada", 99.5, "2026-11-23"))
        lake.execute("UPDATE orders SET total = 120 WHERE id = 1")
        lake.execute("INSERT INTO orders VALUES (?, ?, ?, ?)", (2, "bob", 0.1 + 0.2, "2026-11-24"))
        report = lake.sync_now()
        assert report.events == 3
        assert report.tables["orders"].watermark > 0

        totals = lake.query("SELECT customer, SUM(total) AS total FROM orders GROUP BY customer ORDER BY customer")
        assert isinstance(totals, pa.Table)
        assert totals.to_pylist() == [{"customer": "ada", "total": 120.0}, {"customer": "bob", "total": 0.1 + 0.2}]

        feed = lake.query("SELECT id, total, _rhei_op FROM orders_changes ORDER BY _rhei_seq").to_pylist()
        assert feed == [
            {"id": 1, "total": 99.5, "_rhei_op": "I"},
            {"id": 1, "total": 120.0, "_rhei_op": "U"},
            {"id": 2, "total": 0.1 + 0.2, "_rhei_op": "I"},
        ]
        schema = lake.query("SELECT * FROM orders_changes LIMIT 0").schema
        assert schema.field("_rhei_seq").type == pa.int64()
        assert schema.field("_rhei_ts").type == pa.timestamp("us", tz="UTC")

        lake.execute("DELETE FROM orders WHERE id = 1")
        assert lake.sync_now().events == 1
        assert lake.query("SELECT id FROM orders").to_pylist() == [{"id": 2}]
        assert lake.sync_now().events == 0
        assert_same_state(lake, oltp_oracle(lake), "orders")


@pytest.mark.parametrize("seed", [1, 2])
def test_randomized_workload_matches_sqlite(storage, engine, tmp_path, seed):
    """Hundreds of random statements, syncs at random points, the lake equals SQLite after each."""
    url, options = storage
    db = tmp_path / "app.db"
    oracle = sqlite3.connect(db, isolation_level=None)
    for ddl in SCHEMA.values():
        oracle.execute(ddl)
    workload = Workload(seed)
    workload.run(lambda sql, params: oracle.execute(sql, params), 40)  # rows that exist before registering
    with rhei_lake.open(
        oltp_path=str(db), storage=url, storage_options=options, tail_flush_segments=5, engine=engine
    ) as lake:
        for table in SCHEMA:
            lake.register_table(table)
        rng = workload.rng
        for _ in range(12):
            workload.run(lambda sql, params: lake.execute(sql, params), rng.randint(0, 40))
            lake.sync_now()
            for table in SCHEMA:
                assert_same_state(lake, oracle, table)
        changes = lake.query("SELECT _rhei_seq FROM items_changes UNION ALL SELECT _rhei_seq FROM pairs_changes")
        seqs = changes.column(0).to_pylist()
        assert len(seqs) == len(set(seqs)), "an event was committed twice"


def test_execute_returning_keeps_the_returned_rows_and_the_writes_reach_the_lake(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        inserted = lake.execute_returning("INSERT INTO t (v) VALUES ('a'), ('b') RETURNING id, v || '!' AS shout")
        assert (inserted.columns, inserted.rows, inserted.changed) == (["id", "shout"], [(1, "a!"), (2, "b!")], 2)
        plain = lake.execute_returning("DELETE FROM t WHERE id = 1")
        assert (plain.columns, plain.rows, plain.changed) == ([], [], 1)
        with pytest.raises(rhei_lake.RheiError):
            lake.execute_returning("INSERT INTO t VALUES (2, 'dup') RETURNING id")
        lake.sync_now()
        assert lake.query("SELECT id, v FROM t").to_pylist() == [{"id": 2, "v": "b"}]
