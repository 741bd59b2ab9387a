"""Many clients at once: correct answers, no client blocked by a slow one, resources freed on disconnect."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow.flight as flight
import pytest

import rhei_lake
from rhei_lake.flight import serve_flight
from tests.flight.conftest import ORDERS
from tests.flight.flight_clients import RawClient, adbc_connect, pb, query
from tests.support.waiting import wait_for

# Far more than gRPC and socket buffers hold, and incompressible: the server cannot
# have sent it all before the client has read it.
BIG = "SELECT value, uuid() || uuid() || uuid() AS pad FROM range(300000)"
BIG_DUCKDB = "SELECT range AS value, uuid()::VARCHAR || uuid()::VARCHAR || uuid()::VARCHAR AS pad FROM range(300000)"


def big(lake) -> str:
    """A result of many megabytes, in the served engine's SQL."""
    return BIG_DUCKDB if lake.config.engine == "duckdb" else BIG


BIG_ROWS = 300_000

QUERIES = {
    "SELECT count(*) AS n FROM orders": [{"n": ORDERS - 5}],
    "SELECT count(*) AS n FROM orders WHERE customer = 'c2'": None,
    "SELECT customer, sum(total) AS s FROM orders GROUP BY customer ORDER BY customer": None,
    "SELECT count(*) AS n FROM orders_history": None,
}


def test_concurrent_clients_get_correct_answers(served):
    lake, server = served
    expected = {sql: want or lake.query(sql).to_pylist() for sql, want in QUERIES.items()}

    def client(seed: int) -> int:
        with adbc_connect(server) as conn, conn.cursor() as cur:
            for i in range(6):
                sql = list(QUERIES)[(seed + i) % len(QUERIES)]
                cur.execute(sql)
                assert cur.fetch_arrow_table().to_pylist() == expected[sql]
        return seed

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(client, range(8))) == list(range(8))
    idle = {"active_streams": 0, "open_tickets": 0, "open_statements": 0}
    wait_for(lambda: server.stats() == idle, timeout=10, what="the server to free every stream, ticket and statement")


def test_a_slow_client_does_not_block_others_and_a_vanished_one_frees_its_stream(served):
    _lake, server = served
    slow = adbc_connect(server)
    cursor = slow.cursor()
    cursor.execute(big(_lake))
    reader = cursor.fetch_record_batch()
    first = reader.read_next_batch()
    assert first.num_rows > 0
    # The slow client stops reading: the server's stream is parked mid-way, not finished.
    time.sleep(0.5)
    assert server.stats()["active_streams"] == 1

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: query(server, "SELECT count(*) AS n FROM orders").to_pylist(), range(8)))
    assert results == [[{"n": ORDERS - 5}]] * 8
    assert time.monotonic() - started < 20
    assert server.stats()["active_streams"] == 1, "the slow stream is still open"

    reader.close()  # stops mid-stream and goes away
    cursor.close()
    slow.close()
    wait_for(lambda: server.stats()["active_streams"] == 0, timeout=10, what="the server's streams to settle")


def test_a_raw_client_dropping_mid_stream_frees_the_stream(served):
    _lake, server = served
    raw = RawClient(server)
    info = raw.info(pb.CommandStatementQuery(query=big(_lake)))
    reader = raw.client.do_get(info.endpoints[0].ticket)
    chunk = reader.read_chunk()
    assert chunk.data.num_rows > 0
    time.sleep(0.3)
    assert server.stats()["active_streams"] == 1
    reader.cancel()
    raw.close()
    wait_for(lambda: server.stats()["active_streams"] == 0, timeout=10, what="the server's streams to settle")
    assert server.stats()["open_tickets"] == 0


def test_a_stream_read_to_the_end_is_complete(served):
    _lake, server = served
    with adbc_connect(server) as conn, conn.cursor() as cur:
        cur.execute(big(_lake))
        rows = 0
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
        assert rows == BIG_ROWS
    wait_for(lambda: server.stats()["active_streams"] == 0, timeout=10, what="the server's streams to settle")


def test_shutdown_ends_open_streams():
    with rhei_lake.open(storage="memory://") as lake:
        server = serve_flight(lake)
        raw = RawClient(server)
        info = raw.info(pb.CommandStatementQuery(query=BIG))
        reader = raw.client.do_get(info.endpoints[0].ticket)
        reader.read_chunk()
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        # The parked stream ends at its next batch, so shutdown does not wait for the client.
        with pytest.raises(flight.FlightError, match="shutting down"):
            while True:
                reader.read_chunk()
        stopper.join(20)
        assert not stopper.is_alive(), "shutdown waited for a stalled client"
        assert server.stats()["active_streams"] == 0
        raw.close()


@pytest.fixture
def stalled_client(served):
    """A client process parked mid-stream on the served lake (killed at the end)."""
    lake, server = served
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.flight.stalled_client", server.location, big(lake)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "stalled"
        wait_for(lambda: server.stats()["active_streams"] == 1, timeout=10, what="the server's streams to settle")
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_killed_client_frees_its_stream(served, stalled_client):
    _lake, server = served
    time.sleep(0.3)
    assert server.stats()["active_streams"] == 1
    stalled_client.kill()
    stalled_client.wait()
    wait_for(lambda: server.stats()["active_streams"] == 0, timeout=10, what="the server's streams to settle")


def test_shutdown_does_not_wait_forever_for_a_client_that_stopped_reading(shop_lake):
    with shop_lake.open() as lake:
        server = serve_flight(lake)
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.flight.stalled_client", server.location], stdout=subprocess.PIPE, text=True
        )
        try:
            assert process.stdout.readline().strip() == "stalled"
            time.sleep(1.0)  # until the server has filled the client's buffers and waits on it
            started = time.monotonic()
            assert server.shutdown(grace=1) is False
            assert time.monotonic() - started < 5
            assert server.stats()["active_streams"] == 1
        finally:
            process.kill()
            process.wait()
        assert server.shutdown(grace=20) is True, "the stream ended once its client went away"
        assert server.stats()["active_streams"] == 0


def test_new_commits_are_served_without_a_restart(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake, serve_flight(lake) as server:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        with adbc_connect(server) as conn, conn.cursor() as cur:
            for n in range(1, 4):
                lake.execute("INSERT INTO t VALUES (?, 'x')", (n,))
                lake.sync_now()
                cur.execute(f"SELECT count(*) FROM t WHERE id <= {n}")  # a new statement each time
                assert cur.fetchone() == (n,)
