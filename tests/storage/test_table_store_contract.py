"""The TableStore contract, the same on every tier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from datafusion import SessionContext

from rhei_lake.errors import CommitConflictError, RheiError, SourceError, TableNotFoundError
from rhei_lake.storage.base import AppTransaction, Merge

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string()), ("x", pa.float64())])


def rows(*items):
    return pa.Table.from_pylist([{"id": i, "v": v, "x": x} for i, v, x in items], schema=SCHEMA)


def test_missing_table(lake_storage):
    store = lake_storage.table_store("nope", "changes")
    assert not store.exists()
    for call in (store.schema, store.properties, store.version, lambda: store.app_version("a"), store.to_arrow):
        with pytest.raises(TableNotFoundError):
            call()


def test_create_is_exclusive_and_keeps_properties(lake_storage):
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={"rhei.table": '{"a": 1}'})
    assert store.exists()
    assert store.properties()["rhei.table"] == '{"a": 1}'
    assert store.schema().names == SCHEMA.names
    with pytest.raises(CommitConflictError):
        store.create(SCHEMA, properties={})
    store.set_properties({"rhei.other": "x"})
    assert store.properties()["rhei.other"] == "x"


def test_append_with_watermark_refuses_going_back(lake_storage):
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})
    assert store.app_version("w") is None
    store.append(rows((1, "a", 0.1)), txn=AppTransaction("w", 5), metadata={"rhei.cursor": "c5"})
    assert store.app_version("w") == 5
    assert store.last_commit_metadata("rhei.cursor") == "c5"
    for version in (5, 4):
        with pytest.raises(CommitConflictError):
            store.append(rows((2, "b", 0.2)), txn=AppTransaction("w", version))
    assert store.to_arrow().num_rows == 1
    store.append(rows((2, "b", 0.2)), txn=AppTransaction("w", 6))
    assert sorted(store.to_arrow().column("id").to_pylist()) == [1, 2]


def test_the_newest_commit_carrying_a_key_is_found_past_commits_without_it(lake_storage, second_lake_storage):
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})
    assert store.last_commit_metadata("rhei.cursor") is None
    store.append(rows((1, "a", 0.1)), metadata={"rhei.cursor": "old", "rhei.other": "x"})
    store.append(rows((2, "b", 0.2)), metadata={"rhei.cursor": 'new "quoted" \u2028'})
    for i in range(3, 6):
        store.append(rows((i, "c", 0.3)))
    store.optimize(target_size=1 << 20)  # a commit of another kind
    reader = second_lake_storage.table_store("t", "changes")  # another process, loading the table afresh
    for handle in (store, reader):
        assert handle.last_commit_metadata("rhei.cursor") == 'new "quoted" \u2028'
        assert handle.last_commit_metadata("rhei.other") == "x"
        assert handle.last_commit_metadata("rhei.none") is None


def test_concurrent_writer_with_same_app_id_conflicts(lake_storage, second_lake_storage):
    first = lake_storage.table_store("t", "changes")
    first.create(SCHEMA, properties={})
    second = second_lake_storage.table_store("t", "changes")
    second.version()  # both have now loaded the same snapshot
    first.append(rows((1, "a", 1.0)), txn=AppTransaction("w", 1))
    with pytest.raises(CommitConflictError):
        second.append(rows((1, "a", 1.0)), txn=AppTransaction("w", 1))
    second.refresh()
    assert second.app_version("w") == 1
    assert second.to_arrow().num_rows == 1


def test_merge_update_delete_insert(lake_storage):
    store = lake_storage.table_store("t", "history")
    store.create(SCHEMA, properties={})
    store.append(rows((1, "a", 1.0), (2, "b", 2.0), (3, "c", 3.0)))
    source = pa.table({"id": [2, 3, 4], "v": ["B", "del", "D"], "x": [20.0, 0.0, 40.0]}).cast(SCHEMA)
    result = store.merge(
        source,
        Merge(
            on="t.id = s.id",
            delete_when="s.v = 'del'",
            update={"v": "s.v", "x": "s.x"},
            insert={"id": "s.id", "v": "s.v", "x": "s.x"},
        ),
        txn=AppTransaction("f", 1),
    )
    assert (result.inserted, result.updated, result.deleted) == (1, 1, 1)
    got = sorted(store.to_arrow().to_pylist(), key=lambda r: r["id"])
    assert got == [{"id": 1, "v": "a", "x": 1.0}, {"id": 2, "v": "B", "x": 20.0}, {"id": 4, "v": "D", "x": 40.0}]
    assert store.app_version("f") == 1


def test_delete_and_filtered_read(lake_storage):
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})
    store.append(rows((1, "a", 1.0), (2, None, 2.0), (3, "c", None)))
    assert store.to_arrow(filter="x > 1.5").column("id").to_pylist() == [2]
    assert store.delete("id <= 2") == 2
    assert store.to_arrow().column("id").to_pylist() == [3]


def test_register_makes_rows_queryable(lake_storage):
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})
    ctx = SessionContext()
    store.register(ctx, "t")
    assert ctx.sql("SELECT count(*) AS n FROM t ORDER BY n").to_pylist() == [{"n": 0}]
    store.append(rows((1, "a", 1.0), (2, "b", 2.0)))
    store.register(ctx, "t")
    assert ctx.sql("SELECT sum(x) AS s FROM t").to_pylist() == [{"s": 3.0}]


def test_add_columns_reads_old_rows_as_null(lake_storage):
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})
    store.append(rows((1, "a", 1.0)))
    store.add_columns([pa.field("extra", pa.string())])
    assert store.schema().names == [*SCHEMA.names, "extra"]
    new = pa.table({"id": [2], "v": ["b"], "x": [2.0], "extra": ["e"]}).cast(store.schema())
    store.append(new)
    got = sorted(store.to_arrow().to_pylist(), key=lambda r: r["id"])
    assert [r["extra"] for r in got] == [None, "e"]


def test_maintenance_keeps_rows(lake_storage):
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})
    for i in range(6):
        store.append(rows((i, str(i), float(i))))
    before = store.stats()
    assert before.rows == 6
    store.optimize(target_size=1 << 20)
    store.checkpoint()
    store.vacuum(retention=timedelta(0), dry_run=True)
    after = store.stats()
    assert after.rows == 6 and after.files <= before.files
    assert sorted(store.to_arrow().column("id").to_pylist()) == list(range(6))


def test_vacuum_honours_the_retention_and_counts_bytes(lake_storage):
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})
    for i in range(3):
        store.append(rows((i, str(i), float(i))))
    store.optimize(target_size=1 << 20)  # the three small files are now unreferenced
    # Retention is counted in whole hours, rounded up: files removed just now are kept.
    assert store.vacuum(retention=timedelta(minutes=30), dry_run=True).files_removed == 0
    planned = store.vacuum(retention=timedelta(0), dry_run=True)
    done = store.vacuum(retention=timedelta(0))
    assert (done.files_removed, done.bytes_removed) == (planned.files_removed, planned.bytes_removed)
    if lake_storage.durable:
        assert done.files_removed == 3 and done.bytes_removed > 0
    assert store.vacuum(retention=timedelta(0)).files_removed == 0  # nothing left to remove
    assert sorted(store.to_arrow().column("id").to_pylist()) == [0, 1, 2]


def test_a_filter_excluding_every_file_still_plans_under_a_sort(lake_storage):
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})
    store.append(rows((1, "a", 1.0), (2, "b", 2.0)))
    ctx = SessionContext()
    store.register(ctx, "t")
    assert ctx.sql("SELECT id FROM t WHERE id > 5 ORDER BY id").to_pylist() == []
    assert ctx.sql("SELECT id FROM t WHERE id > 1 ORDER BY id").to_pylist() == [{"id": 2}]


def test_min_value_comes_from_file_statistics_and_never_exceeds_the_true_minimum(lake_storage):
    schema = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC"))])
    store = lake_storage.table_store("t", "changes")
    store.create(schema, properties={})
    assert store.min_value("ts") is None  # no rows: nothing to say
    stamps = [datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 0, 999, tzinfo=UTC)]
    for i, stamp in enumerate(stamps):
        later = datetime(2027, 1, 1, tzinfo=UTC)
        store.append(pa.table({"id": [i, i + 10], "ts": [stamp, later]}, schema=schema))
    oldest = min(stamps)
    found = store.min_value("ts")
    # Delta statistics keep timestamps to the millisecond, truncated: a bound, never above the true minimum.
    assert found <= oldest and (oldest - found).total_seconds() < 0.001
    assert store.min_value("id") == 0


def test_a_stream_refused_by_its_watermark_is_not_read(lake_storage):
    """A snapshot's stream starts its source (a reader process, a thread reading ahead) when first
    pulled: a commit refused before anything is written must not pull it."""
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})
    store.append(rows((1, "a", 0.1)), txn=AppTransaction("w", 5))
    pulled = []

    def batches():
        pulled.append(True)
        yield from rows((2, "b", 0.2)).to_batches()

    with pytest.raises(CommitConflictError):
        store.append(pa.RecordBatchReader.from_batches(SCHEMA, batches()), txn=AppTransaction("w", 5))
    assert not pulled
    assert store.to_arrow().column("id").to_pylist() == [1]


@pytest.mark.parametrize("error", [SourceError("the source went away"), ValueError("bad row"), KeyboardInterrupt()])
def test_a_stream_failing_part_way_raises_its_own_error_and_commits_nothing(lake_storage, error):
    # delta-rs wraps what the stream raised into an Arrow error that read like a damaged file
    # (CorruptStorageError): the caller must see the stream's own error, an interrupt as an interrupt.
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})

    def batches():
        yield from rows((1, "a", 0.1)).to_batches()
        raise error

    with pytest.raises(type(error)) as raised:
        store.append(pa.RecordBatchReader.from_batches(SCHEMA, batches()), txn=AppTransaction("w", 1))
    assert raised.value is error
    assert store.app_version("w") is None
    assert store.to_arrow().num_rows == 0


def test_a_stream_failing_at_its_first_batch_commits_nothing(lake_storage):
    store = lake_storage.table_store("t", "changes")
    store.create(SCHEMA, properties={})

    def batches():
        raise SourceError("the source went away")
        yield  # a generator

    with pytest.raises(RheiError, match="the source went away"):
        store.append(pa.RecordBatchReader.from_batches(SCHEMA, batches()), txn=AppTransaction("w", 1))
    assert store.app_version("w") is None
    assert store.to_arrow().num_rows == 0
