"""``as_of`` queries on the durable tiers, once the changes live in Delta tables."""

from __future__ import annotations

import base64
import gc
import os
import pickle
import random
import sqlite3
import subprocess
import sys
import threading
import weakref
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

import rhei_lake
from rhei_lake.timeutil import from_micros, now_micros, to_micros
from tests.support.history_model import HistoryModel
from tests.support.oracle import lake_state, sqlite_state
from tests.support.workload import Workload, create_tables


def test_as_of_reads_delta_tables_after_the_query_returns_its_plan(durable_storage, engine, tmp_path):
    url, options = durable_storage
    with rhei_lake.open(
        oltp_path=str(tmp_path / "a.db"),
        storage=url,
        storage_options=options,
        tail_flush_segments=1,
        engine=engine,
    ) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 1.0)")
        lake.sync_now()
        lake.flush()
        time.sleep(0.01)
        before = from_micros(now_micros())
        time.sleep(0.01)
        lake.execute("UPDATE t SET v = 2")
        lake.sync_now()
        lake.flush()
        assert lake.query("SELECT v FROM t", as_of=before).to_pylist() == [{"v": 1.0}]
        df = lake.dataframe("SELECT v FROM t", as_of=before)
        gc.collect()  # the session that planned it must outlive nothing but the DataFrame
        assert df.to_arrow_table().to_pylist() == [{"v": 1.0}]
        assert lake.query("SELECT v FROM t").to_pylist() == [{"v": 2.0}]


KEYS = {"items": ("id",), "pairs": ("region", "code")}
FAR = datetime(2200, 1, 1, tzinfo=UTC)  # every synced event is before it: the lake's latest state


def _state_as_of(lake: rhei_lake.Lake, table: str, instant) -> list[tuple]:
    return lake_state(lake, table, as_of=instant if isinstance(instant, datetime) else from_micros(instant))


@pytest.mark.parametrize("seed", [5, 8])
def test_kept_as_of_sessions_follow_syncs_compactions_and_vacuums(tmp_path, seed):
    """as_of queries repeated at the same instants, on the syncing lake and on a reader, between syncs,
    flushes and compactions (vacuuming at once or not): each answer is SQLite's state at the instant,
    never one a kept session registered before the lake moved."""
    db = tmp_path / "app.db"
    conn = create_tables(db)
    storage = str(tmp_path / "lake")
    lake = rhei_lake.open(oltp_path=str(db), storage=storage, tail_flush_segments=2, changelog_retention="0")
    try:
        for table in KEYS:
            lake.register_table(table)
        reader = rhei_lake.open(storage=storage, refresh_interval=3600)
        model = HistoryModel.watching(conn, KEYS)
        workload = Workload(seed, key_space=16)
        rng = random.Random(seed)
        synced: list[tuple[int, dict]] = []  # the instants every event before which the lake holds
        model.record_instant()
        latest = model.instants[-1][1]
        for step in range(24):
            for _ in range(rng.randint(1, 5)):
                lake.execute(*workload.statement())
                model.apply()
            model.record_instant()
            roll = rng.random()
            if roll < 0.7:
                lake.sync_now()
                synced = list(model.instants)
                latest = synced[-1][1]
            if roll < 0.35:
                lake.compact(vacuum_retention=rng.choice(["0", None]))
            reader.refresh()
            for queried in (lake, reader):
                for table in KEYS:
                    assert _state_as_of(queried, table, FAR) == latest[table], f"step {step}: {table} now"
                for instant, states in rng.sample(synced, min(3, len(synced))) + synced[-1:]:
                    for table in KEYS:
                        assert _state_as_of(queried, table, instant) == states[table], f"step {step}: {table}"
        reader.close()
    finally:
        lake.close()


_READER_PROCESS = """
import base64
import pickle
import sys
import rhei_lake
from rhei_lake.timeutil import from_micros
from tests.support.oracle import lake_state
with rhei_lake.open(storage=sys.argv[1], refresh_interval=3600) as reader:
    for line in sys.stdin:
        refresh, questions = pickle.loads(base64.b64decode(line))
        if refresh:
            reader.refresh()
        answers = []
        for table, instant in questions:
            first = lake_state(reader, table, as_of=from_micros(instant))
            answers.append((first, lake_state(reader, table, as_of=from_micros(instant))))  # the kept session
        print(base64.b64encode(pickle.dumps(answers)).decode(), flush=True)
"""


