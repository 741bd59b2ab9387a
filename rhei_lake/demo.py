"""``python -m rhei_lake.demo``: mirror a generated shop database into a local lake and query it.

Creates ``demo.db`` (SQLite) and ``demo-lake/`` (Delta) in the current
directory (or ``--dir``), starting fresh each run.
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

import rhei_lake

console = Console()

CUSTOMERS = ["ada", "grace", "linus", "barbara", "ken", "margaret", "edsger", "frances", "donald", "radia"]
STATUSES = ["placed", "paid", "shipped", "delivered", "returned"]


def _show(title: str, table) -> None:
    out = Table(title=title, title_justify="left", header_style="bold")
    for name in table.column_names:
        out.add_column(name)
    for row in table.to_pylist():
        out.add_row(*("NULL" if v is None else f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(out)


def run(directory: Path, orders: int, seed: int) -> None:
    rng = random.Random(seed)
    db = directory / "demo.db"
    lake_dir = directory / "demo-lake"
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.unlink(missing_ok=True)
    shutil.rmtree(lake_dir, ignore_errors=True)

    console.rule("[bold]rhei_lake demo")
    console.print(f"SQLite database: {db}\nLake:            {lake_dir}")
    with rhei_lake.open(oltp_path=str(db), storage=str(lake_dir)) as lake:
        lake.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL, "
            "total REAL NOT NULL, placed_at TIMESTAMP NOT NULL)"
        )
        started = time.perf_counter()
        now = datetime.now(UTC).replace(microsecond=0)
        rows = [
            (i, rng.choice(CUSTOMERS), rng.choice(STATUSES[:2]), round(rng.uniform(5, 500), 2), now.isoformat())
            for i in range(1, orders + 1)
        ]
        lake.execute("BEGIN")
        conn = lake._oltp  # bulk-load the existing rows before the table is mirrored
        assert conn is not None
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", rows)
        lake.execute("COMMIT")
        console.print(f"generated {orders:,} orders in {time.perf_counter() - started:.2f}s")

        started = time.perf_counter()
        spec = lake.register_table("orders")
        console.print(
            f"registered [bold]orders[/] (key {spec.primary_key}, {len(spec.columns)} columns): "
            f"initial snapshot committed in {time.perf_counter() - started:.2f}s"
        )

        lake.execute("BEGIN")
        for _ in range(orders // 10):
            order = rng.randint(1, orders)
            roll = rng.random()
            if roll < 0.7:
                lake.execute("UPDATE orders SET status = ? WHERE id = ?", (rng.choice(STATUSES[1:]), order))
            elif roll < 0.9:
                lake.execute("UPDATE orders SET total = round(total * 0.9, 2) WHERE id = ?", (order,))
            else:
                lake.execute("DELETE FROM orders WHERE id = ?", (order,))
        lake.execute("COMMIT")
        report = lake.sync_now()
        console.print(f"{report}")

        _show(
            "Revenue by customer (current state)",
            lake.query(
                "SELECT customer, count(*) AS orders, sum(total) AS revenue FROM orders "
                "GROUP BY customer ORDER BY revenue DESC LIMIT 5"
            ),
        )
        _show("Orders by status", lake.query("SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY n DESC"))
        _show(
            "The change feed",
            lake.query("SELECT _rhei_op AS op, count(*) AS events FROM orders_changes GROUP BY _rhei_op ORDER BY op"),
        )
        _show(
            "Versions of one order",
            lake.query(
                "SELECT id, status, total, _rhei_valid_from, _rhei_valid_to FROM orders_history "
                "WHERE id = (SELECT id FROM orders_changes WHERE _rhei_op = 'U' ORDER BY _rhei_seq LIMIT 1) "
                "ORDER BY _rhei_seq"
            ),
        )
    with rhei_lake.open(storage=str(lake_dir)) as reopened:
        count = reopened.query("SELECT count(*) AS n FROM orders").column(0)[0].as_py()
        console.print(f"reopened {lake_dir} from its URL alone: {count:,} current orders")
    console.rule("done")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where to create demo.db and demo-lake/")
    parser.add_argument("--orders", type=int, default=50_000, help="orders to generate")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    run(args.dir, args.orders, args.seed)


if __name__ == "__main__":
    main()
