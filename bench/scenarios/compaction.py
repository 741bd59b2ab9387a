"""Compaction: fold 1% changes into a big history; fold after 200 small syncs.

Limit: one delta-rs MERGE of the same changed rows into a plain Delta table of
the same size (upsert by key). Targets: <= 1 s for the 1% fold; <= 3x the merge.
"""

from __future__ import annotations

import random
import time
import shutil
from pathlib import Path

import pyarrow as pa

import rhei_lake
from bench.core import Result, Settings, timer
from bench.data import create_orders


def _merge_limit(settings: Settings, rows: int, changed: pa.Table) -> float:
    """Seconds for one delta-rs merge of ``changed`` into a ``rows``-row table."""
    import adbc_driver_sqlite.dbapi as adbc
    from deltalake import DeltaTable, write_deltalake

    db = create_orders(settings.workdir / "merge-limit.db", rows)
    target = settings.workdir / "merge-limit"
    shutil.rmtree(target, ignore_errors=True)
    with adbc.connect(str(db)) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "65536"})
        cur.execute("SELECT * FROM orders")
        write_deltalake(str(target), cur.fetch_arrow_table())
    dt = DeltaTable(str(target))
    with timer() as elapsed:
        dt.merge(
            changed, "t.id = s.id", source_alias="s", target_alias="t"
        ).when_matched_update_all().when_not_matched_insert_all().execute()
    return elapsed()


class _StepClock:
    """Times each step of a compaction from the progress callback (steps start in order)."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, float]] = []

    def __call__(self, table: str, step: str, done: int, total: int) -> None:
        if not self.starts or self.starts[-1][0] != step:
            self.starts.append((step, time.perf_counter()))

    def seconds(self, end: float) -> dict[str, float]:
        ends = [t for _, t in self.starts[1:]] + [end]
        return {step: e - t for (step, t), e in zip(self.starts, ends)}


def _timed_compact(lake: rhei_lake.Lake) -> tuple[float, float, dict[str, float], str]:
    """(fold seconds, whole compact() seconds, seconds per step, report)."""
    clock = _StepClock()
    started = time.perf_counter()
    report = lake.compact(progress=clock)
    end = time.perf_counter()
    steps = clock.seconds(end)
    return steps.get("fold", 0.0), end - started, steps, str(report)


def _lake(settings: Settings, name: str, rows: int) -> tuple[rhei_lake.Lake, Path]:
    db = create_orders(settings.workdir / f"{name}.db", rows)
    lake_dir = settings.workdir / f"{name}-lake"
    shutil.rmtree(lake_dir, ignore_errors=True)
    lake = rhei_lake.open(oltp_path=str(db), storage=str(lake_dir), vacuum_retention="0s")
    lake.register_table("orders")
    lake.compact()  # the snapshot becomes the history
    return lake, db


def _changed_rows(lake: rhei_lake.Lake, ids: list[int]) -> pa.Table:
    listed = ", ".join(str(i) for i in ids)
    return lake.query(f"SELECT * FROM orders WHERE id IN ({listed})", hint="olap")


def run(settings: Settings) -> list[Result]:
    rows = settings.size(100_000, 1_000_000)
    rng = random.Random(settings.seed)
    results = []

    lake, _ = _lake(settings, "fold1pct", rows)
    try:
        ids = rng.sample(range(1, rows + 1), rows // 100)
        lake.execute_batch(
            [("UPDATE orders SET status = 'returned', total = total + 1 WHERE id = ?", (i,)) for i in ids]
        )
        lake.sync_now()
        lake.flush()
        fold, whole, steps, report = _timed_compact(lake)
        changed = _changed_rows(lake, ids)
    finally:
        lake.close()
    merge = _merge_limit(settings, rows, changed)
    label = f"{rows // 1_000_000}M" if rows >= 1_000_000 else f"{rows // 1000}K"
    results.append(
        Result(
            "compaction",
            f"fold 1% changes into a {label}-row history",
            fold,
            "s",
            merge,
            fold / merge,
            "<= 1 s; <= 3x the merge",
            fold <= 1.0 and fold / merge <= 3,
            False,
            {"report": report, "compact_seconds": whole, "steps": steps},
        )
    )
    results.append(
        Result(
            "compaction",
            f"whole compact() after 1% changes, {label} rows",
            whole,
            "s",
            merge,
            whole / merge,
            "",
            None,
            False,
            {"steps": steps},
        )
    )

    lake, _ = _lake(settings, "fold200", rows)
    try:
        touched: list[int] = []
        for _ in range(200):
            batch = rng.sample(range(1, rows + 1), 10)
            touched.extend(batch)
            lake.execute_batch([("UPDATE orders SET qty = qty + 1 WHERE id = ?", (i,)) for i in batch])
            lake.sync_now()
        fold, whole, steps, report = _timed_compact(lake)
        changed = _changed_rows(lake, sorted(set(touched)))
    finally:
        lake.close()
    merge = _merge_limit(settings, rows, changed)
    results.append(
        Result(
            "compaction",
            "fold after 200 small syncs",
            fold,
            "s",
            merge,
            fold / merge,
            "<= 3x the merge",
            fold / merge <= 3,
            False,
            {"report": report, "compact_seconds": whole, "steps": steps},
        )
    )
    results.append(
        Result(
            "compaction",
            "whole compact() after 200 small syncs",
            whole,
            "s",
            merge,
            whole / merge,
            "",
            None,
            False,
            {"steps": steps},
        )
    )
    return results
