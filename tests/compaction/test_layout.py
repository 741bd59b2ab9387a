"""History is laid out by key: lookups by key read a row group or two, and answer what the oracle answers."""

from __future__ import annotations

import dataclasses
import random
import sqlite3

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import rhei_lake
from rhei_lake.catalog import SEQ, VALID_FROM, VALID_TO
from rhei_lake.compaction import derived
from rhei_lake.storage.delta import DeltaTableStore
from rhei_lake.timeutil import from_micros, to_micros
from tests.support.history_model import HistoryModel, assert_same_history
from tests.support.oracle import _sort_key
from tests.support.workload import SCHEMA, Workload, create_tables

ROUNDS = 12
KEYS = {"items": ("id",), "pairs": ("region", "code")}
ROW_GROUP_ROWS = 64  # many row groups in a small table


def _lake(path, url: str, options: dict[str, str]) -> rhei_lake.Lake:
    # A small target file size: bin-packing runs on the history every compaction.
    return rhei_lake.open(
        oltp_path=str(path), storage=url, storage_options=options, tail_flush_segments=2, target_file_size=64 * 1024
    )


@pytest.fixture(autouse=True)
def small_row_groups(monkeypatch):
    """The derived tables' layout as compaction picks it, but with many row groups in a small table."""
    chosen = derived.layout_of

    def layout_of(spec, mode):
        layout = chosen(spec, mode)
        assert layout is not None and layout.sort_by == (*KEYS.get(spec.name, ("id",)), SEQ)
        return dataclasses.replace(layout, row_group_rows=ROW_GROUP_ROWS)

    monkeypatch.setattr(derived, "layout_of", layout_of)


def _round(conn: sqlite3.Connection, rng: random.Random, next_id: int) -> int:
    """Inserts, updates (some keys several times) and deletes, in one or two transactions."""
    live = [r[0] for r in conn.execute("SELECT id FROM items")]
    with conn:
        for _ in range(rng.randint(20, 60)):
            conn.execute("INSERT INTO items VALUES (?, ?, ?)", (next_id, rng.random() * 1e6, f"n{next_id}"))
            next_id += 1
        for key in rng.sample(live, min(len(live), rng.randint(5, 40))):
            conn.execute("UPDATE items SET v = ?, note = note || '+' WHERE id = ?", (rng.random(), key))
    with conn:
        for key in rng.sample(live, min(len(live), rng.randint(0, 5))):
            conn.execute("DELETE FROM items WHERE id = ?", (key,))
    return next_id


def _literal(value: object) -> str:
    return "'" + value.replace("'", "''") + "'" if isinstance(value, str) else str(int(value))  # type: ignore[call-overload]


def _lookup_history(lake: rhei_lake.Lake, table: str, where: str) -> list[tuple]:
    """``lake_history`` of the rows ``where`` selects, read with that filter (so through the pruned scan)."""
    cols = ", ".join(f'"{c}"' for c in lake.table_spec(table).column_names)
    result = lake.query(f'SELECT {cols}, {VALID_FROM}, {VALID_TO} FROM "{table}_history" WHERE {where}')
    rows = []
    for values in result.to_pylist():
        items = list(values.values())
        rows.append(tuple(items[:-2]) + (to_micros(items[-2]), None if items[-1] is None else to_micros(items[-1])))
    return sorted(rows, key=_sort_key)


def test_lookups_by_key_equal_the_model_after_many_folds(durable_lake, tmp_path):
    """Point lookups on ``t_history`` and ``t AS OF`` equal SQLite's history model, key by key."""
    url, options = durable_lake
    db = tmp_path / "app.db"
    reader = create_tables(db)
    with _lake(db, url, options) as lake:
        for table in SCHEMA:
            lake.register_table(table)
        model = HistoryModel.watching(reader, KEYS)
        workload = Workload(15, key_space=150)
        for _ in range(ROUNDS):
            for _ in range(40):
                lake.execute(*workload.statement())
                model.apply()
            model.record_instant()
            lake.sync_now()
            lake.compact(vacuum_retention=0)
        rng = random.Random(15)
        for table, cols in KEYS.items():
            history = model.history(table)
            width = len(cols)
            known = sorted({row[:width] for row in history}, key=_sort_key)
            keys = [*rng.sample(known, 25), tuple("zz" if isinstance(v, str) else 10**6 for v in known[0])]
            for key in keys:
                where = " AND ".join(f'"{c}" = {_literal(v)}' for c, v in zip(cols, key, strict=True))
                expected = [row for row in history if row[:width] == key]
                assert_same_history(_lookup_history(lake, table, where), expected, f"{table} {key}")
                for instant, states in model.instants[::4]:
                    got = lake.query(f'SELECT * FROM "{table}" WHERE {where}', as_of=from_micros(instant))
                    assert sorted((tuple(r.values()) for r in got.to_pylist()), key=_sort_key) == [
                        row for row in states[table] if row[:width] == key
                    ], f"{table} {key} as of {instant}"


