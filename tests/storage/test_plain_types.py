"""Every path that rewrites data files (merge, delete, optimize) leaves plain Arrow types, in one commit."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from deltalake.fs import DeltaStorageHandler

from rhei_lake import faults
from rhei_lake.errors import CommitConflictError, StorageError
from rhei_lake.storage.base import AppTransaction, Merge
from rhei_lake.storage.delta_rewrite import STAGING_PREFIX
from rhei_lake.storage.plain_types import PLAIN_TYPES_KEY, has_view_types
from tests.support.outside import exact

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("name", pa.string()),
        pa.field("tag", pa.binary()),
        pa.field("score", pa.float64()),
        pa.field("_rhei_seq", pa.int64(), nullable=False),
    ]
)
UPSERT = Merge(
    on="t.id = s.id",
    update={"name": "s.name", "tag": "s.tag", "score": "s.score", "_rhei_seq": "s._rhei_seq"},
    insert={c: f"s.{c}" for c in SCHEMA.names},
)


@pytest.fixture
def store(lake_storage):
    if not lake_storage.durable:
        pytest.skip("memory:// keeps Arrow tables, no parquet files")
    store = lake_storage.table_store("t", "current")
    store.create(SCHEMA, properties={})
    return store


def _rows(seqs: range, name: str = "n") -> pa.Table:
    return pa.table(
        {
            "id": pa.array(list(seqs), pa.int64()),
            "name": [f"{name}{i}" for i in seqs],
            "tag": [bytes([i % 256]) for i in seqs],
            "score": [i * 0.1 - 3 for i in seqs],
            "_rhei_seq": pa.array(list(seqs), pa.int64()),
        },
        schema=SCHEMA,
    )


def _with_seqs(rows: pa.Table, seqs: list[int] | range) -> pa.Table:
    return rows.set_column(4, SCHEMA.field("_rhei_seq"), pa.array(list(seqs), pa.int64()))


def _dt(store) -> DeltaTable:
    return DeltaTable(store.uri, storage_options=store._options or None)


def _files(store) -> list[str]:
    return sorted(pa.table(_dt(store).get_add_actions(flatten=True)).column("path").to_pylist())


def _file_holding(store, row_id: int) -> str:
    """The data file whose ``id`` statistics span ``row_id`` (each test file holds a disjoint range)."""
    actions = pa.table(_dt(store).get_add_actions(flatten=True)).to_pylist()
    [path] = [a["path"] for a in actions if a["min.id"] <= row_id <= a["max.id"]]
    return path


def _file_schemas(store) -> dict[str, pa.Schema]:
    fs = pafs.PyFileSystem(DeltaStorageHandler(store.uri, store._options or None))
    out = {}
    for path in _files(store):
        with fs.open_input_file(path) as handle:
            out[path] = pq.read_schema(handle)
    return out


def _content(store) -> list[tuple]:
    return exact(tuple(r.values()) for r in store.to_arrow().to_pylist())


def _assert_plain(store, schema: pa.Schema = SCHEMA) -> None:
    schemas = _file_schemas(store)
    assert schemas
    for path, file_schema in schemas.items():
        assert not has_view_types(file_schema), f"{path}: {file_schema}"
        assert [f.type for f in file_schema] == schema.types, path


def _delta_rs_merge(store, source: pa.Table) -> None:
    """A MERGE by delta-rs itself, as an earlier rhei_lake made them: it writes view types."""
    (
        _dt(store)
        .merge(source, "t.id = s.id", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    store.refresh()


def test_merge_rewrites_only_the_touched_file_with_plain_types_in_one_commit(store):
    for start in (0, 20, 40):
        store.append(_rows(range(start, start + 20)))
    files = _files(store)
    touched = _file_holding(store, 25)
    before = store.version()
    source = _with_seqs(_rows(range(25, 30), name="u"), range(125, 130))
    source = pa.concat_tables([source, _rows(range(100, 103), name="new")])
    result = store.merge(source, UPSERT, txn=AppTransaction("f", 7))
    assert (result.updated, result.inserted, result.deleted) == (5, 3, 0)
    assert store.version() == before + 1
    assert store.app_version("f") == 7
    after = _files(store)
    assert set(files) - set(after) == {touched}  # only the file of ids 20..39 is rewritten
    assert all(p.startswith(STAGING_PREFIX) for p in set(after) - set(files))
    _assert_plain(store)
    expected = {r["id"]: r for r in _rows(range(0, 60)).to_pylist()}
    expected.update({r["id"]: r for r in source.to_pylist()})
    assert _content(store) == exact(tuple(r.values()) for r in expected.values())


def test_merge_deletes_and_conditional_updates_match_the_memory_tier(store, lake_storage):
    from rhei_lake.storage.memory import MemoryTableStore

    memory = MemoryTableStore("memory://diff/t")
    memory.create(SCHEMA, properties={})
    merge = Merge(
        on="t.id = s.id",
        delete_when="s.name = 'gone'",
        update={"score": "t.score + s.score"},
        update_when="s.id % 2 = 0",
        insert={c: f"s.{c}" for c in SCHEMA.names},
        insert_when="s.id < 55",
    )
    source = _rows(range(10, 60, 3)).set_column(
        1, "name", pa.array(["gone" if i % 9 == 1 else "x" for i in range(10, 60, 3)])
    )
    for s in (store, memory):
        s.append(_rows(range(0, 25)))
        s.append(_rows(range(25, 50)))
    got = store.merge(source, merge)
    want = memory.merge(source, merge)
    assert got == want and got.deleted and got.updated and got.inserted
    assert _content(store) == _content(memory)
    _assert_plain(store)


def test_merge_that_changes_nothing_commits_only_its_watermark(store):
    store.append(_rows(range(0, 10)))
    files, before = _files(store), store.version()
    merge = Merge(on="t.id = s.id", update={"name": "s.name"})
    assert store.merge(_rows(range(50, 55)), merge).updated == 0
    assert store.version() == before  # nothing to write, nothing to record: no commit
    store.merge(_rows(range(50, 55)), merge, txn=AppTransaction("f", 1))
    assert (store.version(), store.app_version("f"), _files(store)) == (before + 1, 1, files)


def test_merge_reads_files_from_before_an_added_column_as_null(store):
    store.append(_rows(range(0, 10)))
    store.add_columns([pa.field("extra", pa.string())])
    schema = store.schema()
    source = _rows(range(5, 7), name="u").append_column("extra", pa.array(["e5", "e6"]))
    store.merge(source, Merge(on="t.id = s.id", update={"name": "s.name", "extra": "s.extra"}))
    _assert_plain(store, schema)
    extras = {r["id"]: r["extra"] for r in store.to_arrow().to_pylist()}
    assert extras == {i: {5: "e5", 6: "e6"}.get(i) for i in range(10)}


def test_merge_refuses_a_target_row_matching_two_source_rows_and_leaves_the_table(store):
    store.append(_rows(range(0, 10)))
    content, before = _content(store), store.version()
    with pytest.raises(StorageError, match="more than one source row"):
        store.merge(pa.concat_tables([_rows(range(3, 4)), _rows(range(3, 4), name="x")]), UPSERT)
    assert (store.version(), _content(store)) == (before, content)


def test_a_commit_after_the_merge_read_makes_it_conflict_and_a_retry_applies_it_once(store):
    """Another writer (here: delta-rs's optimize) replaced the files in between: no rows doubled or lost."""
    store.append(_rows(range(0, 10)))
    store.append(_rows(range(10, 20)))
    other = _dt(store)

    def optimize_meanwhile(_point: str) -> None:
        other.optimize.compact()

    with faults.armed("delta.rewrite_before_commit", optimize_meanwhile):
        with pytest.raises(CommitConflictError):
            store.merge(_rows(range(5, 8), name="u"), UPSERT, txn=AppTransaction("f", 1))
    store.refresh()
    assert store.app_version("f") is None
    assert _content(store) == exact(tuple(r.values()) for r in _rows(range(0, 20)).to_pylist())
    store.merge(_rows(range(5, 8), name="u"), UPSERT, txn=AppTransaction("f", 1))
    expected = {r["id"]: r for r in _rows(range(0, 20)).to_pylist()}
    expected.update({r["id"]: r for r in _rows(range(5, 8), name="u").to_pylist()})
    assert _content(store) == exact(tuple(r.values()) for r in expected.values())


def test_a_merge_that_dies_before_its_commit_leaves_only_files_vacuum_deletes(store):
    store.append(_rows(range(0, 10)))
    content, files = _content(store), _files(store)

    def die(_point: str) -> None:
        raise OSError("injected: the process dies here")

    with faults.armed("delta.rewrite_before_commit", die), pytest.raises(Exception, match="injected"):
        store.merge(_rows(range(5, 15), name="u"), UPSERT)
    store.refresh()
    assert (_content(store), _files(store)) == (content, files)
    fs = pafs.PyFileSystem(DeltaStorageHandler(store.uri, store._options or None))
    staged = [
        i.path.lstrip("/")
        for i in fs.get_file_info(pafs.FileSelector("", recursive=True))
        if i.type == pafs.FileType.File and i.path.lstrip("/").startswith(STAGING_PREFIX)
    ]
    assert staged and all(p.endswith(".parquet") for p in staged)  # the staging log is gone already
    orphans = _dt(store).vacuum(retention_hours=0, dry_run=True, enforce_retention_duration=False, full=True)
    assert {o.rsplit(STAGING_PREFIX, 1)[-1] for o in orphans} >= {p.rsplit(STAGING_PREFIX, 1)[-1] for p in staged}


def test_delete_inside_a_file_leaves_plain_files_in_one_commit(store):
    store.append(_rows(range(0, 30)))
    before = store.version()
    assert store.delete('"id" % 3 = 0') == 10
    assert store.version() == before + 1
    _assert_plain(store)
    assert _content(store) == exact(tuple(r.values()) for r in _rows(range(0, 30)).to_pylist() if r["id"] % 3)
    assert store.delete('"id" > 1000') == 0
    assert store.version() == before + 1


def test_files_with_view_types_are_rewritten_plain_by_optimize(store):
    """Files a MERGE by delta-rs wrote (an earlier rhei_lake, another writer) are rewritten once, rows unchanged."""
    store.append(_rows(range(0, 10)))
    dup = _with_seqs(_rows(range(100, 103)), [0, 1, 2])
    _delta_rs_merge(store, pa.concat_tables([_rows(range(5, 15), name="m"), dup]))
    assert any(has_view_types(s) for s in _file_schemas(store).values()), "delta-rs no longer writes view types?"
    content = _content(store)
    before = store.version()
    store.optimize(target_size=1)  # every file is too big to bin-pack: only the rewrite touches them
    _assert_plain(store)
    assert _content(store) == content
    assert store.version() == before + 1
    commit = _dt(store).history(1)[0]
    assert commit.get(PLAIN_TYPES_KEY) == "1"
    store.optimize(target_size=1)
    assert store.version() == before + 1  # nothing left to rewrite


def test_merge_refuses_a_partitioned_table_it_did_not_create(lake_storage):
    """Partition values live in the log, not in the files a merge reads: refused, the table left as it was."""
    from deltalake import write_deltalake

    if not lake_storage.durable:
        pytest.skip("memory:// keeps Arrow tables, no parquet files")
    store = lake_storage.table_store("p", "current")
    write_deltalake(store.uri, _rows(range(0, 5)), partition_by=["name"], storage_options=store._options or None)
    store.refresh()
    before = store.version()
    with pytest.raises(StorageError, match="partition columns"):
        store.merge(_rows(range(3, 8), name="u"), UPSERT)
    assert store.version() == before


def test_a_file_read_short_is_a_transient_error_not_a_corrupt_table(store):
    """delta-rs's file handler answers a failed GET with an empty file: the size the log records catches it."""
    from dataclasses import replace

    from rhei_lake.errors import StorageUnavailableError
    from rhei_lake.storage.delta_rewrite import FileRewriter, data_files

    store.append(_rows(range(0, 5)))
    [f] = data_files(_dt(store))
    rewriter = FileRewriter(store.uri, store._options)
    assert next(rewriter.read([f], SCHEMA))[1].num_rows == 5
    with pytest.raises(StorageUnavailableError, match="the Delta log records"):
        list(rewriter.read([replace(f, size=f.size + 1)], SCHEMA))
