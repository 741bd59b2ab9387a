"""Schema evolution: add_column / drop_column through SQLite, triggers, Delta tables and views."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest

import rhei_lake
from rhei_lake.errors import SchemaError, SourceError, StorageUnavailableError
from rhei_lake.sync import trigger_sync
from tests.support.oracle import assert_same_state, lake_state, oltp_oracle, sqlite_state


def _instant() -> datetime:
    time.sleep(0.003)  # SQLite's clock has millisecond resolution
    now = datetime.now(UTC)
    time.sleep(0.003)
    return now


def _compact(lake: rhei_lake.Lake) -> None:
    """Fold what is synced: compaction when the lake has it, else flushing the changelog tail."""
    if hasattr(lake, "compact"):
        lake.compact()
    else:
        lake.flush()


def test_add_and_drop_keep_history_queryable(storage, tmp_path):
    url, options = storage
    db = str(tmp_path / "app.db")
    with rhei_lake.open(oltp_path=db, storage=url, storage_options=options) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b REAL, c INTEGER)")
        lake.register_table("t")
        lake.execute_batch([("INSERT INTO t VALUES (?, ?, ?, ?)", (i, f"a{i}", i / 7, i * 10)) for i in range(1, 6)])
        lake.sync_now()
        _compact(lake)
        before_add = _instant()
        state_before_add = sqlite_state(oltp_oracle(lake), "t")

        spec = lake.add_column("t", "note", "VARCHAR(20)")
        assert spec.column_names == ["id", "a", "b", "c", "note"]
        assert spec.column("note").arrow_type == pa.string()
        lake.execute("UPDATE t SET note = 'first' WHERE id = 1")
        lake.execute("INSERT INTO t VALUES (6, 'a6', 0.1, 60, 'six')")
        lake.sync_now()
        assert_same_state(lake, oltp_oracle(lake), "t")
        after_add = _instant()
        state_after_add = sqlite_state(oltp_oracle(lake), "t")

        spec = lake.drop_column("t", "b")
        assert spec.column_names == ["id", "a", "c", "note"]
        lake.execute("UPDATE t SET c = -1 WHERE id = 2")
        lake.sync_now()
        _compact(lake)
        assert_same_state(lake, oltp_oracle(lake), "t")

        # as_of before each change: the view has today's columns; an added column reads NULL back then
        old = lake_state(lake, "t", as_of=before_add)
        assert old == [(i, a, c, None) for (i, a, _b, c) in state_before_add]
        mid = lake_state(lake, "t", as_of=after_add)
        assert mid == [(i, a, c, note) for (i, a, _b, c, note) in state_after_add]
        assert lake.query("SELECT * FROM t_history WHERE id = 1 ORDER BY _rhei_seq").column("note").to_pylist() == [
            None,
            "first",
        ]
        feed = lake.query("SELECT * FROM t_changes ORDER BY _rhei_seq").schema.names
        assert feed == ["id", "a", "c", "note", "_rhei_seq", "_rhei_op", "_rhei_ts"]

    # a new process with only the URL sees the evolved spec, and the same history
    with rhei_lake.open(storage=url, storage_options=options) as reader:
        if url.startswith("memory://"):
            return  # memory lakes end with their process' last handle
        assert reader.table_spec("t").column_names == ["id", "a", "c", "note"]
        assert lake_state(reader, "t", as_of=before_add) == old
        assert lake_state(reader, "t", as_of=after_add) == mid


def test_dropped_values_stay_in_storage_but_a_re_added_column_reads_null(durable_storage, tmp_path):
    url, options = durable_storage
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, tag TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'old')")
        lake.sync_now()
        lake.flush()
        lake.drop_column("t", "tag")
        lake.execute("INSERT INTO t VALUES (2)")
        lake.sync_now()
        lake.flush()
        stored = lake.storage.table_store("t", "changes").to_arrow()
        assert sorted(zip(stored.column("id").to_pylist(), stored.column("tag").to_pylist())) == [(1, "old"), (2, None)]
        with pytest.raises(SchemaError, match="cannot come back as"):
            lake.add_column("t", "tag", "INTEGER")
        assert lake.table_spec("t").column_names == ["id"]  # refused before anything changed
        lake.add_column("t", "tag", "TEXT")
        # SQLite's re-added column is empty, and so is the lake's: the old values stay in storage only
        assert sqlite_state(oltp_oracle(lake), "t") == [(1, None), (2, None)]
        assert lake.query("SELECT * FROM t ORDER BY id", hint="olap").to_pylist() == [
            {"id": 1, "tag": None},
            {"id": 2, "tag": None},
        ]
        history = lake.query("SELECT id, tag FROM t_history ORDER BY _rhei_seq").to_pylist()
        assert history == [{"id": 1, "tag": None}, {"id": 2, "tag": None}]
        assert lake.query("SELECT tag FROM t_changes").column("tag").null_count == 2
        stored = lake.storage.table_store("t", "changes").to_arrow()
        assert "old" in stored.column("tag").to_pylist()
        lake.execute("UPDATE t SET tag = NULL WHERE id = 1")  # SQLite already holds NULL: no event
        assert lake.sync_now().events == 0


def test_events_captured_before_a_drop_keep_their_values(tmp_path):
    """Unsynced events use the old slot layout: they are committed before the layout changes."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT, c INTEGER)")
        lake.register_table("t")
        lake.execute_batch([("INSERT INTO t VALUES (?, ?, ?, ?)", (i, f"a{i}", f"b{i}", i)) for i in range(50)])
        lake.drop_column("t", "b")  # nothing synced yet
        lake.execute("INSERT INTO t VALUES (50, 'a50', 50)")
        assert lake.sync_now().events == 1
        feed = lake.query("SELECT id, a, c FROM t_changes ORDER BY _rhei_seq").to_pylist()
        assert feed == [{"id": i, "a": f"a{i}", "c": i} for i in range(51)]


