"""A read-only lake on S3 trusts the lake's change marker only as far as it may.

A reader with nothing new pays the marker's one request; it still sees every
commit SQLite (the oracle) says was made: an initial snapshot that jumps the
watermark with no tail segment, a flush, commits whose marker write was lost
(a writer that died between the two), and a lake whose writers keep no marker.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

import rhei_lake
from rhei_lake.query import followed_tables
from rhei_lake.storage.change_marker import MARKER_KEY
from tests.support.oracle import lake_state, sqlite_state
from tests.support.waiting import wait_for

pytestmark = pytest.mark.s3

INTERVAL = 0.3


def _writer(tmp_path, url, options, *, register: bool = True) -> rhei_lake.Lake:
    """A lake syncing ``app.db``, its table ``t (id, v)`` registered unless told otherwise."""
    lake = rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, tail_flush_segments=10_000
    )
    if register:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
    return lake


def _oracle(tmp_path, table: str) -> list[tuple]:
    conn = sqlite3.connect(tmp_path / "app.db")
    try:
        return sqlite_state(conn, table)
    finally:
        conn.close()


def _sees(reader, tmp_path, table: str = "t") -> bool:
    return lake_state(reader, table) == _oracle(tmp_path, table)


def _interval_passed(reader) -> bool:
    return reader._followed._looked["t"] < time.monotonic() - INTERVAL


def _lose_marker_writes(lake) -> None:
    """From now on this writer commits but never writes the marker: a writer dying between the two, every time."""
    lake.storage.marker._write = lambda: None


def test_nothing_new_costs_the_marker_alone_and_every_kind_of_commit_is_seen(proxied_lake, tmp_path):
    url, options, proxy = proxied_lake
    writer = _writer(tmp_path, url, options)
    try:
        writer.execute("CREATE TABLE other (id INTEGER PRIMARY KEY)")
        writer.register_table("other")
        writer.execute("INSERT INTO t VALUES (1, 'a')")
        writer.sync_now()
        with rhei_lake.open(storage=url, storage_options=options, refresh_interval=INTERVAL) as reader:
            assert _sees(reader, tmp_path)
            wait_for(lambda: _interval_passed(reader), 5)
            proxy.reset()
            assert _sees(reader, tmp_path)
            assert proxy.requests()["paths"] == [f"GET {_key(url, MARKER_KEY)}"]

            # A sync, then a flush of it with nothing new: both seen within the interval.
            writer.execute("INSERT INTO t VALUES (2, 'b')")
            writer.sync_now()
            wait_for(lambda: _sees(reader, tmp_path), 5, "the sync")
            writer.flush()
            writer.execute("UPDATE t SET v = 'c' WHERE id = 1")
            writer.sync_now()
            wait_for(lambda: _sees(reader, tmp_path), 5, "the sync after a flush")

            # An initial snapshot commits a watermark in one Delta commit, with no tail segment.
            writer.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT)")
            writer.execute("INSERT INTO u VALUES (1, 'a'), (2, 'b')")
            writer.register_table("u")
            wait_for(lambda: _sees(reader, tmp_path, "u"), 5, "the initial snapshot")
            writer.execute("DELETE FROM u WHERE id = 2")
            writer.sync_now()
            wait_for(lambda: _sees(reader, tmp_path, "u"), 5, "a sync after the initial snapshot")

            # A compaction, then more syncs.
            writer.compact(vacuum_retention=0)
            writer.execute("INSERT INTO t VALUES (4, 'e')")
            writer.sync_now()
            wait_for(lambda: _sees(reader, tmp_path), 5, "the sync after a compaction")
    finally:
        writer.close()


def test_commits_whose_marker_write_was_lost_are_seen_at_the_next_full_look_or_writer_open(
    proxied_lake, tmp_path, monkeypatch
):
    url, options, _proxy = proxied_lake
    monkeypatch.setattr(followed_tables, "FULL_LOOK_EVERY", 8)
    writer = _writer(tmp_path, url, options)
    with rhei_lake.open(storage=url, storage_options=options, refresh_interval=INTERVAL) as reader:
        assert _sees(reader, tmp_path)
        _lose_marker_writes(writer)
        writer.execute("INSERT INTO t VALUES (1, 'a')")
        writer.sync_now()
        # Not announced: seen at the reader's periodic full look (8 intervals), not forever hidden.
        wait_for(lambda: _sees(reader, tmp_path), 8 * INTERVAL + 5, "the unannounced sync")

        writer.execute("INSERT INTO t VALUES (2, 'b')")
        writer.sync_now()
        writer.close()  # the writer "dies" with a commit the marker never announced
        monkeypatch.setattr(followed_tables, "FULL_LOOK_EVERY", 10_000)
        # A writer opening the lake announces what its predecessor left.
        successor = _writer(tmp_path, url, options, register=False)
        try:
            wait_for(lambda: _sees(reader, tmp_path), 5, "the predecessor's last sync")
        finally:
            successor.close()


def test_a_lake_without_a_marker_is_looked_at_every_interval(proxied_lake, tmp_path):
    """Writers of older versions keep no marker: the reader falls back to looking at each table it reads."""
    url, options, proxy = proxied_lake
    writer = _writer(tmp_path, url, options)
    try:
        _lose_marker_writes(writer)
        writer.storage.blobs.delete([MARKER_KEY])
        with rhei_lake.open(storage=url, storage_options=options, refresh_interval=INTERVAL) as reader:
            assert _sees(reader, tmp_path)
            for i in range(3):
                writer.execute("INSERT INTO t VALUES (?, 'x')", (i,))
                writer.sync_now()
                wait_for(lambda: _sees(reader, tmp_path), 5, f"sync {i}")
            wait_for(lambda: _interval_passed(reader), 5)
            proxy.reset()
            assert _sees(reader, tmp_path)
            looked = proxy.requests()["paths"]
            assert looked[0] == f"GET {_key(url, MARKER_KEY)}" and len(looked) == 3, looked  # marker, tail, feed
    finally:
        writer.close()


def _key(url: str, key: str) -> str:
    return "/" + url.removeprefix("s3://").rstrip("/") + "/" + key
