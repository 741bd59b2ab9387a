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


def test_a_streamed_snapshot_writes_row_groups_of_bounded_size(tmp_path):
    """A big snapshot streams into one change file; delta-rs holds a row group in memory until it is
    complete (1Mi rows by default: ~1 GB of peak RSS for 1M rows of ~300-byte text). Its row groups
    are sized from the first batch's bytes per row, so wide rows make groups of 64Ki rows (the floor)
    here, and the lake still equals SQLite."""
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    rows = 140_000
    with conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO notes VALUES (?, ?)", ((i, f"{i:08d}" + "x" * 600) for i in range(rows)))
    conn.close()
    storage = tmp_path / "lake"
    with rhei_lake.open(oltp_path=str(db), storage=str(storage), columnar_min_rows=1000) as lake:
        lake.register_table("notes")
        got = lake.query("SELECT count(*) AS n, sum(length(body)) AS chars FROM notes").to_pylist()
    assert got == [{"n": rows, "chars": rows * 608}]
    files = [p for p in storage.rglob("*.parquet") if "_delta_log" not in p.parts]
    groups = [
        pq.ParquetFile(p).metadata.row_group(g).num_rows
        for p in files
        for g in range(pq.ParquetFile(p).metadata.num_row_groups)
    ]
    assert sorted(groups) == sorted([65_536, 65_536, rows - 2 * 65_536])


def test_row_groups_hold_about_32_mib_of_a_streams_rows_within_bounds():
    import pyarrow as pa

    from rhei_lake.storage.delta import stream_row_group_rows

    def batch(width: int, n: int = 1000) -> pa.RecordBatch:
        return pa.record_batch({"id": pa.array(range(n), pa.int64()), "s": pa.array(["x" * width] * n)})

    assert stream_row_group_rows(batch(1)) == 1 << 20  # ~17 bytes a row: delta-rs's default cap
    assert stream_row_group_rows(batch(200)) == (32 << 20) // 212
    assert stream_row_group_rows(batch(2000)) == 65_536  # the floor
    assert stream_row_group_rows(batch(10, n=0)) == 1 << 20
