"""Every mainstream reader reads every file any path writes, and gets SQLite's answers.

A seeded workload of inserts, updates, primary-key changes and deletes, with
compactions in between (folds through MERGE, bin-packing, vacuum),
a column added halfway, in temporal and mirror mode. Then deltalake, DuckDB's
``delta_scan``, Polars' ``scan_delta`` and Daft's ``read_deltalake`` each read
every Delta table: they must return the same rows, and the current state and
the state at every recorded instant computed from what they read must be
SQLite's, floats bit for bit. Every data file must carry plain Arrow types.
"""

from __future__ import annotations

import sqlite3
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

import rhei_lake
from rhei_lake.storage.plain_types import has_view_types
from rhei_lake.timeutil import now_micros
from tests.support.outside import exact, sqlite_columns, sqlite_rows, table_uri
from tests.support.readers import READERS, read_all
from tests.support.workload import SCHEMA, Workload, create_tables

KEYS = {"items": ["id"], "pairs": ["region", "code"]}
ITEMS_COLUMNS = "(id, name, price, qty, tag, note)"


def _execute(lake: rhei_lake.Lake):
    def run(sql: str, params: tuple) -> None:
        # After the added column, the workload's positional INSERTs name their columns.
        lake.execute(sql.replace("INTO items VALUES", f"INTO items {ITEMS_COLUMNS} VALUES"), params)

    return run


def run_workload(tmp_path, url: str, options: dict[str, str], mode: str, seed: int):
    """Mirror a workload into ``url``; returns the source path and [(instant, {table: rows})] snapshots."""
    db = tmp_path / f"{mode}.db"
    create_tables(db).close()
    lake = rhei_lake.open(
        oltp_path=str(db),
        storage=url,
        storage_options=options,
        sync_mode=mode,
        tail_flush_segments=3,
        changelog_retention="forever",
        vacuum_retention="0",
    )
    snapshots = []
    try:
        for table in SCHEMA:
            lake.register_table(table)
        workload = Workload(seed, key_space=24)
        for round_ in range(6):
            workload.run(_execute(lake), 40)
            lake.sync_now()
            if round_ == 2:
                lake.add_column("items", "extra", "TEXT")
                lake.execute("UPDATE items SET extra = 'e' || id WHERE id % 3 = 0")
                lake.sync_now()
            if round_ in (1, 3):
                lake.compact()
            time.sleep(0.005)
            instant = now_micros()
            with sqlite3.connect(db) as conn:
                snapshots.append(
                    (
                        instant,
                        {t: (sqlite_columns(conn, t), sqlite_rows(conn, t, sqlite_columns(conn, t))) for t in SCHEMA},
                    )
                )
            time.sleep(0.005)
        lake.compact()  # everything folded: history (or current) alone holds every state
    finally:
        lake.close()
    return db, snapshots


def _alive(history: pa.Table, instant: int | None, columns: list[str]) -> list[tuple]:
    rows = history.to_pylist()
    keep = [
        r
        for r in rows
        if (instant is None and r["_rhei_valid_to"] is None)
        or (
            instant is not None
            and r["_rhei_valid_from"] <= instant
            and (r["_rhei_valid_to"] is None or r["_rhei_valid_to"] > instant)
        )
    ]
    return exact(tuple(r[c] for c in columns) for r in keep)


def _rows(table: pa.Table) -> list[tuple]:
    return exact(tuple(r.values()) for r in table.to_pylist())


def _assert_plain_files(url: str, options: dict[str, str], uris: dict[str, str]) -> None:
    """No data file has view types, and every file's column types are the table's (one schema per table)."""
    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    for name, uri in uris.items():
        dt = DeltaTable(uri, storage_options=options or None)
        expected = {f.name: f.type for f in pa.schema(dt.schema().to_arrow())}
        fs = pafs.PyFileSystem(DeltaStorageHandler(uri, options or None))
        paths = pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist()
        assert paths, f"{name}: no data files"
        for path in paths:
            with fs.open_input_file(path) as handle:
                schema = pq.read_schema(handle)
            assert not has_view_types(schema), f"{name}/{path}: view types {schema}"
            for field in schema:
                assert field.type == expected[field.name], f"{name}/{path}: {field.name} is {field.type}"


@pytest.mark.parametrize("mode", ["temporal", "mirror"])
def test_every_reader_reads_every_table_like_sqlite(tmp_path, durable_storage, mode):
    url, options = durable_storage
    db, snapshots = run_workload(tmp_path, url, options, mode, seed=41 if mode == "temporal" else 42)
    derived = "history" if mode == "temporal" else "current"
    uris = {f"{t}_{kind}": table_uri(url, t, kind) for t in SCHEMA for kind in ("changes", derived)}
    _assert_plain_files(url, options, uris)

    tables = read_all(uris, options)
    assert set(tables) == set(READERS)
    reference = {name: _rows(t) for name, t in tables["deltalake"].items()}
    for reader in READERS:
        for name, table in tables[reader].items():
            assert _rows(table) == reference[name], f"{reader} reads {name} differently from deltalake"

    final = snapshots[-1][1]
    with sqlite3.connect(db) as conn:
        for t in SCHEMA:
            assert final[t][1] == sqlite_rows(conn, t, final[t][0])
    for reader in READERS:
        for t in SCHEMA:
            columns, expected = final[t]
            assert expected, f"{t}: the workload left no rows"
            table = tables[reader][f"{t}_{derived}"]
            if mode == "mirror":
                assert exact(zip(*(table.column(c).to_pylist() for c in columns))) == expected, (reader, t)
                continue
            assert _alive(table, None, columns) == expected, f"{reader}: current {t} differs from SQLite"
            for i, (instant, state) in enumerate(snapshots):
                cols, rows = state[t]
                assert _alive(table, instant, cols) == rows, f"{reader}: {t} as of snapshot {i} differs from SQLite"
