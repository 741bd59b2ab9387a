"""When a captured change is dated (issue 14: events carried the time of their statement, not of their commit).

A trigger cannot see the commit, so a change is dated at its statement, but no
earlier than just after the last read of the CDC log that missed it:
``max(statement time, previous read + 1 µs)``. Every answer for an instant up to
``synced_through`` is then final; these tests hold the lake to that, and to
dating each change after the read that missed it and no later than its commit,
across restarts and a sync that failed half-way.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rhei_lake
from rhei_lake import faults
from rhei_lake.sync import trigger_sync
from rhei_lake.sync.commit_time import DatingFloor
from rhei_lake.timeutil import now_micros
from rhei_lake.timeutil import to_micros as micros

ONE_MICRO = timedelta(microseconds=1)


def _setup(lake: rhei_lake.Lake, *tables: str) -> sqlite3.Connection:
    for table in tables:
        lake.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
        lake.execute(f"INSERT INTO {table} VALUES (1, 'old')")
        lake.register_table(table)
    return sqlite3.connect(lake.config.oltp_path, isolation_level=None)


def _now() -> datetime:
    moment = datetime.now(UTC)
    time.sleep(0.003)  # the next statement falls in a later millisecond (SQLite's clock)
    return moment


def _names(lake: rhei_lake.Lake, table: str, at: datetime) -> list[str]:
    return [r["name"] for r in lake.query(f"SELECT name FROM {table}", as_of=at).to_pylist()]


def _versions(lake: rhei_lake.Lake, table: str) -> list[tuple[str, datetime]]:
    rows = lake.query(f"SELECT name, _rhei_valid_from FROM {table}_history ORDER BY _rhei_seq").to_pylist()
    return [(r["name"], r["_rhei_valid_from"]) for r in rows]


def test_an_answer_for_an_instant_the_lake_synced_past_is_final(htap_lake):
    """The issue's program: a write is left uncommitted across a sync; the instants up to that sync's read
    answer as before the commit, after it as well."""
    with htap_lake() as lake:
        app = _setup(lake, "items")
        app.execute("BEGIN")
        app.execute("UPDATE items SET name = 'new' WHERE id = 1")
        after_statement = _now()
        through = lake.sync_now().synced_through
        assert through is not None and after_statement < through
        assert lake.sync_status().synced_through == through
        instants = [after_statement, through]
        before = {at: _names(lake, "items", at) for at in instants}
        assert set(map(tuple, before.values())) == {("old",)}
        time.sleep(0.003)
        app.execute("COMMIT")
        committed = _now()
        lake.sync_now()
        assert {at: _names(lake, "items", at) for at in instants} == before  # final
        assert _names(lake, "items", committed) == ["new"]
        ((_, inserted), (name, dated)) = _versions(lake, "items")
        assert name == "new" and dated == through + ONE_MICRO  # after the read that missed it
        app.close()


def test_a_change_is_dated_after_the_read_that_missed_it_and_no_later_than_its_commit(htap_lake):
    with htap_lake() as lake:
        app = _setup(lake, "items")
        first_statement = _now()
        app.execute("UPDATE items SET name = 'autocommit' WHERE id = 1")  # dated at its statement
        after_first = _now()
        app.execute("BEGIN")
        app.execute("UPDATE items SET name = 'before the read' WHERE id = 1")
        read = lake.sync_now().synced_through
        time.sleep(0.003)
        second_statement = _now()
        app.execute("UPDATE items SET name = 'after the read' WHERE id = 1")
        time.sleep(0.003)
        app.execute("COMMIT")
        committed = _now()
        lake.sync_now()
        versions = _versions(lake, "items")
        assert [name for name, _ in versions] == ["old", "autocommit", "before the read", "after the read"]
        autocommit, before_read, after_read = (at for _, at in versions[1:])
        assert first_statement - timedelta(milliseconds=1) <= autocommit <= after_first
        assert before_read == read + ONE_MICRO  # its statement ran before the read
        assert second_statement - timedelta(milliseconds=1) <= after_read <= committed  # its statement's time
        assert read < after_read
        app.close()


def test_the_instant_a_lake_synced_past_stays_final_across_a_restart(htap_lake):
    """The read instant is committed with the events: a restarted process dates a transaction that was open
    across the last sync (and committed while no lake ran) no earlier than that sync's read."""
    with htap_lake() as lake:
        app = _setup(lake, "items", "other")
        lake.execute("INSERT INTO other VALUES (2, 'synced')")  # a change the sync commits with its read instant
        app.execute("BEGIN")
        app.execute("UPDATE items SET name = 'new' WHERE id = 1")
        time.sleep(0.003)
        through = lake.sync_now().synced_through
        before = _names(lake, "items", through)
    app.execute("COMMIT")  # while no lake runs (one cannot open while a transaction holds the write lock)
    with htap_lake() as lake:
        assert lake.sync_status().synced_through is None  # claimed again only once this process read the log
        lake.sync_now()
        assert _names(lake, "items", through) == before == ["old"]
        assert _versions(lake, "items")[-1] == ("new", through + ONE_MICRO)
    app.close()


