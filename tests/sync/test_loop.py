"""The background sync loop: syncing on its own, backing off on faults, stopping on terminal errors."""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest

import rhei_lake
from rhei_lake import faults
from rhei_lake.errors import ConfigError, StorageUnavailableError
from rhei_lake.sync.loop import Backoff
from tests.support.fault_proxy import FaultProxy
from tests.support.waiting import wait_for


def _sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rhei-sync")]


def _open(htap_lake, url, options, **extra):
    lake = htap_lake(storage=(url, options), **extra)
    lake.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    lake.register_table("t")
    return lake


def test_backoff_grows_with_jitter_and_caps():
    backoff = Backoff(base=0.5, maximum=4.0)
    rng = random.Random(7)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0), (500, 4.0)]:
        delays = [backoff.delay(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), failures
        assert max(delays) - min(delays) > ceiling / 10, "no jitter"


def test_loop_syncs_in_the_background_and_close_runs_a_final_sync(storage, htap_lake):
    url, options = storage
    lake = _open(htap_lake, url, options, sync_interval=0.05)
    try:
        threads = _sync_threads()
        assert len(threads) == 1 and threads[0].daemon
        lake.execute("INSERT INTO t VALUES (1, 'a')")
        wait_for(lambda: lake.query("SELECT count(*) AS n FROM t", hint="olap").column(0)[0].as_py() == 1, what="sync")
        status = lake.sync_status()
        assert status.loop_running and status.loop.state == "running" and status.loop.interval == 0.05
        assert status.loop.cycles >= 1
        lake.stop_sync()
        lake.execute("INSERT INTO t VALUES (2, 'b')")
        time.sleep(0.15)
        assert lake.sync_status().tables["t"].lag_events == 1  # stopped: nothing moves
        assert not lake.sync_status().loop_running
        lake.start_sync(0.05)
        lake.execute_batch([("INSERT INTO t VALUES (?, ?)", (i, "late")) for i in range(3, 200)])
    finally:
        lake.close()  # stops the loop after a final sync
    assert _sync_threads() == []
    with rhei_lake.open(storage=url, storage_options=options) as reader:
        ids = reader.query("SELECT id FROM t_changes ORDER BY id").column(0).to_pylist()
        assert ids == list(range(1, 200))


def test_close_without_final_sync_leaves_events_for_the_next_open(tmp_path, htap_lake):
    url = str(tmp_path / "lake")
    lake = _open(htap_lake, url, {}, sync_interval=30, final_sync=False)
    lake.execute("INSERT INTO t VALUES (1, 'a')")
    lake.close()
    with rhei_lake.open(storage=url) as reader:
        assert reader.query("SELECT * FROM t").num_rows == 0
    with _open(htap_lake, url, {}) as lake:
        assert lake.sync_status().tables["t"].lag_events == 1
        assert lake.sync_now().events == 1


def test_loop_backs_off_on_storage_faults_and_recovers(tmp_path, htap_lake):
    """A store that fails its next writes: the loop retries with backoff, shows it, then catches up."""
    lake = _open(htap_lake, str(tmp_path / "lake"), {}, sync_max_backoff=0.2)
    failures = {"left": 6}
    real_put = lake.storage.blobs.put_if_absent

    def flaky_put(key: str, data: bytes) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise StorageUnavailableError(f"injected fault writing {key}")
        real_put(key, data)

    lake.storage.blobs.put_if_absent = flaky_put
    try:
        lake.start_sync(0.02)
        lake.execute("INSERT INTO t VALUES (1, 'a')")
        seen = {}

        def failing_twice() -> bool:
            seen["status"] = lake.sync_status()
            return seen["status"].loop.consecutive_failures >= 2

        wait_for(failing_twice, what="failing cycles")
        status = seen["status"]
        assert status.failing and status.loop.running
        assert status.last_error.kind == "StorageUnavailableError" and status.last_error.transient
        assert status.loop.last_error.message.startswith("injected fault")
        # the watermark moves at the commit, the cycle is recorded as a success a moment later
        wait_for(
            lambda: (s := lake.sync_status()).tables["t"].lag_events == 0 and s.loop.state == "running", what="recovery"
        )
        status = lake.sync_status()
        assert status.loop.state == "running" and status.loop.consecutive_failures == 0
        assert not status.failing and status.last_error is not None  # the last failure stays on record
        assert failures["left"] == 0
        assert lake.query("SELECT * FROM t", hint="olap").to_pylist() == [{"id": 1, "v": "a"}]
    finally:
        lake.close()


@pytest.mark.s3
def test_loop_rides_out_an_s3_outage(moto, htap_lake):
    bucket = f"outage-{uuid.uuid4().hex[:10]}"
    moto.create_bucket(bucket)
    host, port = moto.endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port))
    options = {**moto.storage_options(), "AWS_ENDPOINT_URL": proxy.endpoint, "max_retries": "1"}
    url = f"s3://{bucket}/lake"
    lake = _open(htap_lake, url, options, sync_max_backoff=0.5)
    try:
        lake.execute("INSERT INTO t VALUES (0, 'before')")
        lake.start_sync(0.05)
        wait_for(lambda: lake.sync_status().tables["t"].lag_events == 0, what="first sync")
        proxy.down()
        lake.execute_batch([("INSERT INTO t VALUES (?, ?)", (i, "during")) for i in range(1, 50)])
        wait_for(lambda: lake.sync_status().failing, what="the outage to show", timeout=60)
        status = lake.sync_status()
        assert status.loop.running, status.loop
        assert status.last_error.transient, status.last_error
        assert status.tables["t"].lag_events == 49 and status.tables["t"].lag_seconds > 0
        proxy.up()
        # the watermark moves at the commit, the cycle is recorded as a success a moment later
        wait_for(
            lambda: not (status := lake.sync_status()).failing and status.tables["t"].lag_events == 0,
            what="recovery",
            # A request in flight when the store comes back can wait out its timeout (30 s) before
            # the next one goes through; the lease keeper's, the change marker's and the sync's own
            # can fall one after another.
            timeout=150,
        )
    finally:
        proxy.up() if proxy._listener is None else None
        lake.close()
        proxy.close()
    direct = {**moto.storage_options()}
    with rhei_lake.open(storage=url, storage_options=direct) as reader:
        ids = reader.query("SELECT id FROM t_changes ORDER BY id").column(0).to_pylist()
        assert ids == list(range(50)), "every event exactly once"


