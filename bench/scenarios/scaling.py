"""Scaling: initial sync and compaction at growing sizes; the log-log slope of time against rows.

A slope <= 1 is linear or better. Sizes: 10K, 100K, 1M, 10M (quick: 10K, 100K).
"""

from __future__ import annotations

import math
import shutil
import time

from bench.core import Result, Settings, run_isolated, trigger_sync
from bench.data import create_orders


def measure(db: str, lake: str) -> dict:
    import rhei_lake

    shutil.rmtree(lake, ignore_errors=True)
    with rhei_lake.open(oltp_path=db, storage=lake) as opened:
        started = time.perf_counter()
        spec = opened.register_table("orders")
        sync = time.perf_counter() - started
        started = time.perf_counter()
        opened.compact()
        compact = time.perf_counter() - started
        trigger_sync(opened).source.unregister(spec.name)
    return {"sync": sync, "compact": compact}


def _slope(points: list[tuple[int, float]]) -> float:
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def run(settings: Settings) -> list[Result]:
    sizes = [10_000, 100_000] if settings.quick else [10_000, 100_000, 1_000_000, 10_000_000]
    timings: dict[str, list[tuple[int, float]]] = {"initial sync": [], "compaction": []}
    results = []
    for rows in sizes:
        db = create_orders(settings.workdir / f"scale-{rows}.db", rows)
        got = run_isolated("bench.scenarios.scaling", "measure", str(db), str(settings.workdir / f"scale-{rows}-lake"))
        for series, key in (("initial sync", "sync"), ("compaction", "compact")):
            timings[series].append((rows, got[key]))
            results.append(
                Result(
                    "scaling",
                    f"{series} at {rows:,} rows",
                    rows / got[key],
                    "rows/s",
                    details={"series": series, "rows": rows, "seconds": got[key], "peak_rss_mb": got["peak_rss_mb"]},
                )
            )
        shutil.rmtree(settings.workdir / f"scale-{rows}-lake", ignore_errors=True)
        db.unlink(missing_ok=True)
    for series, points in timings.items():
        slope = _slope(points)
        results.append(
            Result(
                "scaling",
                f"{series}: slope of log time vs log rows",
                slope,
                "",
                None,
                None,
                "<= 1 (linear or better)",
                slope <= 1.05,
                False,
            )
        )
    return results