def test_concurrent_writer_during_a_drop_loses_nothing(tmp_path):
    db = str(tmp_path / "app.db")
    with rhei_lake.open(oltp_path=db, storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT, c INTEGER)")
        lake.register_table("t")
        stop = threading.Event()
        written = []

        def writer() -> None:
            conn = sqlite3.connect(db, isolation_level=None, timeout=30)
            i = 0
            while not stop.is_set():
                conn.execute("INSERT INTO t (id, a, c) VALUES (?, ?, ?)", (i, f"a{i}", i))
                written.append(i)
                i += 1
                time.sleep(0.0005)
            conn.close()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(0.05)
            lake.sync_now()
            time.sleep(0.05)
            lake.drop_column("t", "b")
            time.sleep(0.05)
        finally:
            stop.set()
            thread.join()
        lake.sync_now()
        assert len(written) > 10
        assert_same_state(lake, oltp_oracle(lake), "t")
        feed = lake.query("SELECT id, a, c FROM t_changes ORDER BY _rhei_seq").to_pylist()
        assert feed == [{"id": i, "a": f"a{i}", "c": i} for i in written]


def test_an_unfinished_lake_update_is_completed_by_the_next_sync_or_open(tmp_path, monkeypatch):
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'x')")
        real = trigger_sync.apply_spec
        calls = {"n": 0}

        def flaky(storage, spec):
            calls["n"] += 1
            if calls["n"] == 1:
                raise StorageUnavailableError("injected: the store went away")
            return real(storage, spec)

        monkeypatch.setattr(trigger_sync, "apply_spec", flaky)
        with pytest.raises(StorageUnavailableError):
            lake.add_column("t", "extra", "INTEGER")
        # SQLite changed (the decision point); the lake learns the new spec before any new-layout event lands
        assert [r[1] for r in oltp_oracle(lake).execute("PRAGMA table_info(t)")] == ["id", "v", "extra"]
        lake.execute("INSERT INTO t VALUES (2, 'y', 42)")
        lake.sync_now()
        assert lake.query("SELECT * FROM t ORDER BY id", hint="olap").to_pylist() == [
            {"id": 1, "v": "x", "extra": None},
            {"id": 2, "v": "y", "extra": 42},
        ]
        monkeypatch.setattr(trigger_sync, "apply_spec", real)

        # the same gap, closed by reopening instead: drop while the lake cannot hear it
        monkeypatch.setattr(
            trigger_sync, "apply_spec", lambda s, p: (_ for _ in ()).throw(StorageUnavailableError("x"))
        )
        with pytest.raises(StorageUnavailableError):
            lake.drop_column("t", "v")
        monkeypatch.setattr(trigger_sync, "apply_spec", real)
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        assert lake.table_spec("t").column_names == ["id", "extra"]
        lake.execute("INSERT INTO t VALUES (3, 7)")
        lake.sync_now()
        assert_same_state(lake, oltp_oracle(lake), "t")
    with rhei_lake.open(storage=url) as reader:
        assert reader.table_spec("t").column_names == ["id", "extra"]


