"""A demo shop application: it writes orders and customers to a SQLite database, knowing nothing of rhei_lake.

    python shop_app.py /data/shop.db                  # forever, about 20 changes a second
    python shop_app.py shop.db --changes 500 --rate 0 # 500 changes as fast as possible, then exit

Every row has an ``updated_at`` (UTC, ISO 8601) that each change moves forward, and orders are
cancelled by setting ``deleted_at`` (a soft delete); a few customers are deleted outright (a hard
delete). Only the standard library is used, so it runs in any Python image.
"""

from __future__ import annotations

import argparse
import random
import signal
import sqlite3
import time
from datetime import UTC, datetime

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, status TEXT NOT NULL, total REAL NOT NULL,
    updated_at TEXT NOT NULL, deleted_at TEXT);
"""
NAMES = ["ada", "grace", "linus", "barbara", "ken", "margaret", "edsger", "frances", "donald", "radia"]
CITIES = ["Lisbon", "Oslo", "Kyoto", "Lagos", "Lima", "Perth"]
STATUSES = ["placed", "paid", "shipped", "delivered"]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def change(conn: sqlite3.Connection, rng: random.Random) -> None:
    """One transaction: a new order, a status change, a cancellation, a new or deleted customer."""
    roll = rng.random()
    with conn:
        customers = conn.execute("SELECT count(*), max(id) FROM customers").fetchone()
        if customers[0] < 5 or roll < 0.1:
            conn.execute(
                "INSERT INTO customers (name, city, updated_at) VALUES (?, ?, ?)",
                (rng.choice(NAMES), rng.choice(CITIES), now()),
            )
        elif roll < 0.55:
            customer = rng.randint(1, customers[1])
            conn.execute(
                "INSERT INTO orders (customer_id, status, total, updated_at) VALUES (?, 'placed', ?, ?)",
                (customer, round(rng.uniform(5, 500), 2), now()),
            )
        elif roll < 0.9:
            conn.execute(
                "UPDATE orders SET status = ?, updated_at = ? WHERE id = "
                "(SELECT id FROM orders WHERE deleted_at IS NULL ORDER BY random() LIMIT 1)",
                (rng.choice(STATUSES[1:]), now()),
            )
        elif roll < 0.97:
            stamp = now()
            conn.execute(
                "UPDATE orders SET deleted_at = ?, updated_at = ? WHERE id = "
                "(SELECT id FROM orders WHERE deleted_at IS NULL ORDER BY random() LIMIT 1)",
                (stamp, stamp),
            )
        else:
            conn.execute("DELETE FROM customers WHERE id = (SELECT min(id) FROM customers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="the SQLite database file (created if missing)")
    parser.add_argument("--rate", type=float, default=20.0, help="changes per second (0: as fast as possible)")
    parser.add_argument("--changes", type=int, default=0, help="stop after this many changes (0: never)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    conn = sqlite3.connect(args.db, isolation_level=None, timeout=30)
    conn.isolation_level = ""  # transactions opened by `with conn`
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    rng = random.Random(args.seed)
    running = True

    def stop(*_args: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    done = 0
    print(f"shop: writing to {args.db}", flush=True)
    while running and (args.changes == 0 or done < args.changes):
        change(conn, rng)
        done += 1
        if done % 500 == 0:
            print(f"shop: {done} changes", flush=True)
        if args.rate > 0:
            time.sleep(1 / args.rate)
    conn.close()
    print(f"shop: stopped after {done} changes", flush=True)


if __name__ == "__main__":
    main()
