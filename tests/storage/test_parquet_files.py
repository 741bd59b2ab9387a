"""What the lake's Parquet files look like to any reader: compressed, whichever path wrote them."""

from __future__ import annotations

import sqlite3

import pyarrow.parquet as pq

import rhei_lake


def test_every_data_file_the_lake_writes_is_compressed(tmp_path):
    """The initial snapshot, appended syncs, flushed segments, compaction's history and packs: Snappy,
    as delta-rs writes by default (naming Parquet settings for the sequence column once left the
    other columns of every change file uncompressed, ~1.7x the bytes to store and fetch)."""
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, amount REAL)")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, f"name {i % 7}", i / 3) for i in range(5000)])
    conn.close()
    storage = tmp_path / "lake"
    with rhei_lake.open(oltp_path=str(db), storage=str(storage), tail_flush_segments=2) as lake:
        lake.register_table("items")
        for round_ in range(5):
            lake.execute("UPDATE items SET amount = amount + 1 WHERE id % 10 = ?", (round_,))
            lake.sync_now()
        lake.compact()
    files = sorted(storage.rglob("*.parquet"))
    assert files
    uncompressed = {
        (str(path.relative_to(storage)), meta.row_group(g).column(c).path_in_schema)
        for path in files
        if "_delta_log" not in path.parts
        for meta in [pq.ParquetFile(path).metadata]
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
        if meta.row_group(g).column(c).compression == "UNCOMPRESSED"
    }
    assert not uncompressed, sorted(uncompressed)[:10]
