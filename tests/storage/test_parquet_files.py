"""What the lake's Parquet files look like to any reader: compressed, whichever path wrote them."""

from __future__ import annotations

import sqlite3

import pyarrow as pa
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


def test_a_streamed_snapshot_writes_row_groups_of_bounded_size_and_unique_columns_plain(tmp_path):
    """A big snapshot streams into one change file; delta-rs holds a row group in memory until it is
    complete (1Mi rows by default: ~1 GB of peak RSS for 1M rows of ~300-byte text). Its row groups
    are sized from the first batch's bytes per row, so wide rows make groups of 64Ki rows (the floor)
    here. Columns whose values are all distinct skip the dictionary encoding they would outgrow; a
    column of repeated values keeps it. The lake still equals SQLite."""
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, kind TEXT, body TEXT)")
    rows = 140_000
    with conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO notes VALUES (?, ?, ?)", ((i, f"kind {i % 5}", f"{i:08d}" + "x" * 600) for i in range(rows))
        )
    expected = conn.execute(
        "SELECT kind, count(*), sum(length(body)) FROM notes GROUP BY kind ORDER BY kind"
    ).fetchall()
    conn.close()
    storage = tmp_path / "lake"
    with rhei_lake.open(oltp_path=str(db), storage=str(storage), columnar_min_rows=1000) as lake:
        lake.register_table("notes")
        got = lake.query(
            "SELECT kind, count(*) AS n, sum(length(body)) AS chars FROM notes GROUP BY kind ORDER BY kind"
        )
    assert [tuple(r.values()) for r in got.to_pylist()] == expected
    (path,) = [p for p in (storage / "notes" / "changes").rglob("*.parquet") if "_delta_log" not in p.parts]
    meta = pq.ParquetFile(path).metadata
    groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
    assert [g.num_rows for g in groups] == [65_536, 65_536, rows - 2 * 65_536]

    def dictionary_encoded(column: str) -> set[bool]:
        chunks = [g.column(c) for g in groups for c in range(g.num_columns) if g.column(c).path_in_schema == column]
        return {any("DICTIONARY" in e for e in chunk.encodings) for chunk in chunks}

    assert dictionary_encoded("body") == {False}
    assert dictionary_encoded("id") == {False}
    assert dictionary_encoded("kind") == {True}
    assert dictionary_encoded("_rhei_op") == {True}


def test_row_groups_hold_about_8_mib_of_a_streams_rows_within_bounds():
    from rhei_lake.storage.delta import STREAM_ROW_GROUP_BYTES, stream_row_group_rows

    def batch(width: int, n: int = 1000) -> pa.RecordBatch:
        return pa.record_batch({"id": pa.array(range(n), pa.int64()), "s": pa.array(["x" * width] * n)})

    assert STREAM_ROW_GROUP_BYTES == 8 << 20
    assert stream_row_group_rows(batch(1)) == (8 << 20) // 13  # 8 + 4 + 1 bytes a row
    assert stream_row_group_rows(batch(60)) == (8 << 20) // 72
    assert stream_row_group_rows(batch(200)) == 65_536  # the floor, from 128 bytes a row
    assert stream_row_group_rows(batch(2000)) == 65_536
    tiny = pa.record_batch({"flag": pa.array([1] * 1000, pa.int8())})
    assert stream_row_group_rows(tiny) == 1 << 20  # a byte a row: delta-rs's default cap
    assert stream_row_group_rows(batch(10, n=0)) == 1 << 20


def test_unique_columns_are_those_whose_sampled_values_nearly_all_differ():
    from rhei_lake.storage.delta import unique_columns

    n = 5000
    batch = pa.record_batch(
        {
            "id": pa.array(range(n), pa.int64()),
            "amount": pa.array([i / 7 for i in range(n)]),
            "name": pa.array([f"name {i % 3000}" for i in range(n)]),  # repeats within the sample
            "flag": pa.array([i % 2 == 0 for i in range(n)]),
            "blob": pa.array([i.to_bytes(4, "big") for i in range(n)], pa.binary()),
            "tags": pa.array([[i] for i in range(n)]),  # nested: left to the default
            "empty": pa.nulls(n, pa.string()),
        }
    )
    assert unique_columns(batch) == ("id", "amount", "blob")
    assert unique_columns(batch.slice(0, 10)) == ()  # too few rows to tell


def test_a_key_among_100k_keeps_its_dictionary():
    """A foreign key or an email among ~100K values looks nearly unique in a few thousand rows, but its
    dictionary fits its page and halves its bytes: only the wider sample tells it from a unique column."""
    import random

    from rhei_lake.storage.delta import unique_columns

    rng = random.Random(7)
    n = 50_000
    batch = pa.record_batch(
        {
            "customer_id": pa.array([rng.randrange(100_000) for _ in range(n)], pa.int64()),
            "email": pa.array([f"user{rng.randrange(100_000)}@example.com" for _ in range(n)]),
            "order_id": pa.array(range(n), pa.int64()),
        }
    )
    assert unique_columns(batch.slice(0, 4096)) == ("customer_id", "email", "order_id")  # the first look alone
    assert unique_columns(batch) == ("order_id",)