def test_one_transaction_is_dated_once_when_a_sync_fails_between_its_tables(htap_lake):
    """A sync commits one table of a transaction and fails; the process ends; the next one dates the other
    table's part of it exactly as the first was dated (the lake never shows half of it)."""
    with htap_lake() as lake:
        app = _setup(lake, "a", "b")
        app.execute("BEGIN")
        app.execute("UPDATE a SET name = 'new' WHERE id = 1")
        app.execute("UPDATE b SET name = 'new' WHERE id = 1")
        through = lake.sync_now().synced_through
        time.sleep(0.003)
        app.execute("COMMIT")
        with faults.armed("changelog.after_commit", "eio"), pytest.raises(OSError):
            lake.sync_now()  # the first table's events are committed, the second's not
        done = [t for t in ("a", "b") if _versions(lake, t)[-1][0] == "new"]
        assert len(done) == 1
    with htap_lake() as lake:
        lake.sync_now()
        assert _versions(lake, "a")[-1] == _versions(lake, "b")[-1] == ("new", through + ONE_MICRO)
    app.close()


def test_an_instant_answered_by_syncs_that_committed_nothing_stays_final_across_a_restart(htap_lake):
    """Syncs that find nothing to commit still claim their read: a restarted process dates a transaction
    open across them after it (found by the differential fuzzer: a kill, a reopen, the commit, and an
    instant answered before showed the transaction's rows)."""
    with htap_lake() as lake:
        app = _setup(lake, "items")
        lake.sync_now()
        app.execute("BEGIN")
        app.execute("UPDATE items SET name = 'new' WHERE id = 1")
        time.sleep(0.003)
        lake.sync_now()
        time.sleep(0.003)
        through = lake.sync_now().synced_through  # commits nothing, as the one before
        before = _names(lake, "items", through)
        assert through is not None and before == ["old"]
    app.execute("COMMIT")  # while no lake runs
    with htap_lake() as lake:
        lake.sync_now()
        assert _names(lake, "items", through) == before
        assert _versions(lake, "items")[-1] == ("new", through + ONE_MICRO)
    app.close()


def _recorded_read(record: bytes | str | None) -> int | None:
    return json.loads(record)["read_at"] if record else None


def test_a_sync_that_commits_nothing_records_its_read_before_claiming_it(tmp_path, htap_lake):
    """In the database's ``_rhei_meta`` when its write lock is free (no Delta commit, no object written);
    in the lake's storage while another connection holds it (the sync does not wait for the transaction)."""
    with htap_lake() as lake:
        app = _setup(lake, "items")
        blob = tmp_path / "lake" / "_rhei" / "dating.json"
        through = lake.sync_now().synced_through
        meta = app.execute("SELECT value FROM _rhei_meta WHERE key = 'dating'").fetchone()
        assert _recorded_read(meta[0]) == micros(through)
        assert not blob.exists()
        app.execute("BEGIN")
        app.execute("UPDATE items SET name = 'new' WHERE id = 1")
        started = time.monotonic()
        held = lake.sync_now().synced_through
        assert time.monotonic() - started < 5  # did not wait out the busy timeout
        assert held > through and _recorded_read(blob.read_bytes()) == micros(held)
        app.execute("ROLLBACK")
    app.close()


