"""Unregistering a table, then reopening: the other tables sync on (SQLite is the oracle)."""

from __future__ import annotations

import sqlite3

import rhei_lake


def test_a_lake_reopened_after_unregistering_the_table_of_the_newest_event_syncs_on(htap_lake):
    """The CDC log keeps its newest row (a sequence number is never handed out twice); when it was the
    unregistered table's last event, the next process read it again from the other tables' position and
    refused every sync ("the CDC log holds events of 'a', which is not registered")."""
    with htap_lake() as lake:
        for table in ("a", "b"):
            lake.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
            lake.execute(f"INSERT INTO {table} VALUES (1, 'old')")
            lake.register_table(table)
        lake.sync_now()
        lake.execute("UPDATE a SET name = 'last' WHERE id = 1")  # the newest row of the log
        lake.unregister_table("a")
        newest = lake.sync_engine.source.max_seq()
    with htap_lake() as lake:
        assert lake.sync_engine.source.max_seq() == newest  # kept: no sequence number is handed out twice
        lake.execute("UPDATE b SET name = 'new' WHERE id = 1")
        assert lake.sync_now().events == 1
        assert lake.sync_engine.source.max_seq() == newest + 1
        assert lake.tables() == ["b"]
        oracle = sqlite3.connect(lake.config.oltp_path)
        assert lake.query("SELECT id, name FROM b").to_pylist() == [
            {"id": i, "name": n} for i, n in oracle.execute("SELECT id, name FROM b")
        ]
        oracle.close()
    with rhei_lake.open(storage=lake.location.url) as reader:
        assert reader.query("SELECT name FROM a").column(0).to_pylist() == ["last"]
