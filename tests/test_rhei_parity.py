"""Rhei API parity: ``initial_sync`` repairs a drifted lake and leaves one in step alone; ``olap()``; ``query_with_hint``."""

from __future__ import annotations

import sqlite3

import pytest

import rhei_lake
from rhei_lake.capture.triggers import LOG_TABLE
from tests.support.mirror_check import by_bits
from tests.support.oracle import assert_same_state, lake_state, sqlite_state
from tests.support.workload import SCHEMA, Workload


def _versions(lake: rhei_lake.Lake, table: str) -> list[tuple]:
    rows = lake.query(f"SELECT _rhei_seq FROM {table}_history", hint="olap").column(0).to_pylist()
    return sorted(rows)


@pytest.mark.parametrize("seed", [5, 6])
def test_initial_sync_repairs_lost_events_and_adds_no_version_for_equal_rows(tmp_path, engine, seed):
    db = tmp_path / "app.db"
    with rhei_lake.open(oltp_path=str(db), storage=str(tmp_path / "lake"), engine=engine) as lake:
        for ddl in SCHEMA.values():
            lake.execute(ddl)
        for table in SCHEMA:
            lake.register_table(table)
        workload = Workload(seed)
        workload.run(lambda sql, params: lake.execute(sql, params), 60)
        lake.sync_now()
        oracle = sqlite3.connect(db, isolation_level=None)
        for table in SCHEMA:  # in step: nothing to commit, no new version
            before = _versions(lake, table)
            assert lake.initial_sync(table).events == 0
            assert _versions(lake, table) == before
        # Lost events: writes whose captured events vanish before they are synced.
        workload.run(lambda sql, params: lake.execute(sql, params), 40)
        oracle.execute(f"DELETE FROM {LOG_TABLE} WHERE seq < (SELECT max(seq) FROM {LOG_TABLE})")  # keeps max_seq
        lake.sync_now()
        for table in SCHEMA:
            keys = list(lake.table_spec(table).primary_key)
            spec = lake.table_spec(table)
            index = [spec.column_names.index(k) for k in spec.primary_key]
            lake_rows = {tuple(r[i] for i in index): r for r in by_bits(lake_state(lake, table))}
            db_rows = {tuple(r[i] for i in index): r for r in by_bits(sqlite_state(oracle, table))}
            differing = {k for k in lake_rows.keys() | db_rows.keys() if lake_rows.get(k) != db_rows.get(k)}
            last = lake.query(f"SELECT max(_rhei_seq) AS m FROM {table}_changes", hint="olap").column(0)[0].as_py()
            report = lake.initial_sync(table)
            assert_same_state(lake, oracle, table)
            new = lake.query(
                f"SELECT {', '.join(keys)} FROM {table}_changes WHERE _rhei_seq > {last}", hint="olap"
            ).to_pylist()
            assert report.events == len(new) == len(differing) > 0
            assert {tuple(r.values()) for r in new} == differing, "a new version for a row the lake already had"
            assert lake.initial_sync(table).events == 0
        lake.compact()
        for table in SCHEMA:
            assert_same_state(lake, oracle, table)


def test_initial_sync_of_an_unknown_table_names_the_known_ones(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "a.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        lake.register_table("t")
        with pytest.raises(rhei_lake.SchemaError, match="no mirrored table 'nope'.*t"):
            lake.initial_sync("nope")


def test_olap_gives_the_engines_session_with_the_views_apart_from_the_lakes(tmp_path, engine):
    import pyarrow as pa

    with rhei_lake.open(oltp_path=str(tmp_path / "a.db"), storage=str(tmp_path / "lake"), engine=engine) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        lake.sync_now()
        session = lake.olap()
        mine = pa.table({"id": [2, 3], "w": ["x", "y"]})
        sql = "SELECT t.id, v, w FROM t JOIN mine ON t.id = mine.id"
        if engine == "duckdb":
            session.register("mine", mine)
            session.execute("CREATE TABLE scratch AS SELECT 1 AS x")  # the user's, in memory
            joined = session.sql(sql).to_arrow_table()
            history = session.sql("SELECT count(*) FROM t_history").fetchone()[0]
        else:
            session.register_record_batches("mine", [mine.to_batches()])
            joined = session.sql(sql).to_arrow_table()
            history = session.sql("SELECT count(*) AS n FROM t_history").to_pylist()[0]["n"]
        assert joined.to_pylist() == [{"id": 2, "v": "b", "w": "x"}]
        assert history == 2
        with pytest.raises(rhei_lake.QueryError):
            lake.query("SELECT * FROM mine", hint="olap")  # never in the lake's own session
        assert lake.query_with_hint("SELECT count(*) AS n FROM t", "olap").to_pylist() == [{"n": 2}]
