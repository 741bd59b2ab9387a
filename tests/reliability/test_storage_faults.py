"""Storage faults: 5xx and SlowDown, lost replies, slow responses, outages, a full disk.

S3 faults come from a proxy in front of moto (:mod:`tests.support.s3_fault_proxy`);
the full disk is a small tmpfs when this process may mount one, and ENOSPC
injected at the fault points otherwise (and always, as a second check). In
every case the engine retries what it can, reports the rest as a *transient*
error in the exception and in ``sync_status()``, never leaves a half-written
commit, and catches up exactly once when the fault clears.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time

import pytest

import rhei_lake
from rhei_lake import faults
from rhei_lake.errors import StorageUnavailableError
from tests.reliability import summary
from tests.support.oracle import assert_same_state
from tests.support.s3_fault_proxy import Rule
from tests.support.waiting import wait_for

TAIL_PUT = r"/_tail/\d+\.arrow"
COMMIT_PUT = r"/_delta_log/\d+\.json"


def _open(tmp_path, url, options, **extra) -> rhei_lake.Lake:
    lake = rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, tail_flush_segments=1000, **extra
    )
    lake.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    lake.register_table("t")
    return lake


def _insert(lake: rhei_lake.Lake, start: int, count: int, size: int = 10) -> None:
    lake.execute_batch([("INSERT INTO t VALUES (?, ?)", (i, "x" * size)) for i in range(start, start + count)])


def _assert_exact(lake: rhei_lake.Lake, tmp_path, url, options) -> None:
    """A fresh reader sees every event once and the same rows as SQLite."""
    conn = sqlite3.connect(tmp_path / "app.db")
    try:
        assert_same_state(lake, conn, "t")
        with rhei_lake.open(storage=url, storage_options=options) as reader:
            seqs = reader.query("SELECT _rhei_seq FROM t_changes").column(0).to_pylist()
            assert len(seqs) == len(set(seqs)), "an event was committed twice"
            assert len(seqs) == conn.execute("SELECT count(*) FROM t").fetchone()[0]
            assert_same_state(reader, conn, "t")
    finally:
        conn.close()


def _assert_transient_in_status(lake: rhei_lake.Lake, error: BaseException, lag: int) -> None:
    assert isinstance(error, StorageUnavailableError) and error.transient
    status = lake.sync_status()
    assert status.failing and status.last_error.kind == "StorageUnavailableError" and status.last_error.transient
    assert status.tables["t"].lag_events == lag


@pytest.mark.s3
def test_5xx_and_slowdown_are_retried_then_reported_as_transient(proxy, faulty_s3, tmp_path):
    url, options = faulty_s3
    lake = _open(tmp_path, url, options)
    try:
        _insert(lake, 0, 10)
        proxy.add(Rule("error", path=TAIL_PUT, times=2, status=503, code="SlowDown"))
        lake.sync_now()  # two refusals: the store client's own retries absorb them
        assert proxy.pending() == 0

        _insert(lake, 10, 10)
        proxy.add(Rule("error", path=TAIL_PUT, times=50, status=503, code="SlowDown"))
        with pytest.raises(StorageUnavailableError) as refused:
            lake.sync_now()
        assert "SlowDown" in str(refused.value) and "\n" not in str(refused.value)
        _assert_transient_in_status(lake, refused.value, lag=10)
        proxy.clear()
        lake.sync_now()
        assert not lake.sync_status().failing

        proxy.add(Rule("error", path=COMMIT_PUT, times=50, status=500, code="InternalError"))
        with pytest.raises(StorageUnavailableError) as failed:
            lake.flush()
        assert "500" in str(failed.value) or "InternalError" in str(failed.value)
        with rhei_lake.open(storage=url, storage_options=options) as reader:  # the table is intact meanwhile
            assert reader.query("SELECT count(*) AS n FROM t").column(0)[0].as_py() == 20
        proxy.clear()
        assert lake.flush() == 20
        _assert_exact(lake, tmp_path, url, options)
    finally:
        proxy.clear()
        lake.close()


@pytest.mark.s3
def test_a_write_whose_reply_was_lost_counts_exactly_once(proxy, faulty_s3, tmp_path):
    """delta-rs issues 2279/2609: the server stored the object, the client never heard.

    The client retries: a segment's conditional PUT then finds the segment its
    first attempt stored (the same bytes: our own commit), and a Delta commit
    finds its own log entry, which delta-rs reports as a concurrent commit with
    our app transaction (the watermark shows it is ours). Neither is a conflict,
    and nothing is committed twice.
    """
    url, options = faulty_s3
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO big VALUES (?, ?)", [(i, f"b{i}") for i in range(500)])
    conn.commit()
    conn.close()
    lake = _open(tmp_path, url, options)
    try:
        _insert(lake, 0, 5)
        proxy.add(Rule("drop_reply", path=TAIL_PUT))
        assert lake.sync_now().events == 5
        proxy.add(Rule("drop_reply", path=COMMIT_PUT))
        assert lake.flush() == 5
        proxy.add(Rule("drop_reply", path=r"/big/changes/_delta_log/0+1\.json"))  # its snapshot: one commit
        lake.register_table("big")
        lake.execute("CREATE TABLE other (id INTEGER PRIMARY KEY)")
        proxy.add(Rule("drop_reply", path=r"/other/changes/_delta_log/0+\.json"))  # the table's creation
        lake.register_table("other")
        proxy.add(Rule("drop_reply", path=r"/_rhei/leases/"))
        lake._lease.lease.renew()
        lake._lease.ensure()
        assert proxy.pending() == 0 and proxy.injected()["drop_reply"] == 5
        _insert(lake, 5, 5)
        lake.sync_now()
        lake.flush()
        _assert_exact(lake, tmp_path, url, options)
        assert lake.query("SELECT count(*) AS n FROM big_changes").column(0)[0].as_py() == 500
    finally:
        lake.close()


@pytest.mark.s3
def test_slow_responses_only_slow_the_sync(proxy, faulty_s3, tmp_path):
    url, options = faulty_s3
    lake = _open(tmp_path, url, options)
    try:
        proxy.add(Rule("delay", method="PUT", times=6, seconds=0.4))
        proxy.add(Rule("delay", method="GET", times=6, seconds=0.4))
        for round_ in range(4):
            _insert(lake, round_ * 10, 10)
            lake.sync_now()
        lake.flush()
        assert proxy.injected()["delay"] >= 6
        _assert_exact(lake, tmp_path, url, options)
    finally:
        lake.close()


@pytest.mark.s3
def test_an_outage_longer_than_the_lease_backs_off_and_catches_up(proxy, faulty_s3, tmp_path):
    url, options = faulty_s3
    lake = _open(tmp_path, url, options, lease_ttl=1.0, sync_max_backoff=0.3)
    try:
        _insert(lake, 0, 5)
        lake.start_sync(0.05)
        wait_for(lambda: lake.sync_status().tables["t"].lag_events == 0, 60, "first sync")
        proxy.down()
        _insert(lake, 5, 20)
        wait_for(lambda: lake.sync_status().failing, 60, "the outage to show")
        time.sleep(1.5)  # past the lease's TTL: nobody renewed it, nobody took it
        status = lake.sync_status()
        assert status.loop.state == "backing_off" and status.loop.last_error.transient, status.loop
        assert status.tables["t"].lag_events == 20
        proxy.up()
        wait_for(lambda: not (s := lake.sync_status()).failing and s.tables["t"].lag_events == 0, 60, "recovery")
        lake.stop_sync()
        lake.flush()
        _assert_exact(lake, tmp_path, url, options)
    finally:
        proxy.up()
        lake.close()


@pytest.mark.s3
def test_opening_a_lake_during_an_outage_is_a_transient_error(proxy, faulty_s3, tmp_path):
    url, options = faulty_s3
    proxy.down()
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError) as refused:
            rhei_lake.open(storage=url, storage_options=options)
        assert refused.value.transient and time.monotonic() - started < 60
    finally:
        proxy.up()
    with rhei_lake.open(storage=url, storage_options=options) as lake:
        assert lake.tables() == []


# -- a full disk ----------------------------------------------------------------
def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


def test_a_full_disk_is_transient_and_nothing_is_half_written(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("cannot mount a small tmpfs here (needs root); test_injected_enospc covers the code paths")
    url = str(disk / "lake")
    try:
        lake = _open(tmp_path, url, {})
        try:
            failure = None
            for round_ in range(200):
                _insert(lake, round_ * 20, 20, size=2000)
                try:
                    lake.sync_now()
                except StorageUnavailableError as exc:
                    failure = exc
                    break
            assert failure is not None, "the disk never filled"
            assert "no space left" in str(failure).lower()
            _assert_transient_in_status(lake, failure, lag=20)
            _fill(disk / "filler")  # the room the refused segment left: the flush must not fit in it by chance
            with pytest.raises(StorageUnavailableError, match="(?i)no space left"):
                lake.flush()  # the Delta write fails the same way
            assert not [f for f in os.listdir(disk / "lake" / "t" / "_tail") if f.startswith(".tmp-")]
            with rhei_lake.open(storage=url) as reader:  # what is committed is intact
                seqs = reader.query("SELECT _rhei_seq FROM t_changes").column(0).to_pylist()
                assert len(seqs) == len(set(seqs)) == round_ * 20
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            summary.count("faults.disk_full")
            lake.sync_now()
            lake.flush()
            _assert_exact(lake, tmp_path, url, {})
        finally:
            lake.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(path) -> None:
    """Write zeros to ``path`` until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("where", ["blob.after_data_before_commit", "delta.before_commit"])
def test_injected_enospc_is_transient_and_nothing_is_half_written(where, tmp_path):
    url = str(tmp_path / "lake")
    lake = _open(tmp_path, url, {})
    try:
        _insert(lake, 0, 10)
        lake.sync_now()
        _insert(lake, 10, 10)
        with faults.armed(where, "enospc", times=0):
            with pytest.raises(StorageUnavailableError, match="No space left") as full:
                lake.sync_now() if where.startswith("blob") else lake.flush()
            summary.count("faults.enospc_injected")
        if where.startswith("blob"):
            _assert_transient_in_status(lake, full.value, lag=10)
        assert not [f for f in os.listdir(tmp_path / "lake" / "t" / "_tail") if f.startswith(".tmp-")]
        lake.sync_now()
        lake.flush()
        _assert_exact(lake, tmp_path, url, {})
    finally:
        lake.close()
