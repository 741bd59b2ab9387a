"""Initial sync of a big SQLite table into a local Delta lake: trigger-mode snapshot and sidecar mode.

Limit: an ADBC read of the same rows plus one ``write_deltalake``. Target:
>= 0.8x the limit's rows/s, and peak RSS <= 1 GB at 10M rows. Each run is a
fresh interpreter so its peak RSS is its own (reader processes included).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from bench.core import Result, Settings, run_isolated
from bench.data import create_orders


def measure_limit(db: str, lake: str) -> dict:
    import adbc_driver_sqlite.dbapi as adbc
    from deltalake import write_deltalake

    shutil.rmtree(lake, ignore_errors=True)
    started = time.perf_counter()
    with adbc.connect(db) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "65536"})
        cur.execute("SELECT * FROM orders")
        table = cur.fetch_arrow_table()
    write_deltalake(lake, table)
    return {"rows": table.num_rows, "seconds": time.perf_counter() - started}


def measure_trigger(db: str, lake: str) -> dict:
    import rhei_lake

    shutil.rmtree(lake, ignore_errors=True)
    with rhei_lake.open(oltp_path=db, storage=lake) as opened:
        started = time.perf_counter()
        spec = opened.register_table("orders")
        seconds = time.perf_counter() - started
        rows = opened.query("SELECT count(*) AS n FROM orders_changes").column(0)[0].as_py()
        opened._sync.source.unregister(spec.name)  # leave the file as it was for the next run
    return {"rows": rows, "seconds": seconds}


def measure_sidecar(db: str, lake: str) -> dict:
    import rhei_lake

    shutil.rmtree(lake, ignore_errors=True)
    table = rhei_lake.PolledTable("orders", primary_key=["id"], updated_at="updated_at")
    with rhei_lake.open(source=f"sqlite:///{db}", storage=lake, tables=[table]) as opened:
        started = time.perf_counter()
        report = opened.sync_now()
        seconds = time.perf_counter() - started
    return {"rows": report.events, "seconds": seconds}


def sizes(settings: Settings) -> list[int]:
    return [100_000] if settings.quick else [1_000_000, 10_000_000]


def run(settings: Settings) -> list[Result]:
    results = []
    for rows in sizes(settings):
        db = create_orders(settings.workdir / f"initial-{rows}.db", rows)
        lake = str(settings.workdir / f"initial-{rows}-lake")
        limit = run_isolated("bench.scenarios.initial_sync", "measure_limit", str(db), lake)
        limit_rate = limit["rows"] / limit["seconds"]
        label = f"{rows // 1_000_000}M" if rows >= 1_000_000 else f"{rows // 1000}K"
        for mode, function in (("trigger snapshot", "measure_trigger"), ("sidecar", "measure_sidecar")):
            got = run_isolated("bench.scenarios.initial_sync", function, str(db), lake)
            rate = got["rows"] / got["seconds"]
            rss_ok = got["peak_rss_mb"] <= 1024 if rows >= 10_000_000 else None
            results.append(
                Result("initial sync", f"{mode}, {label} rows", rate, "rows/s", limit_rate, rate / limit_rate,
                       ">= 0.8x limit" + ("; peak RSS <= 1 GB" if rows >= 10_000_000 else ""),
                       rate / limit_rate >= 0.8 and rss_ok is not False, True,
                       {"rows": got["rows"], "seconds": got["seconds"], "peak_rss_mb": got["peak_rss_mb"],
                        "limit_peak_rss_mb": limit["peak_rss_mb"]})
            )
        shutil.rmtree(lake, ignore_errors=True)
        Path(db).unlink(missing_ok=True)
    return results
