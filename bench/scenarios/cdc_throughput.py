"""Trigger CDC sync throughput: 100K events in the log, one sync_now().

Limit: an ADBC read of the same log rows plus one append to a Delta table.
Target: >= 300K events/s (Rhei: 141K). Measured warm (the reader process
started by an earlier big backlog), and the cold first sync is reported too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import rhei_lake
from bench.core import Result, Settings, timer, trigger_sync
from bench.data import ORDERS_DDL, add_orders


def _limit(db: Path, target: Path) -> float:
    import adbc_driver_sqlite.dbapi as adbc
    from deltalake import write_deltalake

    shutil.rmtree(target, ignore_errors=True)
    with timer() as elapsed:
        with adbc.connect(str(db)) as conn, conn.cursor() as cur:
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "65536"})
            cur.execute("SELECT * FROM _rhei_cdc_log WHERE op <> 'S'")
            table = cur.fetch_arrow_table()
        write_deltalake(str(target), table)
    return table.num_rows / elapsed()


def run(settings: Settings) -> list[Result]:
    events = 100_000
    db = settings.workdir / "cdc.db"
    lake_dir = settings.workdir / "cdc-lake"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(lake_dir, ignore_errors=True)
    lake = rhei_lake.open(oltp_path=str(db), storage=str(lake_dir))
    try:
        lake.execute(ORDERS_DDL)
        lake.register_table("orders")
        oltp, sync = lake._oltp, trigger_sync(lake)
        assert oltp is not None  # opened with oltp_path
        rates = []
        for round_ in range(3):
            add_orders(oltp, 1 + round_ * events, events)
            if round_ == 2:  # the limit reads the same 100K log rows
                sync.wait_idle(60)
                limit = _limit(db, settings.workdir / "cdc-limit")
            with timer() as elapsed:
                report = lake.sync_now()
            rates.append(report.events / elapsed())
            sync.wait_idle(60)
    finally:
        lake.close()
    warm = rates[-1]
    return [
        Result(
            "CDC sync throughput",
            "100K events, warm",
            warm,
            "events/s",
            limit,
            warm / limit,
            ">= 300K events/s",
            warm >= 300_000,
            True,
            {"cold_first_sync": rates[0], "rounds": rates},
        ),
    ]