def test_a_reader_picks_up_evolution_made_while_it_is_open(tmp_path):
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'x')")
        lake.sync_now()
        with rhei_lake.open(storage=url) as reader:
            assert reader.query("SELECT * FROM t").column_names == ["id", "v"]
            lake.add_column("t", "n", "INTEGER")
            lake.execute("UPDATE t SET n = 5")
            lake.sync_now()
            assert reader.query("SELECT * FROM t").to_pylist() == [{"id": 1, "v": "x", "n": 5}]


def test_refusals(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE, w TEXT)")
        lake.register_table("t")
        cases = [
            (lambda: lake.drop_column("t", "id"), "primary key"),
            (lambda: lake.drop_column("t", "nope"), "no column"),
            (lambda: lake.drop_column("t", "v"), "SQLite refused"),  # UNIQUE columns cannot be dropped
            (lambda: lake.add_column("t", "W", "TEXT"), "already has"),
            (lambda: lake.add_column("t", "x", "TEXT DEFAULT 'a'"), "not a type name"),
            (lambda: lake.add_column("t", "x", "INT; DROP TABLE t"), "not a type name"),
            (lambda: lake.add_column("t", "_rhei_x", "TEXT"), "reserved"),
            (lambda: lake.add_column("nope", "x", "TEXT"), "no mirrored table"),
            (lambda: lake.rename_column("t", "w", "w2"), "not supported"),
        ]
        for action, message in cases:
            with pytest.raises(SchemaError, match=message):
                action()
        lake.execute("BEGIN")
        with pytest.raises(SourceError, match="transaction"):
            lake.add_column("t", "x", "TEXT")
        lake.execute("ROLLBACK")
        assert lake.table_spec("t").column_names == ["id", "v", "w"]
        assert [r[1] for r in oltp_oracle(lake).execute("PRAGMA table_info(t)")] == ["id", "v", "w"]
        lake.add_column("T", "x", "decimal(10, 2)")  # table names are case-insensitive, like SQLite's
        assert lake.table_spec("t").column("x").arrow_type == pa.decimal128(10, 2)
    with rhei_lake.open(storage=str(tmp_path / "empty-lake")) as reader, pytest.raises(SourceError, match="oltp"):
        reader.add_column("t", "y", "TEXT")


def test_a_schema_change_waits_for_another_tables_event_that_stops_the_sync(htap_lake):
    """add_column commits every captured event first; one of another table that does not fit its declared
    type stops it as it stops every sync: refused with that error and a note saying why, nothing changed,
    and once repair_event corrects the event the change goes through (found by the differential fuzzer)."""
    with htap_lake() as lake:
        lake.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, n INTEGER)")
        lake.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, s TEXT)")
        lake.execute("INSERT INTO a VALUES (1, 1)")
        lake.execute("INSERT INTO b VALUES (1, 'x')")
        lake.register_table("a")
        lake.register_table("b")
        lake.execute("UPDATE a SET n = 'abc' WHERE id = 1")
        lake.execute("UPDATE b SET s = 'y' WHERE id = 1")
        app = sqlite3.connect(lake.config.oltp_path)
        before = app.execute("SELECT sql FROM sqlite_master WHERE name = 'b'").fetchall()
        with pytest.raises(rhei_lake.TypeMismatchError) as refused:
            lake.add_column("b", "extra", "TEXT")
        assert refused.value.table == "a" and refused.value.seq is not None
        assert any("the change of 'b' was not made" in note for note in refused.value.__notes__)
        assert app.execute("SELECT sql FROM sqlite_master WHERE name = 'b'").fetchall() == before
        app.close()
        assert [c.name for c in lake.table_spec("b").columns] == ["id", "s"]
        lake.repair_event("a", refused.value.seq, {"n": 0})
        lake.add_column("b", "extra", "TEXT")
        lake.execute("UPDATE b SET extra = 'z' WHERE id = 1")
        lake.sync_now()
        assert lake.query("SELECT id, s, extra FROM b").to_pylist() == [{"id": 1, "s": "y", "extra": "z"}]
        assert lake.query("SELECT id, n FROM a").to_pylist() == [{"id": 1, "n": 0}]
