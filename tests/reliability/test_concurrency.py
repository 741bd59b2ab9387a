"""Concurrency: two service processes on one lake, a writer that stalls past its lease, readers during writes.

Only one process syncs into a lake at a time: the writer lease refuses the
second clearly (or makes it wait), a process restarted after a crash takes the
lease over at once, and one that stalled past its lease stops with a terminal
LeaseLostError when it wakes. None of this is needed for correctness (every
commit is conditional), and each test also checks that every row written by
either process landed exactly once.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rhei_lake
from rhei_lake.errors import LeaseHeldError
from tests.reliability import summary
from tests.support.oracle import assert_same_state
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Service:
    """A ``serve_child`` process and the lines it prints."""

    def __init__(
        self,
        db: Path,
        url: str,
        options: dict[str, str],
        *,
        ttl: float = 30.0,
        wait: float = 0.0,
        seconds: float = 60.0,
        name: str = "a",
    ) -> None:
        self.stop_file = db.parent / f"{name}.stop"
        env = {**os.environ, **options, "PYTHONPATH": str(ROOT)}
        args = [
            sys.executable,
            "-m",
            "tests.support.serve_child",
            str(db),
            url,
            str(self.stop_file),
            str(seconds),
            str(ttl),
            str(wait),
        ]
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._buffer = b""

    def _read(self, timeout: float) -> None:
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        if readable:
            chunk = os.read(self.process.stdout.fileno(), 65536)
            self._buffer += chunk
            *done, self._buffer = self._buffer.split(b"\n")
            self.lines.extend(line.decode() for line in done)
            if not chunk:
                time.sleep(timeout)

    def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            if (
                self.process.poll() is not None
                and not self._buffer
                and not select.select([self.process.stdout], [], [], 0)[0]
            ):
                break
            self._read(0.1)
        raise AssertionError(f"no {prefix!r} line; got {self.lines[-5:]}, stderr: {self.stderr()}")

    def saw(self, prefix: str, within: float) -> bool:
        try:
            self.wait_for(prefix, within)
            return True
        except AssertionError:
            return False

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(running)"
        return self.process.stderr.read().decode(errors="replace")[-3000:]

    def stop(self, timeout: float = 60.0) -> str:
        self.stop_file.touch()
        last = self.wait_for("closed", timeout)
        self.process.wait(timeout)
        return last

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        self.kill()
        self.process.stdout.close()
        self.process.stderr.close()


def _verify_exactly_once(db: Path, url: str, options: dict[str, str]) -> int:
    conn = sqlite3.connect(db)
    try:
        with rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options) as lake:
            lake.sync_now()
            seqs = lake.query("SELECT _rhei_seq FROM ticks_changes").column(0).to_pylist()
            assert len(seqs) == len(set(seqs)), "an event was committed twice"
            rows = conn.execute("SELECT count(*) FROM ticks").fetchone()[0]
            assert len(seqs) == rows, f"{rows} rows written, {len(seqs)} insert events in the lake"
            assert_same_state(lake, conn, "ticks")
            pids = conn.execute("SELECT count(DISTINCT pid) FROM ticks").fetchone()[0]
            return pids
    finally:
        conn.close()


def _wait_until_stopped(pid: int) -> None:
    """Wait until every thread of ``pid`` is stopped (state ``T`` in ``/proc``)."""

    def stopped() -> bool:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except FileNotFoundError:  # a thread that just ended
                continue
            if stat.rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                return False
        return True

    wait_for(stopped, timeout=10, what=f"process {pid} to stop")


def _freeze(process: subprocess.Popen, db: Path) -> None:
    """SIGSTOP ``process`` at a moment it holds no SQLite write lock.

    A process frozen inside a write transaction blocks every writer of that
    database, lake or not; that is SQLite's business, not the lease's.
    """
    for _ in range(100):
        process.send_signal(signal.SIGSTOP)
        _wait_until_stopped(process.pid)  # kill() returns before the signal lands: probe only a stopped process
        probe = sqlite3.connect(db, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            process.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        finally:
            probe.close()
    raise AssertionError("the writer never paused outside a SQLite write transaction")


@pytest.mark.slow
def test_a_second_writer_is_refused_or_waits_and_readers_need_no_lease(durable_storage, tmp_path):
    url, options = durable_storage
    db = tmp_path / "app.db"
    first = Service(db, url, options, name="first")
    second = None
    try:
        first.wait_for("open")
        first.wait_for("status running")
        with pytest.raises(LeaseHeldError) as refused:
            rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options)
        message = str(refused.value)
        assert f"pid {first.process.pid}" in message and "expires in" in message, message
        with rhei_lake.open(storage=url, storage_options=options) as reader:  # read-only: no lease
            assert reader.query("SELECT count(*) AS n FROM ticks").column(0)[0].as_py() >= 0

        second = Service(db, url, options, wait=60, name="second")
        assert not second.saw("open", within=1.5), "the second writer did not wait for the lease"
        assert first.stop() == "closed"
        second.wait_for("open", timeout=30)
        second.wait_for("status running")
        assert second.stop() == "closed"
        summary.count("concurrency.second_writer_refused")
    finally:
        for service in (first, second):
            if service is not None:
                service.close()
    assert _verify_exactly_once(db, url, options) == 2


@pytest.mark.slow
def test_a_writer_restarted_after_a_crash_takes_the_lease_at_once(durable_storage, tmp_path):
    url, options = durable_storage
    db = tmp_path / "app.db"
    first = Service(db, url, options, name="first")
    try:
        first.wait_for("status running")
        time.sleep(0.3)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        summary.count("faults.sigkill_lease_holder")
        started = time.monotonic()
        with rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options) as lake:
            assert time.monotonic() - started < 20, "waited for the dead process's lease to expire"
            lake.sync_now()
    finally:
        first.close()
    assert _verify_exactly_once(db, url, options) == 1


@pytest.mark.slow
def test_a_writer_that_stalls_past_its_lease_stops_with_a_terminal_error(durable_storage, tmp_path):
    url, options = durable_storage
    db = tmp_path / "app.db"
    first = Service(db, url, options, ttl=1.0, name="first")
    second = None
    try:
        first.wait_for("status running")
        _freeze(first.process, db)  # a stalled process: a long GC pause, a frozen VM
        summary.count("faults.stalled_lease_holder")
        second = Service(db, url, options, ttl=1.0, wait=30, name="second")
        second.wait_for("open", timeout=40)
        second.wait_for("status running")
        time.sleep(0.5)
        first.process.send_signal(signal.SIGCONT)
        line = first.wait_for("status failed LeaseLostError", timeout=30)
        assert line
        assert first.stop().startswith("closed")  # its final sync refuses to commit, it still closes
        assert second.stop() == "closed"
    finally:
        if first.process.poll() is None:
            first.process.send_signal(signal.SIGCONT)
        for service in (first, second):
            if service is not None:
                service.close()
    assert _verify_exactly_once(db, url, options) == 2


@pytest.mark.slow
def test_readers_see_whole_commits_only(durable_storage, tmp_path):
    url, options = durable_storage
    batch_rows = 40
    env = {**os.environ, **options, "PYTHONPATH": str(ROOT)}
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    readers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.reader_child", url, str(rendezvous), str(batch_rows)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    problems: list[str] = []
    try:
        with rhei_lake.open(
            oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, tail_flush_segments=4
        ) as lake:
            lake.execute("CREATE TABLE feed (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, v TEXT)")
            lake.register_table("feed")
            wait_for(
                lambda: (
                    len(list(rendezvous.glob("ready-*"))) == len(readers) or any(r.poll() is not None for r in readers)
                ),
                timeout=120,
                what="the readers to open the lake",
            )
            stop = threading.Event()

            def read_in_process() -> None:  # the writer's own lake, from another thread
                while not stop.is_set():
                    rows = lake.query("SELECT batch, count(*) AS n FROM feed GROUP BY batch").to_pylist()
                    torn = [r for r in rows if r["n"] != batch_rows]
                    if torn:
                        problems.append(f"in-process reader saw {torn}")
                        return

            thread = threading.Thread(target=read_in_process)
            thread.start()
            started = time.monotonic()
            batch = 0
            try:
                # 5 s of syncs, and at least 8 of them however loaded the machine (at most a minute)
                while (time.monotonic() < started + 5.0 or batch < 8) and time.monotonic() < started + 60:
                    lake.execute_batch(
                        [("INSERT INTO feed (batch, v) VALUES (?, ?)", (batch, f"r{i}")) for i in range(batch_rows)]
                    )
                    lake.sync_now()
                    batch += 1
            finally:
                stop.set()
                thread.join()
    finally:
        (rendezvous / "stop").touch()
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        line = out.decode().strip().splitlines()[-1] if out.strip() else f"no output: {err.decode()[-2000:]}"
        if not line.startswith("ok"):
            problems.append(line)
        else:
            _, queries, newest = line.split()
            assert int(queries) > 1 and int(newest) >= 0, line
            summary.count("concurrency.reader_queries", int(queries))
    assert not problems, problems
    assert batch > 5
