"""``python -m rhei_lake.demo``: mirror a generated shop database into a local lake, travel in time, restore.

Creates ``demo.db`` (SQLite) and its lake ``demo.db-lake/`` (Delta, where
``rh ... --db demo.db`` finds it) in the current directory (or ``--dir``),
starting fresh each run, plus ``demo-restored.db``, the shop as it was
before the second wave of changes.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import rhei_lake

console = Console()

CUSTOMERS = ["ada", "grace", "linus", "barbara", "ken", "margaret", "edsger", "frances", "donald", "radia"]
STATUSES = ["placed", "paid", "shipped", "delivered", "returned"]
PAUSE_SECONDS = 1.2
"""Between the waves of changes, so the history spans seconds and an instant between them is easy to name."""


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    return str(value)


def _show(title: str, table) -> None:
    console.print(f"\n{title}", style="bold", highlight=False)
    out = Table(header_style="bold")
    for name in table.column_names:
        out.add_column(name)
    for row in table.to_pylist():
        out.add_row(*(_text(v) for v in row.values()))
    console.print(out)


def _wave(lake: rhei_lake.Lake, rng: random.Random, orders: int, changes: int) -> int:
    """Status changes, discounts and cancellations in one transaction; returns the rows changed."""
    statements: list[tuple[str, tuple[Any, ...]]] = []
    for _ in range(changes):
        order = rng.randint(1, orders)
        roll = rng.random()
        if roll < 0.7:
            statements.append(("UPDATE orders SET status = ? WHERE id = ?", (rng.choice(STATUSES[1:]), order)))
        elif roll < 0.9:
            statements.append(("UPDATE orders SET total = round(total * 0.9, 2) WHERE id = ?", (order,)))
        else:
            statements.append(("DELETE FROM orders WHERE id = ?", (order,)))
    return lake.execute_batch(statements)


def run(directory: Path, orders: int, seed: int) -> None:
    rng = random.Random(seed)
    db = directory / "demo.db"
    lake_dir = directory / "demo.db-lake"
    restored = directory / "demo-restored.db"
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), restored):
        path.unlink(missing_ok=True)
    shutil.rmtree(lake_dir, ignore_errors=True)

    console.rule("[bold]rhei_lake demo")
    console.print(f"SQLite database: {db}\nLake:            {lake_dir}", highlight=False)
    with rhei_lake.open(oltp_path=str(db), storage=str(lake_dir)) as lake:
        lake.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL, "
            "total REAL NOT NULL, placed_at TIMESTAMP NOT NULL)"
        )
        started = time.perf_counter()
        now = datetime.now(UTC).replace(microsecond=0).isoformat()
        lake.execute_batch(
            (
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                (i, rng.choice(CUSTOMERS), rng.choice(STATUSES[:2]), round(rng.uniform(5, 500), 2), now),
            )
            for i in range(1, orders + 1)
        )
        console.print(f"generated {orders:,} orders in {time.perf_counter() - started:.2f} s", highlight=False)

        started = time.perf_counter()
        spec = lake.register_table("orders")
        console.print(
            f"registered orders (key {', '.join(spec.primary_key)}, {len(spec.columns)} columns): "
            f"first copy committed in {time.perf_counter() - started:.2f} s",
            highlight=False,
        )
        waves = []
        for number in (1, 2):
            time.sleep(PAUSE_SECONDS)
            changed = _wave(lake, rng, orders, orders // 10)
            report = lake.sync_now()
            waves.append(datetime.now(UTC))
            console.print(f"wave {number}: {changed:,} rows changed; {report}", highlight=False)
        between = waves[0]  # after the first wave was synced, before the second began

        _show(
            "Revenue by customer (current state)",
            lake.query(
                "SELECT customer, count(*) AS orders, sum(total) AS revenue FROM orders "
                "GROUP BY customer ORDER BY revenue DESC LIMIT 5"
            ),
        )
        status_sql = "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status"
        _show("Orders by status, now", lake.query(status_sql))
        _show(f"Orders by status, as of {_text(between)} (time travel)", lake.query(status_sql, as_of=between))
        _show(
            "The change feed",
            lake.query("SELECT _rhei_op AS op, count(*) AS events FROM orders_changes GROUP BY _rhei_op ORDER BY op"),
        )
        _show(
            "Versions of the order changed most often",
            lake.query(
                "SELECT id, status, total, _rhei_valid_from, _rhei_valid_to FROM orders_history WHERE id = "
                "(SELECT id FROM orders_changes WHERE _rhei_op = 'U' GROUP BY id ORDER BY count(*) DESC, id LIMIT 1) "
                "ORDER BY _rhei_seq"
            ),
        )
        expected = lake.query("SELECT count(*) AS n FROM orders", as_of=between).column(0)[0].as_py()
        restore = lake.restore_sqlite(restored, as_of=between)
    conn = sqlite3.connect(restored)
    try:
        count = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    finally:
        conn.close()
    console.print(
        f"restored {restored.name} as of {_text(between)}: {count:,} orders in SQLite "
        f"({'the same as' if count == expected else 'NOT the same as'} the lake's {expected:,} then), "
        f"in {restore.duration_seconds:.2f} s",
        highlight=False,
    )
    with rhei_lake.open(storage=str(lake_dir)) as reopened:
        current = reopened.query("SELECT count(*) AS n FROM orders").column(0)[0].as_py()
        console.print(f"reopened {lake_dir.name} from its URL alone: {current:,} current orders", highlight=False)
    _next_steps(db, between)
    console.rule("done")


def _next_steps(db: Path, instant: datetime) -> None:
    at = instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    shown = os.path.relpath(db) if not os.path.relpath(db).startswith("..") else str(db)
    where = shlex.quote(shown)
    console.print("\nTry next (rh finds demo.db's lake beside it):", style="bold")
    for line in (
        f"rh repl --db {where}",
        f'rh query --db {where} "SELECT status, count(*) AS n FROM orders GROUP BY status"',
        f'rh query --db {where} --as-of {at} "SELECT count(*) AS n FROM orders"',
        f"rh status --db {where}",
        f"rh exec --db {where} \"UPDATE orders SET status = 'paid' WHERE id = 1\"",
        f"rh restore --storage {shlex.quote(shown + '-lake')} --as-of {at} then.db",
    ):
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where to create demo.db and demo.db-lake/")
    parser.add_argument("--orders", type=int, default=50_000, help="orders to generate")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    run(args.dir, args.orders, args.seed)


if __name__ == "__main__":
    main()
