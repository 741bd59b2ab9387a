"""Requests to S3 per operation, and what they cost at 0, 20 and 50 ms a request.

moto sits behind ``tests/support/s3_latency_proxy.py``, which counts every
request and delays each one (what S3 costs from a VM is 20-50 ms a request).
Counts come from lakes whose first table has a short and a long history (10
syncs, or 60 flushed syncs plus 60 unflushed segments): none may grow with it.
Targets from the issue: a read-only query on one table of a 10-table lake
makes <= 1 request when nothing is new and <= 3 plus the new data after a sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import rhei_lake
from bench.core import Result, Settings

if TYPE_CHECKING:
    from tests.support.s3_latency_proxy import LatencyProxy

TABLES = 10


def _measure(proxy: LatencyProxy, fn: Callable[[], Any]) -> tuple[int, float, Any]:
    proxy.reset()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    return proxy.requests()["total"], seconds, result


def _build(
    settings: Settings, url: str, options: dict[str, str], tables: int, syncs: int, segments: int
) -> rhei_lake.Lake:
    """A writer on a lake of ``tables`` tables; t0 gets ``syncs`` flushed syncs and ``segments`` unflushed ones."""
    db = settings.workdir / f"s3req-{tables}-{syncs}-{segments}.db"
    db.unlink(missing_ok=True)
    lake = rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options, tail_flush_segments=10_000)
    for i in range(tables):
        lake.execute(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, v TEXT)")
        lake.execute(f"INSERT INTO t{i} VALUES (1, 'a')")
        lake.register_table(f"t{i}")
    for k in range(syncs + segments):
        lake.execute("INSERT INTO t0 VALUES (?, 'b')", (1000 + k,))
        lake.sync_now()
        if k < syncs:
            lake.flush()
    return lake


def run(settings: Settings) -> list[Result]:
    from tests.support.s3_latency_proxy import LatencyProxy

    moto = settings.moto
    proxy = LatencyProxy(moto.endpoint)
    results: list[Result] = []
    writers = []
    try:
        histories = {"10 syncs": (10, 0), "60 flushed syncs + 60 segments": (60, 60)}
        lakes = {}
        for history, (syncs, segments) in histories.items():
            for tables in (1, TABLES):
                url, options = settings.s3_lake(f"req{tables}")
                options = {**options, "AWS_ENDPOINT_URL": proxy.endpoint}
                writer = _build(settings, url, options, tables, syncs, segments)
                writers.append(writer)
                lakes[(history, tables)] = (url, options, writer)
        delays = (0.0,) + ((0.02, 0.05) if not settings.quick else (0.05,))
        for delay in delays:
            proxy.set_delay(delay)
            at = f"{delay * 1000:.0f} ms/request"
            for history in histories:
                if delay and history != "60 flushed syncs + 60 segments":
                    continue  # counts do not depend on the delay; times at the longer history only
                for tables in (1, TABLES):
                    url, options, writer = lakes[(history, tables)]
                    results += _reader_operations(proxy, url, options, writer, tables, history, at)
        # Compaction changes the lake, so once per lake, at the largest delay.
        at = f"{delays[-1] * 1000:.0f} ms/request"
        for history in histories:
            writer = lakes[(history, TABLES)][2]
            requests, seconds, _ = _measure(proxy, lambda: writer.compact(["t0"], vacuum_retention=0))
            results.append(_result(f"compact() of t0 ({history})", requests, seconds, at))
    finally:
        proxy.set_delay(0.0)
        for writer in writers:
            writer.close()
        proxy.close()
    return results


def _reader_operations(
    proxy: LatencyProxy,
    url: str,
    options: dict[str, str],
    writer: rhei_lake.Lake,
    tables: int,
    history: str,
    at: str,
) -> list[Result]:
    results = []
    requests, seconds, reader = _measure(
        proxy, lambda: rhei_lake.open(storage=url, storage_options=options, refresh_interval=0.5)
    )
    results.append(_result(f"open(), {tables} table(s), t0 after {history}", requests, seconds, at))
    try:
        if tables == 1:
            return results
        sql = "SELECT count(*) FROM t0"
        requests, seconds, _ = _measure(proxy, lambda: reader.query(sql))
        results.append(_result(f"first query of t0 ({history})", requests, seconds, at))
        reader.query(sql)  # looks again if the first query outlasted the interval
        requests, seconds, _ = _measure(proxy, lambda: reader.query(sql))
        results.append(_result(f"query within refresh_interval ({history})", requests, seconds, at))
        time.sleep(0.6)
        requests, seconds, _ = _measure(proxy, lambda: reader.query(sql))
        results.append(_result(f"query, nothing new, interval elapsed ({history})", requests, seconds, at, target=1))
        writer.execute("INSERT INTO t0 VALUES (?, 'c')", (int(time.time() * 1000) % 10**9,))
        requests, seconds, _ = _measure(proxy, writer.sync_now)
        results.append(_result(f"sync_now(), one row ({history})", requests, seconds, at))
        time.sleep(0.6)
        requests, seconds, _ = _measure(proxy, lambda: reader.query(sql))
        # 3 + the new data (one segment)
        results.append(_result(f"query after one new sync ({history})", requests, seconds, at, target=4))
    finally:
        requests, seconds, _ = _measure(proxy, reader.close)
    results.append(_result(f"close() read-only, {tables} table(s) ({history})", requests, seconds, at))
    return results


def _result(operation: str, requests: int, seconds: float, at: str, target: int | None = None) -> Result:
    met = None if target is None else requests <= target
    return Result(
        "S3 requests",
        f"{operation}, {at}",
        requests,
        "requests",
        None,
        None,
        "" if target is None else f"<= {target}",
        met,
        higher_is_better=False,
        details={"seconds": seconds},
    )