def test_a_read_recorded_before_a_restart_still_dates_what_a_later_half_finished_sync_left(htap_lake):
    """A restarted process's sync reads the transaction, commits one table's part and fails; the next process
    dates the other part after the read the first process recorded, as the committed part was (found by the
    differential fuzzer: a crash after a changelog commit, and an instant answered before showed the
    transaction's rows; the half-finished sync's cursor kept only its own read)."""
    with htap_lake() as lake:
        app = _setup(lake, "a", "b")
        app.execute("BEGIN")
        app.execute("UPDATE a SET name = 'new' WHERE id = 1")
        app.execute("UPDATE b SET name = 'new' WHERE id = 1")
        time.sleep(0.003)
        lake.sync_now()
        time.sleep(0.003)
        through = lake.sync_now().synced_through  # recorded alone: both commit nothing
        assert _names(lake, "a", through) == _names(lake, "b", through) == ["old"]
    app.execute("COMMIT")  # while no lake runs
    with htap_lake() as lake:
        with faults.armed("changelog.after_commit", "eio"), pytest.raises(OSError):
            lake.sync_now()  # one table's part is committed, dated after the recorded read
        done = [t for t in ("a", "b") if _versions(lake, t)[-1][0] == "new"]
        assert len(done) == 1
    with htap_lake() as lake:
        lake.sync_now()
        for table in ("a", "b"):
            assert _names(lake, table, through) == ["old"]
            assert _versions(lake, table)[-1] == ("new", through + ONE_MICRO)
    app.close()


_READS = st.lists(st.tuples(st.integers(1, 50), st.integers(0, 20)), max_size=6)


