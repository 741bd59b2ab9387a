"""The query scenarios on both engines, side by side, and DuckDB against its own ``delta_scan``.

One lake (orders, 1% of the keys updated twice, an instant between), opened
twice read-only: ``engine="datafusion"`` and ``engine="duckdb"``. Each query
(GROUP BY, filter, point lookup on ``t``, ``t_history``, ``t_changes`` and
``as_of``), before and after compaction, gives DuckDB's time, the ratio
DuckDB / DataFusion, and the ratio of the DuckDB path to bare DuckDB
``delta_scan`` over Delta tables holding the same rows (target <= 1.5x after
compaction, as for DataFusion in :mod:`bench.scenarios.query`).
"""

from __future__ import annotations

import random
import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import rhei_lake
from bench.core import Result, Settings
from bench.data import create_orders
from bench.scenarios.query import _median, updated_orders

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

QUERIES = {
    "GROUP BY on t": "SELECT status, count(*) AS n, sum(total) AS s FROM {t} GROUP BY status ORDER BY status",
    "filter on t": "SELECT id, total FROM {t} WHERE qty > 8 AND status = 'paid'",
    "point lookup on t": "SELECT * FROM {t} WHERE id = {key}",
    "GROUP BY on t_history": "SELECT status, count(*) AS n FROM {h} GROUP BY status ORDER BY status",
    "point lookup on t_history": "SELECT * FROM {h} WHERE id = {key} ORDER BY _rhei_seq",
    "GROUP BY on t_changes": "SELECT _rhei_op, count(*) AS n FROM {c} GROUP BY _rhei_op ORDER BY _rhei_op",
}


def _bare_duckdb(lake_dir: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with the delta extension over the lake's own Delta tables: ``t``, ``t_history`` and ``t_changes``
    as DuckDB reads them once everything is folded (the outside views' SQL)."""
    import duckdb

    from rhei_lake.query.duckdb_session import extension_path

    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{extension_path('delta')}'")
    history, changes = lake_dir / "orders" / "history", lake_dir / "orders" / "changes"
    con.execute(f"CREATE VIEW plain_h AS SELECT * FROM delta_scan('{history}')")
    con.execute(f"CREATE VIEW plain_c AS SELECT * FROM delta_scan('{changes}')")
    con.execute(
        f"CREATE VIEW plain_t AS SELECT * EXCLUDE (_rhei_valid_from, _rhei_valid_to, _rhei_seq) "
        f"FROM delta_scan('{history}') WHERE _rhei_valid_to IS NULL"
    )
    return con


def _rounded(table: pa.Table) -> list[str]:
    """Rows to compare across engines: a float sum depends on the order of its terms."""

    def value(v: object) -> object:
        if isinstance(v, float):
            return float(f"{v:.9g}")
        return v.timestamp() if isinstance(v, datetime) else v  # the zone: DuckDB says Etc/UTC

    return sorted(repr({k: value(v) for k, v in r.items()}) for r in table.to_pylist())


def run(settings: Settings) -> list[Result]:
    rows = settings.size(100_000, 1_000_000)
    repeat = settings.size(5, 9)
    rng = random.Random(settings.seed)
    db = create_orders(settings.workdir / "engines.db", rows)
    lake_dir = settings.workdir / "engines-lake"
    shutil.rmtree(lake_dir, ignore_errors=True)
    with rhei_lake.open(oltp_path=str(db), storage=str(lake_dir)) as writer:
        key, instant = updated_orders(writer, rows, rng)
    results = []
    with (
        rhei_lake.open(storage=str(lake_dir)) as fusion,
        rhei_lake.open(storage=str(lake_dir), engine="duckdb", read_only=True) as duck,
    ):
        for phase in ("before compaction", "after compaction"):
            if phase == "after compaction":
                fusion.compact()
                duck.refresh()
            # Bare delta_scan reads the same rows only once every event is folded.
            bare = _bare_duckdb(lake_dir) if phase == "after compaction" else None
            for label, template in QUERIES.items():
                sql = template.format(t="orders", h="orders_history", c="orders_changes", key=key)
                assert _rounded(duck.query(sql)) == _rounded(fusion.query(sql)), f"the engines disagree on {sql}"
                df_time = _median(lambda: fusion.query(sql), repeat)
                dk_time = _median(lambda: duck.query(sql), repeat)
                results.append(
                    Result(
                        "query_engines",
                        f"{label}, {phase}: DuckDB / DataFusion",
                        dk_time * 1000,
                        "ms",
                        df_time * 1000,
                        dk_time / df_time,
                        "",
                        None,
                        False,
                    )
                )
                if bare is None:
                    continue
                plain_sql = template.format(t="plain_t", h="plain_h", c="plain_c", key=key)
                assert _rounded(bare.sql(plain_sql).to_arrow_table()) == _rounded(duck.query(sql)), plain_sql
                bare_time = _median(lambda: bare.sql(plain_sql).to_arrow_table(), repeat)
                results.append(
                    Result(
                        "query_engines",
                        f"{label}, {phase}: DuckDB path / bare delta_scan",
                        dk_time * 1000,
                        "ms",
                        bare_time * 1000,
                        dk_time / bare_time,
                        "<= 1.5x",
                        dk_time / bare_time <= 1.5,
                        False,
                    )
                )
            sql = "SELECT status, count(*) AS n FROM orders GROUP BY status"
            df_time = _median(lambda: fusion.query(sql, as_of=instant), repeat)
            dk_time = _median(lambda: duck.query(sql, as_of=instant), repeat)
            results.append(
                Result(
                    "query_engines",
                    f"as_of GROUP BY, {phase}: DuckDB / DataFusion",
                    dk_time * 1000,
                    "ms",
                    df_time * 1000,
                    dk_time / df_time,
                    "",
                    None,
                    False,
                )
            )
            if bare is not None:
                bare.close()
    return results
