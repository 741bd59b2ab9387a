"""HTAP facade benchmark: execute() vs execute_batch(), and routed point reads vs the lake.

    python bench/bench_htap.py [--rows 5000] [--reads 300] [--storage DIR]

Absolute numbers depend on the machine; the ratios measured in one run are the point.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import rhei_lake


def _per_second(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def bench_writes(lake: rhei_lake.Lake, rows: int) -> tuple[float, float]:
    lake.execute("CREATE TABLE one (id INTEGER PRIMARY KEY, v TEXT, n REAL)")
    lake.execute("CREATE TABLE many (id INTEGER PRIMARY KEY, v TEXT, n REAL)")
    lake.register_table("one")
    lake.register_table("many")
    started = time.perf_counter()
    for i in range(rows):
        lake.execute("INSERT INTO one VALUES (?, ?, ?)", (i, f"value {i}", i * 0.5))
    single = time.perf_counter() - started
    started = time.perf_counter()
    lake.execute_batch([("INSERT INTO many VALUES (?, ?, ?)", (i, f"value {i}", i * 0.5)) for i in range(rows)])
    batch = time.perf_counter() - started
    return single, batch


def bench_reads(lake: rhei_lake.Lake, rows: int, reads: int) -> tuple[list[float], list[float]]:
    lake.sync_now()
    oltp, olap = [], []
    for i in range(reads):
        key = (i * 7919) % rows
        sql = f"SELECT * FROM many WHERE id = {key}"
        started = time.perf_counter()
        routed = lake.query(sql)
        oltp.append(time.perf_counter() - started)
        started = time.perf_counter()
        analytic = lake.query(sql, hint="olap")
        olap.append(time.perf_counter() - started)
        assert routed.schema.metadata[b"rhei.route"] == b"oltp"
        assert routed.to_pylist() == analytic.to_pylist()
    return oltp, olap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--storage", help="lake directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage or str(Path(tmp) / "lake")
        with rhei_lake.open(oltp_path=str(Path(tmp) / "bench.db"), storage=storage) as lake:
            single, batch = bench_writes(lake, args.rows)
            oltp, olap = bench_reads(lake, args.rows, args.reads)
    print(f"writes, {args.rows} inserts")
    print(f"  execute() one by one   {single * 1000:9.1f} ms  {_per_second(args.rows, single)}")
    print(f"  execute_batch()        {batch * 1000:9.1f} ms  {_per_second(args.rows, batch)}")
    print(f"  ratio                  {single / batch:9.1f}x")
    p50 = statistics.median
    print(f"point reads by key, {args.reads} reads (median latency)")
    print(f"  routed to SQLite       {p50(oltp) * 1e6:9.0f} us")
    print(f"  forced to the lake     {p50(olap) * 1e6:9.0f} us")
    print(f"  ratio                  {p50(olap) / p50(oltp):9.1f}x")


if __name__ == "__main__":
    main()
