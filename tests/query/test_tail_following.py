"""A read-only lake that looks only at the tail between its looks at the Delta tables still sees one whole state.

With ``refresh_interval`` above 0 a look at an idle table reads only the tail
segment after its watermark; the Delta tables (change feed, ``history`` /
``current``) are looked at when a segment arrives, every tenth interval, or
when the last look is old. Another process's commits that reach the Delta
tables without a segment (a compaction with expiry, a schema change) must
never make the reader mix two states, and must reach it within the bound
docs/time-travel-and-compaction.md states. SQLite is the oracle.
"""

from __future__ import annotations

import time

import pytest

import rhei_lake
from rhei_lake.query.followed_tables import DERIVED_EVERY
from tests.support.oracle import oltp_oracle, sqlite_state

INTERVAL = 0.3


def _ids(lake, sql: str = "SELECT id FROM t ORDER BY id") -> list[int]:
    return [row["id"] for row in lake.query(sql).to_pylist()]


def _sqlite_ids(writer) -> list[int]:
    return [row[0] for row in sqlite_state(oltp_oracle(writer), "t")]


@pytest.mark.parametrize("mode", ["temporal", "mirror"])
def test_a_compaction_that_expires_events_never_makes_the_reader_lose_them(tmp_path, engine, mode):
    """Another process folds events the reader has not seen and expires them from the change feed.

    The reader, seeing the next sync's segment, reloaded the change feed (now
    without those events) and kept its derived table from before the fold:
    ``t``, brought forward from the feed alone, lost them for good (SQLite
    [1, 2, 3], the reader [1, 3] then and after every later look).
    """
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(
        oltp_path=db, storage=url, changelog_retention="0", tail_flush_segments=10_000, sync_mode=mode
    ) as writer:
        writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        writer.execute("INSERT INTO t VALUES (1, 'a')")
        writer.register_table("t")
        writer.compact()
        with rhei_lake.open(storage=url, refresh_interval=INTERVAL, engine=engine) as reader:
            assert _ids(reader) == [1]
            writer.execute("INSERT INTO t VALUES (2, 'b')")
            writer.sync_now()
            writer.compact()  # folds 2, expires its event from the change feed
            writer.execute("INSERT INTO t VALUES (3, 'c')")
            writer.sync_now()
            time.sleep(INTERVAL + 0.05)
            assert _ids(reader) == _sqlite_ids(writer) == [1, 2, 3]
            if mode == "temporal":
                assert _ids(reader, "SELECT id FROM t_history WHERE _rhei_valid_to IS NULL ORDER BY id") == [1, 2, 3]


def _columns(lake) -> list[str]:
    return lake.query("SELECT * FROM t").schema.names


def test_a_schema_change_reaches_the_reader_with_the_next_sync_or_its_next_look_at_the_table(tmp_path):
    """add_column/drop_column commit to the Delta tables only (no segment, no event).

    A reader that looks only at the tail meanwhile keeps the old columns (the
    old state, whole) until a sync of the table brings a segment, or until its
    next look at the Delta tables (every DERIVED_EVERY intervals): the limit
    docs/time-travel-and-compaction.md states.
    """
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=url) as writer:
        writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        writer.execute("INSERT INTO t VALUES (1, 'a')")
        writer.register_table("t")
        with rhei_lake.open(storage=url, refresh_interval=INTERVAL) as reader:
            assert _columns(reader) == ["id", "v"]
            writer.add_column("t", "w", "TEXT")
            writer.execute("INSERT INTO t VALUES (2, 'b', 'x')")
            writer.sync_now()
            time.sleep(INTERVAL + 0.05)
            assert _columns(reader) == ["id", "v", "w"]
            assert reader.query("SELECT id, w FROM t ORDER BY id").to_pylist() == [
                {"id": 1, "w": None},
                {"id": 2, "w": "x"},
            ]
            writer.drop_column("t", "v")  # and no sync: nothing for the tail to show
            time.sleep(DERIVED_EVERY * INTERVAL + 0.05)
            assert _columns(reader) == ["id", "w"]