@pytest.mark.parametrize("rounds", [ROUNDS])
def test_history_files_are_sorted_by_key_and_lookups_prune_row_groups(tmp_path, rounds):
    db = tmp_path / "app.db"
    oracle = sqlite3.connect(db)
    oracle.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v REAL, note TEXT)")
    rng = random.Random(16)
    next_id = _round(oracle, rng, 1)
    with _lake(db, str(tmp_path / "lake"), {}) as lake:
        lake.register_table("items")
        for _ in range(rounds):
            next_id = _round(oracle, rng, next_id)
            lake.sync_now()
            lake.compact(vacuum_retention=0)
        store = lake.storage.table_store("items", "history")
        assert isinstance(store, DeltaTableStore)
        files = store._table().file_uris()
        groups = 0
        for uri in files:
            table = pq.read_table(uri, columns=["id", SEQ])
            order = list(zip(table.column("id").to_pylist(), table.column(SEQ).to_pylist(), strict=True))
            assert order == sorted(order), f"{uri} is not sorted by (id, {SEQ})"
            groups += pq.ParquetFile(uri).metadata.num_row_groups
        assert groups >= 10

        dataset = ds.dataset(files, format="parquet")
        for key in rng.sample(range(1, next_id), 10):
            plan = lake.query(f"EXPLAIN SELECT * FROM items_history WHERE id = {key}").to_pylist()
            text = "\n".join(str(row["plan"]) for row in plan)
            assert f"filter_expr=(id == {key})" in text, text  # the scan is given the lookup
            kept = [
                group
                for fragment in dataset.get_fragments()
                for group in fragment.split_by_row_group(pc.field("id") == key)
            ]
            assert len(kept) <= len(files), f"{len(kept)} of {groups} row groups kept by statistics for id = {key}"


def test_history_reads_every_row_under_a_path_with_spaces_and_hashes(tmp_path):
    """delta-rs percent-encodes the file paths it lists, and DataFusion reads a path it cannot find as empty.

    (Under a path with ``[`` or ``*`` delta-rs's writer itself panics.)
    """
    root = tmp_path / "with space #hash"
    root.mkdir()
    with rhei_lake.open(oltp_path=str(root / "app.db"), storage=str(root / "lake")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute_batch([("INSERT INTO t VALUES (?, ?)", (i, f"v{i}")) for i in range(20)])
        lake.sync_now()
        lake.compact(vacuum_retention=0)
        lake.execute("UPDATE t SET v = 'w' WHERE id = 3")
        lake.sync_now()
        lake.compact(vacuum_retention=0)
    with rhei_lake.open(storage=str(root / "lake")) as reader:
        assert reader.query("SELECT count(*) AS n FROM t_history").to_pylist() == [{"n": 21}]
        rows = reader.query("SELECT v FROM t_history WHERE id = 3 ORDER BY _rhei_seq").to_pylist()
        assert rows == [{"v": "v3"}, {"v": "w"}]


def test_a_reader_never_misses_history_rows_another_process_vacuumed(tmp_path):
    """A reader's kept registration of ``t_history`` whose files a compaction vacuumed at once reads again, whole.

    DataFusion's own Parquet scan reads a file it cannot find as empty: the
    reader must see the vacuum as a missing file (and look again), never answer
    with the rows of the files that are left.
    """
    db, store = tmp_path / "app.db", str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=str(db), storage=store, target_file_size=64 * 1024) as writer:
        writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        writer.register_table("t")
        for start in range(0, 60, 20):  # several folds: files written, rewritten and vacuumed
            writer.execute_batch([("INSERT INTO t VALUES (?, ?)", (i, f"v{i}")) for i in range(start, start + 20)])
            writer.sync_now()
            writer.compact(vacuum_retention=0)
        with rhei_lake.open(storage=store, refresh_interval=3600) as reader:
            assert reader.query("SELECT count(*) AS n FROM t_history").to_pylist() == [{"n": 60}]
            writer.execute("UPDATE t SET v = 'w' WHERE id = 3")
            writer.sync_now()
            writer.compact(vacuum_retention=0)
            counted = reader.query("SELECT count(*) AS n FROM t_history").to_pylist()
            assert counted in ([{"n": 60}], [{"n": 61}])
