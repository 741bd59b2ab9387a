"""Queries on the merge-on-read views against the same query on a plain Delta table of the same rows.

GROUP BY and point lookups on ``t``, ``t_history`` and ``as_of``, before and
after compaction. Target: merge-on-read overhead <= 1.5x (after compaction,
when the unfolded tail is small, as it is in normal operation).
"""

from __future__ import annotations

import random
import shutil
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import rhei_lake
from bench.core import Result, Settings, timer
from bench.data import create_orders

if TYPE_CHECKING:
    from datafusion import SessionContext

QUERIES = {
    "GROUP BY on t": "SELECT status, count(*) AS n, sum(total) AS s FROM {t} GROUP BY status ORDER BY status",
    "point lookup on t": "SELECT * FROM {t} WHERE id = {key}",
    "GROUP BY on t_history": "SELECT status, count(*) AS n FROM {h} GROUP BY status ORDER BY status",
    "point lookup on t_history": "SELECT * FROM {h} WHERE id = {key} ORDER BY _rhei_seq",
}


def _median(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        with timer() as elapsed:
            fn()
        times.append(elapsed())
    return statistics.median(times)


def _plain_context(lake: rhei_lake.Lake, settings: Settings) -> SessionContext:
    """A DataFusion session over plain Delta tables holding the same rows as ``orders`` and ``orders_history``."""
    from datafusion import SessionContext
    from deltalake import DeltaTable, write_deltalake

    ctx = SessionContext()
    for name, sql in (("plain_t", "SELECT * FROM orders"), ("plain_h", "SELECT * FROM orders_history")):
        path = settings.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        write_deltalake(str(path), lake.query(sql))
        ctx.register_table(name, DeltaTable(str(path)))
    return ctx


def updated_orders(lake: rhei_lake.Lake, rows: int, rng: random.Random) -> tuple[int, float]:
    """Mirror ``orders``, compact, update 1% of the keys, then half of those again; returns a key
    updated twice and an instant between the two updates."""
    lake.register_table("orders")
    lake.compact()
    ids = rng.sample(range(1, rows + 1), rows // 100)
    lake.execute_batch([("UPDATE orders SET status = 'paid' WHERE id = ?", (i,)) for i in ids])
    time.sleep(0.01)
    instant = time.time()
    time.sleep(0.01)
    lake.execute_batch([("UPDATE orders SET qty = qty + 1 WHERE id = ?", (i,)) for i in ids[: len(ids) // 2]])
    lake.sync_now()
    return ids[0], instant


def run(settings: Settings) -> list[Result]:
    rows = settings.size(100_000, 1_000_000)
    repeat = settings.size(5, 9)
    rng = random.Random(settings.seed)
    db = create_orders(settings.workdir / "query.db", rows)
    lake_dir = settings.workdir / "query-lake"
    shutil.rmtree(lake_dir, ignore_errors=True)
    results = []
    with rhei_lake.open(oltp_path=str(db), storage=str(lake_dir)) as lake:
        key, instant = updated_orders(lake, rows, rng)
        for phase in ("before compaction", "after compaction"):
            if phase == "after compaction":
                lake.compact()
            ctx = _plain_context(lake, settings)
            for label, template in QUERIES.items():
                ours = _median(
                    lambda: lake.query(template.format(t="orders", h="orders_history", key=key), hint="olap"), repeat
                )
                plain = _median(
                    lambda: ctx.sql(template.format(t="plain_t", h="plain_h", key=key)).to_arrow_table(), repeat
                )
                target = phase == "after compaction"
                results.append(
                    Result(
                        "query",
                        f"{label}, {phase}",
                        ours * 1000,
                        "ms",
                        plain * 1000,
                        ours / plain,
                        "<= 1.5x" if target else "",
                        ours / plain <= 1.5 if target else None,
                        False,
                    )
                )
            as_of = _median(
                lambda: lake.query("SELECT status, count(*) FROM orders GROUP BY status", as_of=instant), repeat
            )
            results.append(Result("query", f"as_of GROUP BY, {phase}", as_of * 1000, "ms", None, None, "", None, False))
    return results