def test_a_terminal_error_stops_the_loop_and_stays_in_status(tmp_path, htap_lake):
    lake = _open(htap_lake, str(tmp_path / "lake"), {})
    lake.execute("CREATE TABLE n (id INTEGER PRIMARY KEY, qty INTEGER)")
    lake.register_table("n")
    try:
        lake.start_sync(0.02)
        lake.execute("INSERT INTO n VALUES (1, 'lots')")
        wait_for(lambda: lake.sync_status().loop.state == "failed", what="the loop to stop")
        status = lake.sync_status()
        assert not status.loop_running
        assert status.loop.last_error.kind == "TypeMismatchError" and not status.loop.last_error.transient
        assert status.tables["n"].last_error.kind == "TypeMismatchError"
        assert "'qty'" in status.tables["n"].last_error.message
        wait_for(lambda: _sync_threads() == [], what="the thread to end")
        cycles = status.loop.cycles
        time.sleep(0.1)
        assert lake.sync_status().loop.cycles == cycles  # it really stopped
    finally:
        lake.close()  # no final sync after a terminal failure, no error, no hang


def test_an_unexpected_exception_is_terminal_and_reported(tmp_path, caplog, htap_lake):
    lake = _open(htap_lake, str(tmp_path / "lake"), {})
    try:

        def broken(_point: str) -> None:
            raise RuntimeError("a bug")

        lake.execute("INSERT INTO t VALUES (1, 'a')")
        with faults.armed("sync.after_read_before_commit", broken):
            lake.start_sync(0.02)
            wait_for(lambda: lake.sync_status().loop.state == "failed", what="the loop to stop")
        assert lake.sync_status().loop.last_error.kind == "RuntimeError"
        assert any("terminal error" in r.getMessage() and r.exc_info for r in caplog.records)
    finally:
        lake.close()


def test_start_sync_arguments(tmp_path, htap_lake):
    url = str(tmp_path / "lake")
    with _open(htap_lake, url, {}) as lake:
        for bad in (0, -1, "fast", True):
            with pytest.raises(ConfigError):
                lake.start_sync(bad)
        lake.start_sync(0.5)
        lake.start_sync(0.05)  # replaces the running loop
        assert len(_sync_threads()) == 1
        assert lake.sync_status().loop.interval == 0.05
        lake.stop_sync()
        lake.stop_sync()
        assert _sync_threads() == []
    with pytest.raises(ConfigError, match="sync_interval|greater than 0"):
        rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, sync_interval=0)
    with pytest.raises(ConfigError, match="source"):
        rhei_lake.open(storage=url, sync_interval=1)
    with rhei_lake.open(storage=url) as reader, pytest.raises(ConfigError, match="source"):
        reader.start_sync(1)
