"""Benchmark data, generated inside SQLite (10M rows in seconds, no Python per row)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

ORDERS_DDL = (
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL, "
    "total REAL NOT NULL, qty INTEGER NOT NULL, placed_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
)

_FILL = """
WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n WHERE i < {stop})
INSERT INTO orders
SELECT i,
       'customer-' || (i % 9973),
       CASE i % 5 WHEN 0 THEN 'placed' WHEN 1 THEN 'paid' WHEN 2 THEN 'shipped' WHEN 3 THEN 'delivered' ELSE 'returned' END,
       (abs(random()) % 10000000) / 100.0,
       abs(random()) % 50,
       strftime('%Y-%m-%d %H:%M:%S', 1700000000 + i, 'unixepoch'),
       strftime('%Y-%m-%dT%H:%M:%fZ', 1700000000 + i / 1000.0, 'unixepoch')
FROM n
"""


def create_orders(path: Path, rows: int, *, first_id: int = 1) -> Path:
    """A fresh SQLite file (WAL) with ``rows`` orders."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(ORDERS_DDL)
    add_orders(conn, first_id, rows)
    conn.close()
    return path


def add_orders(conn: sqlite3.Connection, first_id: int, rows: int) -> None:
    """Insert ``rows`` orders with ids from ``first_id``, in chunks of one transaction each."""
    chunk = 1_000_000
    for start in range(first_id, first_id + rows, chunk):
        stop = min(first_id + rows - 1, start + chunk - 1)
        conn.execute("BEGIN")
        conn.execute(_FILL.format(start=start, stop=stop))
        conn.execute("COMMIT")
