"""Compaction changes how the lake is stored, never what it answers; expiry only trims the change feed."""

from __future__ import annotations

import sqlite3

import rhei_lake
from tests.support.oracle import _sort_key, assert_same_state
from tests.support.workload import SCHEMA, Workload, create_tables

VIEWS = ("{t}", "{t}_history", "{t}_changes")


def _snapshot(lake: rhei_lake.Lake) -> dict[str, list[tuple]]:
    out = {}
    for table in SCHEMA:
        for pattern in VIEWS:
            name = pattern.format(t=table)
            rows = lake.query(f'SELECT * FROM "{name}"').to_pylist()
            out[name] = sorted((tuple(r.values()) for r in rows), key=_sort_key)
    return out


def _workload_lake(storage, tmp_path, **options) -> tuple[rhei_lake.Lake, sqlite3.Connection, Workload]:
    url, storage_options = storage
    db = tmp_path / "app.db"
    oracle = create_tables(db)
    workload = Workload(7, key_space=30)
    workload.run(lambda sql, params: oracle.execute(sql, params), 30)  # rows the snapshot brings in
    lake = rhei_lake.open(
        oltp_path=str(db), storage=url, storage_options=storage_options, tail_flush_segments=4, **options
    )
    for table in SCHEMA:
        lake.register_table(table)
    return lake, oracle, workload


def test_views_are_the_same_before_and_after_compaction(storage, tmp_path):
    lake, oracle, workload = _workload_lake(storage, tmp_path)
    with lake:
        for round_ in range(4):
            for _ in range(3):
                workload.run(lambda sql, params: lake.execute(sql, params), 25)
                lake.sync_now()
            before = _snapshot(lake)
            report = lake.compact(vacuum_retention="0")
            assert report.events_folded > 0
            assert _snapshot(lake) == before, f"round {round_}: compaction changed an answer"
            for table in SCHEMA:
                assert_same_state(lake, oracle, table)
        # and a reader that has nothing but the storage URL sees the same
        url, options = storage
        with rhei_lake.open(storage=url, storage_options=options) as reader:
            assert _snapshot(reader) == _snapshot(lake)


def test_changelog_retention_expires_only_folded_old_rows(storage, tmp_path):
    lake, oracle, workload = _workload_lake(storage, tmp_path, changelog_retention="1h")
    with lake:
        workload.run(lambda sql, params: lake.execute(sql, params), 60)
        lake.sync_now()
        lake.compact()
        before = _snapshot(lake)
        assert lake.compact().tables["items"].changes_expired == 0  # nothing is an hour old
        assert _snapshot(lake) == before

        # Now expire everything folded: the current state and history stay whole, and
        # t_changes keeps exactly the events synced after the fold.
        workload.run(lambda sql, params: lake.execute(sql, params), 40)
        lake.sync_now()
        unfolded = {
            table: lake.query(f"SELECT * FROM {table}_changes WHERE _rhei_seq > {_folded(lake, table)}")
            for table in SCHEMA
        }
        report = lake.compact(vacuum_retention="0")  # configured retention applies: 1h, nothing expires
        assert all(t.changes_expired == 0 for t in report.tables.values())
        after_fold = _snapshot(lake)
        expiring = rhei_lake.open(storage=storage[0], storage_options=storage[1], changelog_retention="0")
        with expiring:
            report = expiring.compact(vacuum_retention="0")
            expired = {name: t.changes_expired for name, t in report.tables.items()}
        assert all(count > 0 for count in expired.values())
        lake.refresh()
        final = _snapshot(lake)
        for table in SCHEMA:
            assert final[table] == after_fold[table]
            assert final[f"{table}_history"] == after_fold[f"{table}_history"]
            assert final[f"{table}_changes"] == []
            assert len(after_fold[f"{table}_changes"]) == expired[table]
            assert_same_state(lake, oracle, table)
        assert all(t.num_rows > 0 for t in unfolded.values())


def _folded(lake: rhei_lake.Lake, table: str) -> int:
    return lake.storage.table_store(table, "history").app_version("rhei.folded") or 0