def test_a_reader_in_another_process_keeps_as_of_sessions_true_between_syncs_compactions_and_vacuums(tmp_path):
    """A read-only reader in another process answers as_of queries (each asked twice: the second from
    its kept session) at the lake's recorded instants while this process syncs, flushes and compacts
    with and without vacuum, sometimes refreshed first, sometimes not (its kept sessions then name
    files a vacuum here may have removed): every answer is SQLite's state at that instant."""
    db = tmp_path / "app.db"
    conn = create_tables(db)
    storage = str(tmp_path / "lake")
    lake = rhei_lake.open(oltp_path=str(db), storage=storage, tail_flush_segments=2, changelog_retention="0")
    root = str(Path(__file__).resolve().parents[2])
    child = None
    try:
        for table in KEYS:
            lake.register_table(table)
        model = HistoryModel.watching(conn, KEYS)
        workload = Workload(11, key_space=16)
        rng = random.Random(11)
        model.record_instant()
        lake.sync_now()
        synced = list(model.instants)
        seen = synced  # what the reader holds every event before, as of its last refresh
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        child = subprocess.Popen(
            [sys.executable, "-c", _READER_PROCESS, storage],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        assert child.stdin is not None and child.stdout is not None
        for step in range(16):
            for _ in range(rng.randint(1, 5)):
                lake.execute(*workload.statement())
                model.apply()
            model.record_instant()
            if rng.random() < 0.7:
                lake.sync_now()
                synced = list(model.instants)
            if rng.random() < 0.5:
                lake.compact(vacuum_retention=rng.choice(["0", None]))
            refresh = rng.random() < 0.6
            if refresh:
                # The latest state (FAR: it moves with every sync) and instants every event before which is synced.
                seen = synced
                asked = [(to_micros(FAR), synced[-1][1])] + rng.sample(synced, min(3, len(synced))) + synced[-1:]
            else:
                # Instants it saw, the last asked first (its kept session); not the latest state: looking
                # again for a vacuumed file may bring it forward.
                asked = seen[-1:] + rng.sample(seen, min(3, len(seen)))
            questions = [(table, instant) for instant, _ in asked for table in KEYS]
            child.stdin.write(base64.b64encode(pickle.dumps((refresh, questions))).decode() + "\n")
            child.stdin.flush()
            line = child.stdout.readline()
            assert line, f"step {step}: the reader process died (exit {child.wait(timeout=60)})"
            answers = pickle.loads(base64.b64decode(line))
            expected = [states[table] for _, states in asked for table in KEYS]
            for (table, instant), (first, again), want in zip(questions, answers, expected, strict=True):
                assert first == want, f"step {step}: {table} as of {instant}"
                assert again == want, f"step {step}: {table} as of {instant}, from the kept session"
        child.stdin.close()
        assert child.wait(timeout=120) == 0
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        lake.close()


_OTHER_PROCESS = """
import sys
import threading
import weakref
import rhei_lake
with rhei_lake.open(oltp_path=sys.argv[1], storage=sys.argv[2]) as lake:
    lake.execute("UPDATE t SET v = v + 1 WHERE id % 3 = 0")
    lake.execute("DELETE FROM t WHERE id % 7 = 0")
    lake.sync_now()
    lake.compact(vacuum_retention="0")
"""


def test_a_file_vacuumed_by_another_process_between_as_of_queries_is_looked_for_again(tmp_path):
    """A reader's kept as_of session names the history's files; another process compacts and vacuums
    them away: the next as_of query at the same instant still answers every row (it looks again)."""
    db = tmp_path / "app.db"
    storage = str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=str(db), storage=storage) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL)")
        lake.register_table("t")
        lake.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
            "INSERT INTO t SELECT i, i * 0.1 FROM n"
        )
        lake.sync_now()
        lake.compact(vacuum_retention="0")
    conn = sqlite3.connect(db, isolation_level=None)
    before = sqlite_state(conn, "t")
    time.sleep(0.01)
    instant = from_micros(now_micros())
    time.sleep(0.01)
    with rhei_lake.open(storage=storage, refresh_interval=3600) as reader:
        assert lake_state(reader, "t", as_of=instant) == before
        assert lake_state(reader, "t", as_of=instant) == before  # from the kept session
        files = set(reader.storage.table_store("t", "history")._table().file_uris())
        subprocess.run([sys.executable, "-c", _OTHER_PROCESS, str(db), storage], check=True, timeout=120, cwd=tmp_path)
        assert not any(os.path.exists(f.removeprefix("file://")) for f in files), "the old files were not vacuumed"
        assert lake_state(reader, "t", as_of=instant) == before
        assert lake_state(reader, "t", as_of=FAR) == sqlite_state(conn, "t")
        assert lake_state(reader, "t", as_of=instant) == before