@settings(max_examples=1000, deadline=None)
@given(
    floor=st.integers(0, 40),
    reads=_READS,
    final=st.none() | st.tuples(st.integers(1, 60), st.integers(0, 25)),
    others=st.lists(st.tuples(st.integers(0, 40), _READS), max_size=3),
    events=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 70)), min_size=1, max_size=12),
)
def test_a_restart_dates_each_event_after_every_read_any_record_names(floor, reads, final, others, events):
    """Each event is dated after the floor (0: none) and after every read that missed it (``through`` below its
    sequence), by a floor built from cursors as by the floor that wrote them (found by the fuzzer: a restart
    kept only the newest read, and a half-finished sync's cursor only its own)."""

    def expected(seq: int, ts: int, floors: list[int], known: list[tuple[int, int]]) -> int:
        return max([ts, *(f + 1 for f in floors if f > 0), *(at + 1 for at, through in known if through < seq)])

    dating = DatingFloor(floor, tuple(reads))
    cursors = [dating.cursor(final), *(DatingFloor(f, tuple(r)).cursor(None) for f, r in others)]
    restarted = DatingFloor.committed([*cursors, None, "not json", '{"reads": 3, "floor": true}'])
    known = [*reads, *([final] if final else []), *(read for _, r in others for read in r)]
    floors = [floor, *(f for f, _ in others)]
    table = pa.table(
        {
            "_rhei_seq": pa.array([seq for seq, _ in events], pa.int64()),
            "_rhei_ts": pa.array([ts for _, ts in events], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    dated = restarted.apply(table).column("_rhei_ts").cast(pa.int64()).to_pylist()
    assert dated == [expected(seq, ts, floors, known) for seq, ts in events]
    assert restarted.newest == max([*floors, *(at for at, _ in known)])


CLOCK_AHEAD = 60_000_000
"""Micros: the clock a first process reads the CDC log by, ahead of the true one a restart steps back to."""


def _read_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trigger_sync, "now_micros", lambda: now_micros() + CLOCK_AHEAD)


def _final_after_the_clock_steps_back(htap_lake, monkeypatch: pytest.MonkeyPatch, table: str, *instants) -> None:
    """The clock steps back; a restarted process dates a change made then (its statement's time is before
    every one of ``instants``) after them all, so they keep their answers."""
    monkeypatch.setattr(trigger_sync, "now_micros", now_micros)
    with htap_lake() as lake:
        lake.execute(f"UPDATE {table} SET name = 'new' WHERE id = 1")
        lake.sync_now()
        assert [_names(lake, table, at) for at in instants] == [["old"]] * len(instants)
        assert _versions(lake, table)[-1] == ("new", max(instants) + ONE_MICRO)


def test_an_instant_claimed_by_a_table_since_unregistered_stays_final_after_the_clock_steps_back(
    htap_lake, monkeypatch
):
    """The last reads the lake claimed were carried only by a table unregistered since (its cursor is no
    longer read); the wall clock then steps back, and a restarted process must still date a change after
    them (before: it dated it by its statement, before an instant already answered)."""
    _read_ahead(monkeypatch)
    with htap_lake() as lake:
        _setup(lake, "a", "b").close()
        lake.execute("UPDATE a SET name = 'synced' WHERE id = 1")
        through = lake.sync_now().synced_through  # carried by a's events alone
        assert _names(lake, "b", through) == ["old"]
        lake.execute("UPDATE a SET name = 'last' WHERE id = 1")
        lake.unregister_table("a")  # commits a's last event, carrying the read it made
        claimed = lake.sync_status().synced_through
        assert claimed is not None and claimed > through
    _final_after_the_clock_steps_back(htap_lake, monkeypatch, "b", through, claimed)


def test_a_transaction_over_three_tables_open_across_syncs_is_dated_once_across_a_crash_per_table(htap_lake):
    """A transaction writes three tables while the lake answers twice: once committing another change,
    once committing nothing (recorded in the lake's storage, the write lock being held). Then each of
    three processes commits one table's part of it and fails: every one dates its part after the last
    instant answered, and those instants keep their answers."""
    with htap_lake() as lake:
        app = _setup(lake, "a", "b", "c")
        lake.execute("UPDATE c SET name = 'before' WHERE id = 1")
        app.execute("BEGIN")
        for table in ("a", "b", "c"):
            app.execute(f"UPDATE {table} SET name = 'new' WHERE id = 1")
        time.sleep(0.003)
        first = lake.sync_now().synced_through  # commits c's earlier change, carrying its read
        time.sleep(0.003)
        last = lake.sync_now().synced_through  # commits nothing
        answers = {at: {t: _names(lake, t, at) for t in ("a", "b", "c")} for at in (first, last)}
        assert answers[first] == answers[last] == {"a": ["old"], "b": ["old"], "c": ["before"]}
    app.execute("COMMIT")
    for done in (1, 2):
        with htap_lake() as lake:
            with faults.armed("changelog.after_commit", "eio"), pytest.raises(OSError):
                lake.sync_now()  # one more table's part committed
            assert sum(_versions(lake, t)[-1][0] == "new" for t in ("a", "b", "c")) == done
    with htap_lake() as lake:
        lake.sync_now()
        assert {at: {t: _names(lake, t, at) for t in ("a", "b", "c")} for at in (first, last)} == answers
        assert {_versions(lake, t)[-1] for t in ("a", "b", "c")} == {("new", last + ONE_MICRO)}
    app.close()


def test_an_instant_claimed_inside_a_schema_change_that_failed_stays_final_after_the_clock_steps_back(
    htap_lake, monkeypatch
):
    """A schema change commits every captured event first, inside its SQLite transaction; its read found
    nothing, so it was recorded in that transaction, and the change then failed and rolled it back. The
    lake had claimed the read all the same: a restarted process on a clock stepped back must still date a
    change after it (before: after the sync before it only)."""
    _read_ahead(monkeypatch)
    with htap_lake() as lake:
        _setup(lake, "a").close()
        synced = lake.sync_now().synced_through
        time.sleep(0.003)
        with faults.armed("schema.after_lake_prepare", "eio"), pytest.raises(OSError):
            lake.add_column("a", "extra", "TEXT")  # its read is claimed, its record rolled back
        claimed = lake.sync_status().synced_through
        assert claimed is not None and claimed > synced
        assert _names(lake, "a", claimed) == ["old"]
    _final_after_the_clock_steps_back(htap_lake, monkeypatch, "a", synced, claimed)


def test_a_read_carried_by_one_table_alone_survives_its_flush_and_compaction(htap_lake):
    """The last instant answered is known only from the events of another table that carried its read;
    that table's tail is flushed into Delta and compacted (its feed packed and rewritten) before the lake
    closes, and a restart still dates the transaction open across the read after it."""
    with htap_lake() as lake:
        app = _setup(lake, "a", "b", "c")
        lake.execute("UPDATE c SET name = 'before' WHERE id = 1")
        app.execute("BEGIN")
        app.execute("UPDATE a SET name = 'new' WHERE id = 1")
        app.execute("UPDATE b SET name = 'new' WHERE id = 1")
        time.sleep(0.003)
        through = lake.sync_now().synced_through  # commits c's change alone, carrying its read
        lake.flush()
        lake.compact(vacuum_retention=0)
        assert lake.sync_engine.changelogs["c"].tail_segments == 0
    app.execute("COMMIT")
    with htap_lake() as lake:
        lake.sync_now()
        assert {t: _names(lake, t, through) for t in ("a", "b", "c")} == {"a": ["old"], "b": ["old"], "c": ["before"]}
        assert {_versions(lake, t)[-1] for t in ("a", "b")} == {("new", through + ONE_MICRO)}
    app.close()
