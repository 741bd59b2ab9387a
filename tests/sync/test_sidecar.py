"""Sidecar mode end to end: ties on the cursor boundary, restarts in fresh processes, reconciliation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

import rhei_lake
from tests.support.sidecar_source import START, items_table
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _insert(source, ids, when, name="n"):
    source.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL)",
        [(i, f"{name}{i}", i * 0.5, i, source.stamp(when)) for i in ids],
    )


def _lake_items(lake) -> dict[int, tuple]:
    rows = lake.query("SELECT id, name, price, qty, updated_at, deleted_at FROM items").to_pylist()
    return {r["id"]: tuple(r.values()) for r in rows}


def _inserts_per_key(lake) -> dict[int, int]:
    rows = lake.query("SELECT id, count(*) AS n FROM items_changes WHERE _rhei_op = 'I' GROUP BY id").to_pylist()
    return {r["id"]: r["n"] for r in rows}


def test_ties_on_the_cursor_boundary_are_neither_lost_nor_duplicated(source_db, durable_storage):
    """Many rows share one updated_at across batch boundaries, and more arrive at that instant later."""
    url, options = durable_storage
    tie = START + timedelta(seconds=5)
    _insert(source_db, range(1, 100, 2), tie)  # 50 rows at one instant, read 7 per batch
    _insert(source_db, [200], tie - timedelta(seconds=1))
    with rhei_lake.open(
        source=source_db.url,
        storage=url,
        storage_options=options,
        tables=[items_table()],
        batch_size=7,
        hard_delete_interval=0,
    ) as lake:
        assert lake.sync_now().events == 51
        # Same instant again: keys above the cursor's key are found by the poll, keys below it
        # (already passed by the cursor) by the reconciliation that follows it.
        _insert(source_db, [*range(2, 101, 2), 101, 150], tie)
        report = lake.sync_now()
        assert report.events == 52
        assert _lake_items(lake) == source_db.live_items()
        assert set(_inserts_per_key(lake).values()) == {1}
        assert lake.sync_now().events == 0
        seqs = lake.query("SELECT _rhei_seq FROM items_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs)) == 103


def test_ties_without_reconciliation(source_db, tmp_path):
    """With the key scan off, rows at the boundary instant with larger keys are still polled exactly once."""
    tie = START + timedelta(seconds=5)
    _insert(source_db, range(1, 30), tie)
    table = items_table(hard_deletes=False)
    with rhei_lake.open(source=source_db.url, storage=str(tmp_path / "lake"), tables=[table], batch_size=4) as lake:
        lake.sync_now()
        _insert(source_db, range(30, 45), tie)
        lake.sync_now()
        assert _lake_items(lake) == source_db.live_items()
        assert set(_inserts_per_key(lake).values()) == {1}


def _child(source_url: str, storage: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.sidecar_child", source_url, storage, "100"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_restart_in_a_fresh_process_loses_and_duplicates_nothing(source_db, durable_storage, request):
    """SIGKILL a sidecar mid initial sync; a new process resumes from the storage URL alone."""
    url, options = durable_storage
    env = {**os.environ, **options, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # 3000 rows in 30 batches, in groups of 7 sharing an updated_at (ties across batch boundaries).
    source_db.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL)",
        [(i, f"r{i}", i / 7, i, source_db.stamp(START + timedelta(milliseconds=i // 7))) for i in range(1, 3001)],
    )
    first = _child(source_db.url, url, env)
    done = 0
    for line in first.stdout:
        if line.startswith("progress"):
            done = int(line.split()[1])
            if done >= 1200:
                first.send_signal(signal.SIGKILL)
                break
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, first.stderr.read()
    assert 1200 <= done < 3000
    # The source moves on while no sidecar runs.
    later = START + timedelta(hours=1)
    source_db.execute("UPDATE items SET name = 'changed', updated_at = ? WHERE id <= 10", (source_db.stamp(later),))
    source_db.execute("DELETE FROM items WHERE id BETWEEN 11 AND 20")
    source_db.execute(
        "UPDATE items SET deleted_at = ?, updated_at = ? WHERE id = 30",  # synced before the kill
        (source_db.stamp(later), source_db.stamp(later)),
    )
    _insert(source_db, range(5000, 5010), later)

    second = _child(source_db.url, url, env)
    out, err = second.communicate(timeout=240)
    assert second.returncode == 0, err
    assert "done" in out

    with rhei_lake.open(storage=url, storage_options=options) as lake:  # read-only, from the store alone
        assert _lake_items(lake) == source_db.live_items()
        assert set(_inserts_per_key(lake).values()) == {1}, "a row was committed twice"
        feed = lake.query("SELECT _rhei_seq, _rhei_op FROM items_changes").to_pylist()
        seqs = [r["_rhei_seq"] for r in feed]
        assert len(seqs) == len(set(seqs))
        ops = [r["_rhei_op"] for r in feed]
        assert ops.count("I") == 3010 and ops.count("U") == 10 and ops.count("D") == 11
        deleted = lake.query("SELECT id, name FROM items_changes WHERE _rhei_op = 'D' AND id <= 20 ORDER BY id")
        assert deleted.to_pylist() == [{"id": i, "name": f"r{i}"} for i in range(11, 21)], "deletes keep last values"


def test_background_sync_loop_and_status(source_db, tmp_path):
    """The building blocks of a long-running follower: open(config) with sync_interval, sync_status()."""

    _insert(source_db, range(1, 11), START)
    with rhei_lake.open(
        source=source_db.url, storage=str(tmp_path / "lake"), tables=[items_table()], sync_interval=0.05
    ) as lake:
        wait_for(lambda: len(_lake_items(lake)) >= 10, what="the loop to mirror the first 10 rows")
        _insert(source_db, range(11, 16), START + timedelta(seconds=1))
        wait_for(lambda: len(_lake_items(lake)) >= 15, what="the loop to mirror the 5 rows inserted while it runs")
        assert _lake_items(lake) == source_db.live_items()
        status = lake.sync_status()
        assert status.loop_running and status.tables["items"].synced_seq >= 15
        with pytest.raises(rhei_lake.ReadOnlySourceError):
            lake.add_column("items", "x", "TEXT")
