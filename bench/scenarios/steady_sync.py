"""Steady sync: 10 rows per cycle, many cycles, on memory, local and S3; p50 and p99 of sync_now().

Limits: one delta-rs append of 10 rows to a reused table (local), one
conditional PUT of a small object (S3). Targets: memory p50 <= 250 us and
p99 <= 600 us; local p50 <= 4 ms and p99 <= 7 ms; S3 p50 <= 4x one PUT.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pyarrow as pa

import rhei_lake
from bench.core import Result, Settings, summarize, timer

ROWS_PER_CYCLE = 10


def _sync_latencies(storage: str, options: dict[str, str], db: Path, cycles: int) -> list[float]:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    lake = rhei_lake.open(oltp_path=str(db), storage=storage, storage_options=options)
    try:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, v REAL, n INTEGER)")
        lake.register_table("t")
        rows = iter(range(10**9))
        latencies = []
        for cycle in range(cycles + 10):  # the first 10 warm up
            lake.execute_batch(
                [
                    ("INSERT INTO t VALUES (?, ?, ?, ?)", (k, f"name {k}", k * 0.5, k))
                    for k in (next(rows) for _ in range(ROWS_PER_CYCLE))
                ]
            )
            with timer() as elapsed:
                lake.sync_now()
            if cycle >= 10:
                latencies.append(elapsed())
        return latencies
    finally:
        lake.close()


def _delta_append_latencies(cycles: int) -> list[float]:
    from deltalake import DeltaTable, write_deltalake

    root = Path(tempfile.mkdtemp(prefix="bench-delta-"))
    try:
        batch = pa.table(
            {
                "id": pa.array(range(ROWS_PER_CYCLE), pa.int64()),
                "name": [f"n{i}" for i in range(ROWS_PER_CYCLE)],
                "v": [i * 0.5 for i in range(ROWS_PER_CYCLE)],
            }
        )
        write_deltalake(str(root), batch)
        dt = DeltaTable(str(root))
        latencies = []
        for cycle in range(cycles + 10):
            with timer() as elapsed:
                write_deltalake(dt, batch, mode="append")
            if cycle >= 10:
                latencies.append(elapsed())
        return latencies
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _put_latencies(settings: Settings, cycles: int) -> list[float]:
    import obstore

    from rhei_lake.storage.s3_blobs import S3Blobs

    url, options = settings.s3_lake("put")
    bucket = url.removeprefix("s3://").split("/")[0]
    blobs = S3Blobs(bucket, "lake", options)
    data = b"x" * 2048
    latencies = []
    for cycle in range(cycles + 10):
        with timer() as elapsed:
            obstore.put(blobs._store, f"p/{cycle:08d}", data, mode="create")
        if cycle >= 10:
            latencies.append(elapsed())
    return latencies


def run(settings: Settings) -> list[Result]:
    cycles = settings.size(100, 200)
    db = settings.workdir / "steady.db"
    results = []
    raw = {
        "memory": _sync_latencies("memory://", {}, db, cycles),
        "local": _sync_latencies(str(settings.workdir / "steady-lake"), {}, db, cycles),
        "s3": _sync_latencies(*settings.s3_lake("steady"), db, cycles),
        "delta append (limit)": _delta_append_latencies(cycles),
        "S3 PUT (limit)": _put_latencies(settings, cycles),
    }
    memory, local, s3 = summarize(raw["memory"]), summarize(raw["local"]), summarize(raw["s3"])
    delta, put = summarize(raw["delta append (limit)"]), summarize(raw["S3 PUT (limit)"])
    us, ms = 1e6, 1e3
    results += [
        Result(
            "steady sync",
            "memory p50",
            memory["p50"] * us,
            "us",
            delta["p50"] * us,
            memory["p50"] / delta["p50"],
            "p50 <= 250 us",
            memory["p50"] * us <= 250,
            False,
            {"summary": memory, "raw_seconds": raw},
        ),
        Result(
            "steady sync",
            "memory p99",
            memory["p99"] * us,
            "us",
            delta["p99"] * us,
            memory["p99"] / delta["p99"],
            "p99 <= 600 us",
            memory["p99"] * us <= 600,
            False,
        ),
        Result(
            "steady sync",
            "local p50",
            local["p50"] * ms,
            "ms",
            delta["p50"] * ms,
            local["p50"] / delta["p50"],
            "p50 <= 4 ms",
            local["p50"] * ms <= 4,
            False,
            {"summary": local},
        ),
        Result(
            "steady sync",
            "local p99",
            local["p99"] * ms,
            "ms",
            delta["p99"] * ms,
            local["p99"] / delta["p99"],
            "p99 <= 7 ms",
            local["p99"] * ms <= 7,
            False,
        ),
        Result(
            "steady sync",
            "S3 p50",
            s3["p50"] * ms,
            "ms",
            put["p50"] * ms,
            s3["p50"] / put["p50"],
            "p50 <= 4x one PUT",
            s3["p50"] <= 4 * put["p50"],
            False,
            {"summary": s3},
        ),
        Result("steady sync", "S3 p99", s3["p99"] * ms, "ms", put["p99"] * ms, s3["p99"] / put["p99"], "", None, False),
    ]
    return results
