"""Rewrites through delta-rs (MERGE, DELETE) leave only plain Arrow types in the files, and the rows unchanged."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from deltalake.fs import DeltaStorageHandler

from rhei_lake.storage.base import Merge
from rhei_lake.storage.plain_types import PLAIN_TYPES_KEY, has_view_types
from tests.support.outside import exact

SCHEMA = pa.schema([
    pa.field("id", pa.int64()), pa.field("name", pa.string()), pa.field("tag", pa.binary()),
    pa.field("score", pa.float64()), pa.field("_rhei_seq", pa.int64(), nullable=False),
])
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
    return pa.table({
        "id": pa.array(list(seqs), pa.int64()), "name": [f"{name}{i}" for i in seqs],
        "tag": [bytes([i % 256]) for i in seqs], "score": [i * 0.1 - 3 for i in seqs],
        "_rhei_seq": pa.array(list(seqs), pa.int64()),
    }, schema=SCHEMA)


def _file_schemas(store) -> dict[str, pa.Schema]:
    dt = DeltaTable(store.uri, storage_options=store._options or None)
    fs = pafs.PyFileSystem(DeltaStorageHandler(store.uri, store._options or None))
    out = {}
    for path in pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist():
        with fs.open_input_file(path) as handle:
            out[path] = pq.read_schema(handle)
    return out


def _content(store) -> list[tuple]:
    return exact(tuple(r.values()) for r in store.to_arrow().to_pylist())


def _assert_plain(store) -> None:
    schemas = _file_schemas(store)
    assert schemas
    for path, schema in schemas.items():
        assert not has_view_types(schema), f"{path}: {schema}"
        assert [f.type for f in schema] == SCHEMA.types, path


def test_merge_leaves_plain_files_and_the_merged_rows(store):
    store.append(_rows(range(0, 20)))
    store.append(_rows(range(20, 40)))
    before = store.version()
    result = store.merge(_rows(range(15, 25), name="u").set_column(4, "_rhei_seq", pa.array(range(115, 125))), UPSERT)
    assert result.updated == 10
    _assert_plain(store)
    expected = {r["id"]: r for r in _rows(range(0, 40)).to_pylist()}
    for r in _rows(range(15, 25), name="u").to_pylist():
        expected[r["id"]] = {**r, "_rhei_seq": r["_rhei_seq"] + 100}
    assert _content(store) == exact(tuple(r.values()) for r in expected.values())
    assert store.version() == before + 2  # the MERGE, then one rewrite of its files
    dt = DeltaTable(store.uri, storage_options=store._options or None)
    assert dt.history(1)[0].get(PLAIN_TYPES_KEY) is not None


def test_delete_inside_a_file_leaves_plain_files(store):
    store.append(_rows(range(0, 30)))
    assert store.delete('"id" % 3 = 0') == 10
    _assert_plain(store)
    assert _content(store) == exact(tuple(r.values()) for r in _rows(range(0, 30)).to_pylist() if r["id"] % 3)


def test_files_a_crash_left_with_view_types_are_rewritten_at_the_next_optimize(store):
    """A MERGE by delta-rs alone (as if the process died before its rewrite) leaves view types; optimize fixes them."""
    store.append(_rows(range(0, 10)))
    dt = DeltaTable(store.uri, storage_options=store._options or None)
    (dt.merge(_rows(range(5, 15), name="m"), "t.id = s.id", source_alias="s", target_alias="t")
       .when_matched_update_all().when_not_matched_insert_all().execute())
    store.refresh()
    assert any(has_view_types(s) for s in _file_schemas(store).values()), "delta-rs no longer writes view types?"
    content = _content(store)
    store.optimize(target_size=1)  # every file is too big to bin-pack: only the rewrite touches them
    _assert_plain(store)
    assert _content(store) == content


def test_the_rewrite_keeps_rows_whose_sequence_repeats_elsewhere(store):
    """The rewrite removes rows by _rhei_seq and adds back what that predicate matched: duplicates survive too."""
    store.append(_rows(range(0, 5)))  # seqs 0..4 in a plain file
    dt = DeltaTable(store.uri, storage_options=store._options or None)
    dup = _rows(range(100, 103)).set_column(4, "_rhei_seq", pa.array([0, 1, 2], pa.int64()))
    (dt.merge(dup, "t.id = s.id", source_alias="s", target_alias="t").when_not_matched_insert_all().execute())
    store.refresh()
    content = _content(store)
    assert len(content) == 8
    store.optimize(target_size=1)
    _assert_plain(store)
    assert _content(store) == content


def test_a_failed_rewrite_leaves_the_merge_committed_and_the_next_optimize_finishes_it(store, monkeypatch, caplog):
    from rhei_lake.storage.plain_types import PlainTypes

    store.append(_rows(range(0, 10)))
    real = PlainTypes.rewrite

    def refuse(self, *args, **kwargs):
        raise OSError("injected: the store went away")

    monkeypatch.setattr(PlainTypes, "rewrite", refuse)
    assert store.merge(_rows(range(5, 15), name="u"), UPSERT).updated == 5
    assert "view types stay until the next compaction" in caplog.text
    assert any(has_view_types(s) for s in _file_schemas(store).values())
    content = _content(store)
    monkeypatch.setattr(PlainTypes, "rewrite", real)
    store.optimize(target_size=1)
    _assert_plain(store)
    assert _content(store) == content
