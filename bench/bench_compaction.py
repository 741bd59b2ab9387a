"""Query time before and after compaction, after many small syncs.

    python bench/bench_compaction.py [--storage PATH_OR_URL] [--syncs 200] [--rows-per-sync 25] [--repeat 7]

Each sync commits a few inserts and three updates; with ``--flush-every 1`` (the
default) every sync also lands in Delta as its own small file, the worst case
for readers. The same queries then run before and after ``compact()``; the
median of ``--repeat`` runs is reported, and the ratio is what matters (the
machines are shared: absolute times are noise).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import rhei_lake

QUERIES = {
    "current: count": "SELECT count(*) FROM ticks",
    "current: sum by bucket": "SELECT id % 10 AS bucket, sum(value) FROM ticks GROUP BY bucket ORDER BY bucket",
    "history: versions per key": "SELECT id, count(*) FROM ticks_history GROUP BY id ORDER BY 2 DESC LIMIT 5",
    "changes: count": "SELECT count(*) FROM ticks_changes",
}


def _median_ms(lake: rhei_lake.Lake, sql: str, repeat: int, as_of: float | None = None) -> float:
    lake.query(sql, as_of=as_of)  # warm: registration and planning
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        lake.query(sql, as_of=as_of)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", help="lake location (default: a temporary directory)")
    parser.add_argument("--syncs", type=int, default=200)
    parser.add_argument("--rows-per-sync", type=int, default=25)
    parser.add_argument("--flush-every", type=int, default=1, help="syncs per Delta commit (tail_flush_segments)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage or str(Path(tmp) / "lake")
        lake = rhei_lake.open(
            oltp_path=str(Path(tmp) / "bench.db"), storage=storage, tail_flush_segments=args.flush_every
        )
        with lake:
            lake.execute("CREATE TABLE ticks (id INTEGER PRIMARY KEY, value REAL, note TEXT)")
            lake.register_table("ticks")
            started = time.perf_counter()
            next_id = 0
            for _ in range(args.syncs):
                for _ in range(args.rows_per_sync):
                    lake.execute("INSERT INTO ticks VALUES (?, ?, ?)", (next_id, next_id * 0.25, f"t{next_id}"))
                    next_id += 1
                lake.execute(
                    "UPDATE ticks SET value = value + 1 WHERE id IN (?, ?, ?)",
                    (next_id // 2, next_id // 3, next_id - 1),
                )
                lake.sync_now()
            sync_seconds = time.perf_counter() - started
            middle = time.time()

            before = {name: _median_ms(lake, sql, args.repeat) for name, sql in QUERIES.items()}
            before["as_of: count"] = _median_ms(lake, QUERIES["current: count"], args.repeat, as_of=middle)
            files_before = {k: lake.storage.table_store("ticks", k).stats().files for k in ("changes",)}
            report = lake.compact(vacuum_retention=0)
            after = {name: _median_ms(lake, sql, args.repeat) for name, sql in QUERIES.items()}
            after["as_of: count"] = _median_ms(lake, QUERIES["current: count"], args.repeat, as_of=middle)

    table = report.tables["ticks"]
    print(
        f"{args.syncs} syncs of {args.rows_per_sync} inserts + 3 updates in {sync_seconds:.1f} s; "
        f"changes files before: {files_before['changes']}"
    )
    print(f"compaction: {table}")
    print(f"{'query':32} {'before ms':>10} {'after ms':>10} {'speed-up':>9}")
    for name in before:
        print(f"{name:32} {before[name]:10.1f} {after[name]:10.1f} {before[name] / after[name]:8.1f}x")


if __name__ == "__main__":
    main()
