"""sync_status(): per-table and overall lag, watermarks, commits, errors and unfolded size."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

import rhei_lake
from rhei_lake.errors import TypeMismatchError


def test_status_follows_captured_and_synced_events(storage, tmp_path):
    url, options = storage
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options) as lake:
        lake.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
        lake.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)")
        lake.execute("INSERT INTO a VALUES (100, 'existing')")
        lake.register_table("a")
        lake.register_table("b")
        lake.sync_now()
        lake.execute_batch([("INSERT INTO a VALUES (?, 'x')", (i,)) for i in range(5)])
        lake.execute("INSERT INTO b VALUES (1, 'y')")
        time.sleep(0.05)  # the oldest unsynced event ages: lag_seconds below

        status = lake.sync_status()
        assert status.tables["a"].lag_events == 5 and status.tables["b"].lag_events == 1
        assert status.lag_events == 6
        assert 0.04 <= status.tables["a"].lag_seconds < 60
        assert status.lag_seconds == max(t.lag_seconds for t in status.tables.values())
        assert not status.loop_running and status.loop.state == "stopped"
        assert status.tables["b"].last_commit_at is None and status.tables["b"].events_synced == 0

        started = datetime.now(UTC)
        report = lake.sync_now()
        status = lake.sync_status()
        a = status.tables["a"]
        assert a.lag_events == 0 and a.lag_seconds == 0.0
        max_seq = lake.query("SELECT max(_rhei_seq) AS s FROM a_changes").column(0)[0].as_py()
        assert a.synced_seq == max_seq == report.tables["a"].watermark
        assert status.synced_seq >= max(a.synced_seq, status.tables["b"].synced_seq)
        assert a.last_commit_at >= started and a.last_commit_seconds > 0
        assert a.events_synced == 5  # by sync cycles (the registration snapshot is not one)
        assert a.unfolded_events == 6 and a.folded_seq is None
        assert a.changelog_rows + a.tail_rows == 6
        assert status.last_sync_at >= started and status.last_sync_seconds > 0
        assert status.syncs == 2 and not status.failing and status.last_error is None

        lake.flush()
        a = lake.sync_status().tables["a"]
        assert a.tail_rows == 0 and a.tail_segments == 0 and a.changelog_rows == 6 and a.unfolded_events == 6


def test_status_names_the_table_a_terminal_error_belongs_to(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE n (id INTEGER PRIMARY KEY, qty INTEGER)")
        lake.register_table("n")
        lake.execute("INSERT INTO n VALUES (1, 'lots')")
        with pytest.raises(TypeMismatchError):
            lake.sync_now()
        status = lake.sync_status()
        assert status.failing and status.last_error.kind == "TypeMismatchError" and not status.last_error.transient
        assert status.tables["n"].last_error == status.last_error
        assert status.tables["n"].lag_events == 1


def test_status_of_a_lake_opened_from_its_url(durable_storage, tmp_path):
    url, options = durable_storage
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute_batch([("INSERT INTO t VALUES (?, 'v')", (i,)) for i in range(3)])
        watermark = lake.sync_now().tables["t"].watermark
    with rhei_lake.open(storage=url, storage_options=options) as reader:
        status = reader.sync_status()
        assert status.tables["t"].synced_seq == watermark == status.synced_seq
        assert status.lag_events is None and status.tables["t"].lag_events is None
        assert status.tables["t"].unfolded_events == 3
        assert status.syncs == 0 and status.loop.state == "stopped"


@pytest.mark.parametrize("mode", ["temporal", "mirror"])
def test_status_reports_the_folded_watermark_in_either_mode(tmp_path, mode):
    url = str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, sync_mode=mode) as lake:
        lake.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("m")
        lake.execute_batch([("INSERT INTO m VALUES (?, 'x')", (i,)) for i in range(4)])
        lake.sync_now()
        assert lake.sync_status().tables["m"].folded_seq is None  # nothing folded: no derived table yet
        lake.compact()
        lake.execute("UPDATE m SET v = 'y' WHERE id = 1")
        lake.sync_now()
        m = lake.sync_status().tables["m"]
        assert m.folded_seq == m.synced_seq - 1 and m.unfolded_events == 1
    with rhei_lake.open(storage=url) as reader:
        m = reader.sync_status().tables["m"]
        assert m.folded_seq == m.synced_seq - 1 and m.unfolded_events == 1
