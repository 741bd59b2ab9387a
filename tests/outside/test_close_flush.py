"""close() leaves every synced event in the Delta changelogs: outside engines read it all right after."""

from __future__ import annotations

import sqlite3

import pytest
from deltalake import DeltaTable

import rhei_lake
from rhei_lake import faults
from rhei_lake.errors import StorageError
from tests.support import duckdb_delta
from tests.support.outside import (
    arrow_rows,
    current_from_changes,
    deltalake_table,
    duckdb_current_sql,
    sqlite_columns,
    sqlite_rows,
    table_uri,
)
from tests.support.workload import SCHEMA, Workload, create_tables

KEYS = {"items": ["id"], "pairs": ["region", "code"]}


def _mirror(tmp_path, url: str, options: dict[str, str], *, seed: int, rounds: int = 5, **config):
    """A lake whose tail holds events when it is closed (flush thresholds far away); returns (lake, conn)."""
    db = tmp_path / "app.db"
    create_tables(db).close()
    lake = rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options, tail_flush_segments=1000, **config)
    for table in SCHEMA:
        lake.register_table(table)
    workload = Workload(seed, key_space=30)
    for _ in range(rounds):
        workload.run(lambda sql, params: lake.execute(sql, params), 25)
        lake.sync_now()
    return lake


def _changes_versions(url: str, options: dict[str, str]) -> dict[str, int]:
    return {t: DeltaTable(table_uri(url, t, "changes"), storage_options=options or None).version() for t in SCHEMA}


def _assert_outside_readers_match(url: str, options: dict[str, str], conn) -> None:
    duck = duckdb_delta.connect(options or None)
    try:
        for table, key in KEYS.items():
            columns = sqlite_columns(conn, table)
            expected = sqlite_rows(conn, table, columns)
            assert expected, "the workload left rows to compare"
            uri = table_uri(url, table, "changes")
            by_duckdb = arrow_rows(duck.execute(duckdb_current_sql(uri, columns, key)).to_arrow_table(), columns)
            by_deltalake = arrow_rows(current_from_changes(deltalake_table(uri, options), key), columns)
            assert by_duckdb == expected, f"{table}: DuckDB differs from SQLite"
            assert by_deltalake == expected, f"{table}: deltalake differs from SQLite"
    finally:
        duck.close()


def test_engines_read_every_synced_event_right_after_close(tmp_path, durable_storage):
    url, options = durable_storage
    lake = _mirror(tmp_path, url, options, seed=7)
    status = lake.sync_status().tables
    tails = {t: status[t].tail_rows for t in SCHEMA}
    assert all(tails.values()), f"the test needs events waiting in the tail at close: {tails}"
    before = _changes_versions(url, options)
    lake.close()
    after = _changes_versions(url, options)
    assert all(after[t] - before[t] <= 1 for t in SCHEMA), (
        f"close() made more than one commit per table: {before} -> {after}"
    )
    with sqlite3.connect(tmp_path / "app.db") as source:
        _assert_outside_readers_match(url, options, source)


def test_before_close_the_tail_is_invisible_to_outside_engines(tmp_path):
    """The other side of the promise: the test above would fail without the flush at close."""
    url = str(tmp_path / "lake")
    lake = _mirror(tmp_path, url, {}, seed=8, rounds=3)
    try:
        synced = lake.sync_status().tables["items"].synced_seq
        seen = deltalake_table(table_uri(url, "items", "changes"), None)
        newest = max(seen.column("_rhei_seq").to_pylist(), default=0)
        assert newest < synced, "events past the snapshot should still be in the tail"
    finally:
        lake.close()
    seen = deltalake_table(table_uri(url, "items", "changes"), None)
    assert max(seen.column("_rhei_seq").to_pylist()) == synced


def test_close_with_the_background_loop_flushes_the_final_sync(tmp_path):
    url = str(tmp_path / "lake")
    lake = _mirror(tmp_path, url, {}, seed=9, rounds=2, sync_interval=30)
    Workload(10, key_space=30).run(lambda sql, params: lake.execute(sql, params), 40)  # only the final sync sees these
    lake.close()
    with sqlite3.connect(tmp_path / "app.db") as source:
        _assert_outside_readers_match(url, {}, source)


def test_a_failed_flush_at_close_still_closes_and_loses_nothing(tmp_path):
    url = str(tmp_path / "lake")
    lake = _mirror(tmp_path, url, {}, seed=11, rounds=2)

    def refuse(_name: str) -> None:
        raise StorageError("injected: the store refused the flush")

    with faults.armed("flush.before_commit", refuse, times=0):
        with pytest.raises(StorageError, match="injected"):
            lake.close()
    with pytest.raises(rhei_lake.RheiError, match="closed"):
        lake.sync_now()
    # The events stayed in the tail: the next open holds them, and its close flushes them.
    rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url).close()
    with sqlite3.connect(tmp_path / "app.db") as source:
        _assert_outside_readers_match(url, {}, source)


def test_a_read_only_lake_does_not_flush_at_close(tmp_path):
    """Only the syncing process folds its tail (a second flusher could append the same events twice)."""
    url = str(tmp_path / "lake")
    lake = _mirror(tmp_path, url, {}, seed=12, rounds=2)
    reader = rhei_lake.open(storage=url)
    before = _changes_versions(url, {})
    reader.close()
    assert _changes_versions(url, {}) == before
    lake.close()
