"""rhei_lake.aio: the same API as coroutines, under asyncio and trio, never blocking the event loop."""

from __future__ import annotations

import time

import anyio
import pyarrow as pa
import pytest

import rhei_lake
import rhei_lake.aio
from rhei_lake.errors import WriteRefusedError

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def test_the_async_api_end_to_end(durable_storage, tmp_path):
    url, options = durable_storage
    async with await rhei_lake.aio.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options
    ) as lake:
        await lake.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
        spec = await lake.register_table("orders")
        assert spec.primary_key == ("id",)
        assert await lake.execute("INSERT INTO orders VALUES (1, 99)") == 1
        assert await lake.execute_batch([("INSERT INTO orders VALUES (?, ?)", (i, i)) for i in range(2, 12)]) == 10
        report = await lake.sync_now()
        assert report.events == 11
        totals = await lake.query("SELECT SUM(total) AS s FROM orders")
        assert isinstance(totals, pa.Table) and totals.to_pylist() == [{"s": 99 + sum(range(2, 12))}]
        route = await lake.explain_route("SELECT * FROM orders WHERE id = 1")
        assert route.target == "oltp"
        assert (await lake.query("SELECT total FROM orders WHERE id = 1")).to_pylist() == [{"total": 99}]
        with pytest.raises(WriteRefusedError):
            await lake.query("DELETE FROM orders")
        await lake.add_column("orders", "note", "TEXT")
        await lake.execute("UPDATE orders SET note = 'gift' WHERE id = 1")
        await lake.start_sync(0.02)
        with anyio.fail_after(20):
            while (await lake.sync_status()).tables["orders"].lag_events:
                await anyio.sleep(0.01)
        status = await lake.sync_status()
        assert status.loop_running
        await lake.stop_sync()
        assert (await lake.tables()) == ["orders"]
        assert (await lake.table_spec("orders")).column_names == ["id", "total", "note"]
        restored = await lake.restore_sqlite(str(tmp_path / "copy.db"))
        assert restored.rows == {"orders": 11}
        dropped = await lake.drop_column("orders", "note")
        assert dropped.column_names == ["id", "total"]
        assert await lake.flush() >= 0
    with pytest.raises(rhei_lake.RheiError, match="closed"):
        await lake.query("SELECT 1")


async def test_blocking_work_runs_off_the_event_loop(tmp_path):
    """A slow SQLite query runs while other tasks keep ticking on the loop."""
    lake = await rhei_lake.aio.open(oltp_path=str(tmp_path / "app.db"), storage="memory://")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.005)
            ticks += 1

    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) FROM c"
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await anyio.sleep(0.02)
            started, before = time.monotonic(), ticks
            result = await lake.query(slow, hint="oltp")
            elapsed = time.monotonic() - started
            during = ticks - before
            tg.cancel_scope.cancel()
        assert result.column(0)[0].as_py() == 3_000_000
        assert elapsed > 0.1, "the query was too fast to tell"
        assert during >= max(3, elapsed / 0.005 / 10), f"only {during} ticks in {elapsed:.2f}s: the loop was blocked"
    finally:
        await lake.close()


async def test_cancelling_the_task_still_closes_the_lake(tmp_path):
    url = str(tmp_path / "lake")
    inside = anyio.Event()
    held = []

    async def user() -> None:
        async with await rhei_lake.aio.open(oltp_path=str(tmp_path / "app.db"), storage=url) as lake:
            held.append(lake)
            await lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            await lake.register_table("t")
            await lake.execute("INSERT INTO t VALUES (1)")
            await lake.start_sync(60)
            inside.set()
            await anyio.sleep(60)

    async with anyio.create_task_group() as tg:
        tg.start_soon(user)
        await inside.wait()
        tg.cancel_scope.cancel()
    assert held[0].lake._closed  # __aexit__ ran to the end, shielded from the cancellation
    with rhei_lake.open(storage=url) as reader:
        assert reader.query("SELECT * FROM t").to_pylist() == [{"id": 1}]  # the final sync happened


async def test_a_cancellation_while_opening_still_closes_the_lake(tmp_path, monkeypatch):
    opened = []
    real_open = rhei_lake.aio._open_lake

    def slow_open(*args, **kwargs):
        time.sleep(0.3)
        lake = real_open(*args, **kwargs)
        opened.append(lake)
        return lake

    monkeypatch.setattr(rhei_lake.aio, "_open_lake", slow_open)
    with anyio.move_on_after(0.05) as scope:
        async with await rhei_lake.aio.open(oltp_path=str(tmp_path / "app.db"), storage="memory://", sync_interval=60):
            await anyio.sleep(60)
    assert scope.cancelled_caught
    assert len(opened) == 1 and opened[0]._closed


async def test_async_compact(tmp_path):
    async with await rhei_lake.aio.open(oltp_path=str(tmp_path / "c.db"), storage=str(tmp_path / "lake")) as lake:
        await lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        await lake.register_table("t")
        await lake.execute("INSERT INTO t VALUES (1, 'a')")
        await lake.execute("UPDATE t SET v = 'b' WHERE id = 1")
        await lake.sync_now()
        report = await lake.compact(["t"], vacuum_retention=0)
        assert isinstance(report, rhei_lake.CompactionReport)
        assert report.tables["t"].versions_written == 2 and report.tables["t"].versions_closed == 1
