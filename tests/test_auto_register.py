"""``auto_register``: a table created through execute()/execute_batch() is mirrored once its CREATE commits."""

from __future__ import annotations

import logging

import pytest

import rhei_lake


@pytest.fixture
def lake(htap_lake):
    return htap_lake(auto_register=True)


def test_off_by_default(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        assert lake.tables() == [] and lake.unmirrored_tables() == ["t"]


def test_a_created_table_is_mirrored_and_its_rows_synced(lake):
    lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    assert lake.tables() == ["t"]
    lake.execute("INSERT INTO t VALUES (1, 'a')")
    lake.sync_now()
    assert lake.query("SELECT v FROM t").column("v").to_pylist() == ["a"]
    lake.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")  # nothing new: nothing happens
    lake.execute("CREATE TEMP TABLE scratch (id INTEGER PRIMARY KEY)")  # another connection cannot see it
    lake.execute("CREATE TABLE copy AS SELECT * FROM t")  # no primary key: left out, with a warning
    assert lake.tables() == ["t"]


def test_inside_a_transaction_the_table_is_mirrored_when_it_commits(lake):
    lake.execute("BEGIN")
    lake.execute("CREATE TABLE a (id INTEGER PRIMARY KEY)")
    lake.execute("INSERT INTO a VALUES (1)")
    assert lake.tables() == []  # registering now would wait on this transaction's write lock
    lake.execute("COMMIT")
    assert lake.tables() == ["a"]
    lake.sync_now()
    assert lake.query("SELECT count(*) AS n FROM a").column("n").to_pylist() == [1]  # the snapshot has it
    lake.execute("BEGIN")
    lake.execute("CREATE TABLE gone (id INTEGER PRIMARY KEY)")
    lake.execute("ROLLBACK")
    lake.execute("SELECT 1")
    assert lake.tables() == ["a"]


def test_a_batch_registers_what_it_created(lake):
    changed = lake.execute_batch(["CREATE TABLE b (id INTEGER PRIMARY KEY)", "INSERT INTO b VALUES (1), (2)"])
    assert changed == 2 and lake.tables() == ["b"]


def test_a_table_that_cannot_be_mirrored_stays_with_a_warning(lake, caplog):
    with caplog.at_level(logging.WARNING, logger="rhei_lake"):
        lake.execute("CREATE TABLE logs (msg TEXT)")
    assert lake.tables() == [] and lake.unmirrored_tables() == ["logs"]
    assert "'logs' was created but is not mirrored" in caplog.text and "PRIMARY KEY" in caplog.text


def test_rows_changed_is_the_statements_own_count(lake):
    lake.execute("CREATE TABLE n (id INTEGER PRIMARY KEY)")
    inserted = lake.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000) INSERT INTO n SELECT i FROM s"
    )
    assert inserted == 3000  # not -1 (rowcount of a WITH statement), not 6000 (the capture trigger's inserts too)
    assert lake.execute("SELECT count(*) FROM n") == 0
    assert lake.execute("DELETE FROM n WHERE id <= 10") == 10


@pytest.mark.parametrize("begin", ["BEGIN", "begin transaction;", "BEGIN DEFERRED"])
def test_a_transaction_opened_through_execute_holds_the_write_lock_from_its_begin(lake, tmp_path, begin):
    """The lake prunes its CDC log from another connection: a deferred transaction that read before it
    wrote would then fail with "database is locked" at once (SQLITE_BUSY_SNAPSHOT), so BEGIN is immediate."""
    import sqlite3

    lake.execute("CREATE TABLE a (id INTEGER PRIMARY KEY)")
    lake.execute(begin)
    lake.execute("SELECT count(*) FROM a")
    other = sqlite3.connect(tmp_path / "app.db", timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("INSERT INTO a VALUES (99)")
    other.close()
    lake.execute("INSERT INTO a VALUES (1)")
    lake.execute("COMMIT")
    lake.sync_now()
    assert lake.query("SELECT id FROM a").column("id").to_pylist() == [1]
