"""Queries while other threads and processes sync, flush and compact: each result is one synced state, fresh enough.

SQLite is the oracle: the writer logs the table's rows before each sync (the
state that sync commits) and when each sync returned. A query must return
exactly one of those states (never a mix of two), at least the newest one
whose sync returned before the query started (read-only lakes in another
process: ``refresh_interval`` before it), and at most the newest one whose
sync had begun when the query ended.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rhei_lake
from tests.support.oracle import oltp_oracle, sqlite_state
from tests.support.sync_child import TABLE_SQL, StateLog, random_changes, window

ROOT = Path(__file__).resolve().parents[2]

QUERIES = {
    "t": "SELECT * FROM t",
    "open versions": "SELECT id, v, n FROM t_history WHERE _rhei_valid_to IS NULL",
    "last events": (
        "SELECT id, v, n FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY _rhei_seq DESC) AS r "
        "FROM t_changes) WHERE r = 1 AND _rhei_op <> 'D'"
    ),
}


def _bits(rows: list[tuple]) -> list[tuple]:
    return sorted((tuple(struct.pack("<d", v) if isinstance(v, float) else v for v in row) for row in rows), key=repr)


def _rows(table) -> list[tuple]:
    return _bits([tuple(r.values()) for r in table.to_pylist()])


def _check(result: list[tuple], states: dict[int, list[tuple]], first: int, last: int, what: str) -> int:
    """The sync number whose state ``result`` is, within [first, last]; AssertionError otherwise."""
    for number in range(last, first - 1, -1):
        if number in states and _bits(states[number]) == result:
            return number
    seen = [n for n, rows in states.items() if _bits(rows) == result]
    raise AssertionError(f"{what}: result is state {seen or 'none'}, expected one of {first}..{last}")


def test_threads_querying_while_this_lake_syncs_flushes_and_compacts(tmp_path):
    """The syncing lake's own queries, from many threads: every sync is visible once sync_now() returned."""
    rng = random.Random(5)
    states: dict[int, list[tuple]] = {}
    done: list[int] = [0]  # the newest sync that returned
    began: list[int] = [0]  # the newest sync that began
    errors: list[str] = []
    seen = [0]
    with rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake"), tail_flush_segments=4
    ) as lake:
        lake.execute(TABLE_SQL)
        lake.register_table("t")
        states[0] = []
        stop = threading.Event()

        def reader(name: str, sql: str) -> None:
            while not stop.is_set() and not errors:
                first = done[0]
                try:
                    result = _rows(lake.query(sql, hint="olap"))
                    number = _check(result, states, first, began[0], name)
                    seen[0] = max(seen[0], number)
                except Exception as exc:  # noqa: BLE001 - any failure is the test's
                    errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=reader, args=item) for item in QUERIES.items() for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 6.0
            number = 0
            while time.monotonic() < deadline and not errors:
                number += 1
                lake.execute_batch(random_changes(oltp_oracle(lake), rng))
                states[number] = sqlite_state(oltp_oracle(lake), "t")
                began[0] = number
                lake.sync_now()
                done[0] = number
                if number % 5 == 0:
                    lake.flush()
                if number % 9 == 0:
                    lake.compact(vacuum_retention=0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert not errors, errors[:3]
    assert number > 10 and seen[0] > number // 2


def _child(
    tmp_path: Path, storage: str, options: dict[str, str], seconds: float, seed: int, retention: str | None = None
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(options)
    env["PYTHONPATH"] = str(ROOT)
    args = [
        sys.executable,
        "-m",
        "tests.support.sync_child",
        str(tmp_path / "app.db"),
        storage,
        str(tmp_path / "states.log"),
        str(seconds),
        str(seed),
        *([retention] if retention is not None else []),
    ]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _follow(durable_storage, tmp_path: Path, *, refresh_interval: float | None, retention: str | None = None) -> None:
    url, options = durable_storage
    log = StateLog(tmp_path / "states.log")
    child = _child(tmp_path, url, options, seconds=8.0, seed=11, retention=retention)
    # Expired events leave the change feed: its last events are no state of the table any more.
    queries = QUERIES if retention is None else {k: v for k, v in QUERIES.items() if k != "last events"}
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        with rhei_lake.open(storage=url, storage_options=options, refresh_interval=refresh_interval) as lake:
            interval = lake._followed.interval
            errors: list[str] = []
            checked = [0]
            newest = [0]

            def reader(name: str, sql: str) -> None:
                while child.poll() is None and not errors:
                    started = time.time()
                    try:
                        result = _rows(lake.query(sql))
                        states, _done = log.read()
                        span = window(log, started, interval, max(states))
                        number = _check(result, states, span.first, span.last, name)
                        newest[0] = max(newest[0], number)
                        checked[0] += 1
                    except Exception as exc:  # noqa: BLE001 - any failure is the test's
                        errors.append(f"{type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=reader, args=item) for item in queries.items() for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors, errors[:3]
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err[-3000:]
            synced = int(out.split()[-1])
            # refresh() looks at once: the last state, whatever the interval.
            lake.refresh()
            states, _done = log.read()
            assert _rows(lake.query(QUERIES["t"])) == _bits(states[synced])
            assert checked[0] > 20 and newest[0] > synced // 2, (checked[0], newest[0], synced)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_read_only_lake_follows_another_process_that_syncs_flushes_and_compacts(durable_storage, tmp_path):
    """Local default: a look before every query, so a sync is visible once it returned; S3: within 0.5 s."""
    _follow(durable_storage, tmp_path, refresh_interval=None)


def test_a_longer_refresh_interval_still_bounds_staleness(tmp_path):
    _follow((str(tmp_path / "lake"), {}), tmp_path, refresh_interval=0.3)


def test_staleness_stays_bounded_while_the_other_process_expires_what_it_compacts(tmp_path):
    """Compactions with changelog_retention=0 fold events the reader has not seen and expire them from the feed."""
    _follow((str(tmp_path / "lake"), {}), tmp_path, refresh_interval=0.3, retention="0")


def test_nothing_is_looked_at_within_the_interval_and_refresh_looks_now(tmp_path):
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=url) as writer:
        writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        writer.register_table("t")
        with rhei_lake.open(storage=url, refresh_interval=3600) as reader:
            assert reader.query("SELECT count(*) AS n FROM t").column(0)[0].as_py() == 0
            writer.execute("INSERT INTO t VALUES (1)")
            writer.sync_now()
            assert reader.query("SELECT count(*) AS n FROM t").column(0)[0].as_py() == 0  # not looked at yet
            reader.refresh()
            assert reader.query("SELECT count(*) AS n FROM t").column(0)[0].as_py() == 1


@pytest.mark.parametrize("interval", [-1, "soon", 7200])
def test_refresh_interval_is_validated(interval, tmp_path):
    with pytest.raises(rhei_lake.ConfigError, match="refresh_interval"):
        rhei_lake.open(storage=str(tmp_path / "lake"), refresh_interval=interval)


def test_a_table_registered_after_the_reader_opened_is_found_when_a_query_names_it(tmp_path):
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=url) as writer:
        writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        writer.register_table("t")
        with rhei_lake.open(storage=url) as reader:
            assert reader.tables() == ["t"]
            writer.execute("CREATE TABLE later (id INTEGER PRIMARY KEY, v TEXT)")
            writer.execute("INSERT INTO later VALUES (1, 'x')")
            writer.register_table("later")
            assert reader.query("SELECT v FROM later").to_pylist() == [{"v": "x"}]
            assert reader.tables() == ["later", "t"]
            with pytest.raises(rhei_lake.QueryError, match="not found"):
                reader.query("SELECT * FROM nowhere")


@pytest.mark.parametrize("engine", ["datafusion", "duckdb"])
def test_a_column_added_by_another_process_is_found_when_a_query_names_it(tmp_path, engine):
    """A schema change with no rows after it reaches no tail segment: the reader looks again when a query needs it."""
    if engine == "duckdb":
        pytest.importorskip("duckdb")
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=url) as writer:
        writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        writer.execute("INSERT INTO t VALUES (1, 'a')")
        writer.register_table("t")
        with rhei_lake.open(storage=url, refresh_interval=0.3, engine=engine) as reader:
            assert reader.query("SELECT * FROM t").num_rows == 1
            time.sleep(0.35)
            reader.query("SELECT * FROM t")  # a look that finds nothing new: the table itself is not read
            writer.add_column("t", "n", "INTEGER")
            writer.sync_now()
            time.sleep(0.35)
            assert reader.query("SELECT id, n FROM t").to_pylist() == [{"id": 1, "n": None}]
            writer.execute("UPDATE t SET n = 5")
            writer.sync_now()
            time.sleep(0.35)
            assert reader.query("SELECT * FROM t").to_pylist() == [{"id": 1, "v": "a", "n": 5}]
