"""The history, changes and current tables are plain Delta: DuckDB's delta extension reads the same rows."""

from __future__ import annotations

import os

import pytest

import rhei_lake
from tests.support import duckdb_delta
from tests.support.oracle import _sort_key
from tests.support.workload import SCHEMA, Workload


@pytest.fixture(scope="module")
def duck():
    con = duckdb_delta.connect()
    yield con
    con.close()


def _rows(table) -> list[tuple]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=_sort_key)


def _duck_rows(duck, path: str, columns: list[str]) -> list[tuple]:
    cols = ", ".join(f'"{c}"' for c in columns)
    return _rows(duck.execute(f"SELECT {cols} FROM delta_scan('{path}')").to_arrow_table())


def _fill(lake: rhei_lake.Lake, seed: int) -> None:
    for table in SCHEMA:
        lake.execute(SCHEMA[table])
        lake.register_table(table)
    workload = Workload(seed, key_space=25)
    for _ in range(6):
        workload.run(lambda sql, params: lake.execute(sql, params), 40)
        lake.sync_now()


def test_duckdb_reads_history_and_changes_like_rhei_lake(duck, tmp_path):
    root = tmp_path / "lake"
    with rhei_lake.open(oltp_path=str(tmp_path / "t.db"), storage=str(root), tail_flush_segments=2) as lake:
        _fill(lake, seed=31)
        lake.compact()  # history written; changes flushed, bin-packed, checkpointed
        for table in SCHEMA:
            spec = lake.table_spec(table)
            history_cols = [*spec.column_names, "_rhei_valid_from", "_rhei_valid_to", "_rhei_seq"]
            changes_cols = [*spec.column_names, "_rhei_seq", "_rhei_op", "_rhei_ts"]
            ours = _rows(lake.query(f"SELECT {', '.join(history_cols)} FROM {table}_history"))
            assert ours and _duck_rows(duck, os.path.join(root, table, "history"), history_cols) == ours
            ours = _rows(lake.query(f"SELECT {', '.join(changes_cols)} FROM {table}_changes"))
            assert ours and _duck_rows(duck, os.path.join(root, table, "changes"), changes_cols) == ours


def test_duckdb_reads_mirror_mode_current_like_rhei_lake(duck, tmp_path):
    root = tmp_path / "lake"
    with rhei_lake.open(oltp_path=str(tmp_path / "m.db"), storage=str(root), sync_mode="mirror") as lake:
        _fill(lake, seed=32)
        lake.compact()
        for table in SCHEMA:
            columns = lake.table_spec(table).column_names
            ours = _rows(lake.query(f"SELECT * FROM {table}"))
            assert ours and _duck_rows(duck, os.path.join(root, table, "current"), columns) == ours
            assert not (root / table / "history").exists()
