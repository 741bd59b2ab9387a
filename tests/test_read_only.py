"""A lake opened ``read_only`` reads the lake (and the database, for point reads and lag) and writes nothing."""

from __future__ import annotations

import sqlite3

import pytest

import rhei_lake
from rhei_lake.errors import ConfigError, SourceError
from tests.support.files import tree_digest


@pytest.fixture
def synced(tmp_path):
    """app.db mirrored into ./lake, then one more write captured by the triggers but not synced."""
    db, lake_url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=lake_url) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        lake.sync_now()
    app = sqlite3.connect(db)
    with app:
        app.execute("UPDATE t SET v = 'c' WHERE id = 2")
    app.close()
    return tmp_path, db, lake_url


def test_a_read_only_lake_changes_neither_the_database_nor_the_lake(synced):
    folder, db, lake_url = synced
    before = tree_digest(folder)
    with rhei_lake.open(oltp_path=db, storage=lake_url, read_only=True) as lake:
        assert lake.tables() == ["t"]
        assert lake.query("SELECT v FROM t ORDER BY id").column("v").to_pylist() == ["a", "b"]  # the lake: synced
        point = lake.query("SELECT v FROM t WHERE id = 2")  # a point read: the database, fresh
        assert point.column("v").to_pylist() == ["c"]
        status = lake.sync_status().tables["t"]
        assert (status.synced_seq, status.lag_events) == (3, 1)
        assert status.last_commit_at is None and status.stored_commit_at is not None  # this process committed nothing
        for write in (
            lambda: lake.execute("DELETE FROM t"),
            lake.sync_now,
            lake.compact,
            lake.flush,
            lambda: lake.register_table("t"),
            lambda: lake.start_sync(1.0),
        ):
            with pytest.raises(SourceError, match="read-only"):
                write()
    assert tree_digest(folder) == before


def test_a_read_only_lake_takes_no_writer_lease(synced):
    _folder, db, lake_url = synced
    with rhei_lake.open(oltp_path=db, storage=lake_url) as writer:
        with rhei_lake.open(oltp_path=db, storage=lake_url, read_only=True) as reader:
            writer.execute("INSERT INTO t VALUES (3, 'd')")
            writer.sync_now()
            assert reader.query("SELECT count(*) AS n FROM t").column("n").to_pylist() == [3]


def test_read_only_refuses_a_missing_database_and_a_sync_loop(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        rhei_lake.open(oltp_path=str(tmp_path / "typo.db"), storage=str(tmp_path / "lake"), read_only=True)
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "lake").exists()
    with pytest.raises(ConfigError, match="sync_interval"):
        rhei_lake.open(storage=str(tmp_path / "lake"), read_only=True, sync_interval=1.0)


def test_unmirrored_tables_lists_what_the_lake_does_not_follow(synced):
    _folder, db, lake_url = synced
    app = sqlite3.connect(db)
    app.execute("CREATE TABLE logs (msg TEXT)")
    app.close()
    with rhei_lake.open(oltp_path=db, storage=lake_url, read_only=True) as lake:
        assert lake.unmirrored_tables() == ["logs"]
    with rhei_lake.open(oltp_path=db, storage=lake_url) as lake:
        assert lake.unmirrored_tables() == ["logs"]


def test_a_read_only_lakes_status_follows_the_writer_without_a_query(tmp_path):
    """What ``rh dashboard`` shows: new syncs and new tables of another writer, within ``refresh_interval``."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as writer:
        writer.execute("CREATE TABLE a (id INTEGER PRIMARY KEY)")
        writer.register_table("a")
        with rhei_lake.open(storage=str(tmp_path / "lake"), read_only=True, refresh_interval=0) as reader:
            first = reader.sync_status().tables["a"].synced_seq
            writer.execute_batch([("INSERT INTO a VALUES (?)", (i,)) for i in range(5)])
            writer.sync_now()
            writer.execute("CREATE TABLE b (id INTEGER PRIMARY KEY)")
            writer.register_table("b")
            status = reader.sync_status()
            assert status.tables["a"].synced_seq == first + 5 and status.tables["a"].unfolded_events == 5
            assert set(status.tables) == {"a", "b"}