def test_keeping_an_as_of_session_drops_those_of_an_older_state_of_its_tables():
    from rhei_lake.query.engine import _AsOfSessions

    sessions = _AsOfSessions()
    t_then, t_now, u = ("t", frozenset({"current"}), 1), ("t", frozenset({"history"}), 2), ("u", frozenset(), 1)
    sessions.put((10, ("t", "u"), t_then), "a")
    sessions.put((11, ("t", "u"), u), "b")
    sessions.put((12, ("t", "u"), t_now, u), "c")
    assert sessions.get((10, ("t", "u"), t_then)) is None, "t moved on: its older session is gone"
    assert sessions.get((11, ("t", "u"), u)) == "b"
    sessions.put((13, ("t", "u", "v"), u), "d")
    assert sessions.get((11, ("t", "u"), u)) is None, "another table set: names could resolve differently"
    for instant in range(20, 20 + 2 * _AsOfSessions.SIZE):
        sessions.put((instant, ("t", "u", "v"), u), instant)
    assert sessions.get((20, ("t", "u", "v"), u)) is None and sessions.get((instant, ("t", "u", "v"), u)) == instant


def test_as_of_queries_from_many_threads_while_the_lake_syncs_and_compacts(tmp_path):
    """Threads repeat as_of queries (kept sessions) while a writer inserts, syncs and compacts with
    vacuum: an instant before the writes always counts exactly the rows then, and the latest state
    never fewer rows than were synced when the query started, nor more than were inserted."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (0, 'first')")
        lake.sync_now()
        time.sleep(0.01)
        then = from_micros(now_micros())
        time.sleep(0.01)
        synced = [1]
        inserted = [1]
        deadline = time.monotonic() + 5.0
        errors: list[str] = []
        done = [0]

        def writer() -> None:
            while time.monotonic() < deadline:
                lake.execute("INSERT INTO t VALUES (?, 'x')", (inserted[0],))
                inserted[0] += 1
                lake.sync_now()
                synced[0] = inserted[0]
                if inserted[0] % 7 == 0:
                    lake.compact(vacuum_retention="0")

        def reader() -> None:
            while time.monotonic() < deadline and not errors:
                low = synced[0]
                n = lake.query("SELECT count(*) AS n FROM t", as_of=FAR).column(0)[0].as_py()
                if not low <= n <= inserted[0]:
                    errors.append(f"{n} rows as of now, {low} synced before the query, {inserted[0]} inserted")
                n = lake.query("SELECT count(*) AS n FROM t WHERE v = 'first'", as_of=then).column(0)[0].as_py()
                if n != 1:
                    errors.append(f"{n} rows as of the first sync")
                done[0] += 1

        threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[:3]
        assert done[0] > 20


def test_as_of_sessions_and_their_datasets_stay_bounded_across_many_table_versions(tmp_path, monkeypatch):
    """Each step syncs and compacts (a new version of every table) and queries as of a new instant:
    at most SIZE sessions are kept, and every session dropped, with the history datasets of the
    versions it was built from, is freed (the store keeps only its latest version's)."""
    from rhei_lake.query.engine import _AsOfSessions
    from rhei_lake.storage.delta import DeltaTableStore

    datasets: list[tuple[int, weakref.ref]] = []
    scanned = DeltaTableStore._scanned_dataset

    def recorded(self, dt):
        dataset = scanned(self, dt)
        if dataset is not None and not any(ref() is dataset for _, ref in datasets):
            datasets.append((dt.version(), weakref.ref(dataset)))
        return dataset

    monkeypatch.setattr(DeltaTableStore, "_scanned_dataset", recorded)
    sessions: list[weakref.ref] = []
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL)")
        lake.register_table("t")
        kept = lake._queries._as_of._sessions
        steps = 3 * _AsOfSessions.SIZE
        for step in range(steps):
            lake.execute("INSERT INTO t VALUES (?, ?)", (step, step * 0.5))
            lake.sync_now()
            lake.compact(vacuum_retention="0")
            instant = from_micros(now_micros())
            for sql in ("SELECT count(*) AS n FROM t", "SELECT count(*) AS n FROM t_history"):
                for _ in range(2):  # the second from the kept session
                    assert lake.query(sql, as_of=instant).column(0)[0].as_py() == step + 1
            assert lake.query("SELECT count(*) AS n FROM t", as_of=FAR).column(0)[0].as_py() == step + 1
            assert len(kept) <= _AsOfSessions.SIZE
            sessions += [weakref.ref(ctx) for ctx in kept.values()]
        gc.collect()
        alive = [ref() for ref in sessions if ref() is not None]
        assert len(alive) == len(kept) and all(ctx in kept.values() for ctx in alive), "a dropped session lives on"
        del alive
        latest = lake.storage.table_store("t", "history")._table().version()
        assert len({version for version, _ in datasets}) > steps // 2, "a dataset is built per history version"
        stale = [version for version, ref in datasets if ref() is not None and version != latest]
        assert not stale, f"datasets of history versions {stale} outlived the sessions built from them"
        lake.close()
        gc.collect()
        assert all(ref() is None for ref in sessions), "close() must drop the kept sessions"
