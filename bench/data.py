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


# Table shapes for the initial sync: (DDL columns, SELECT expressions over i). Random values come
# from SQLite's random(), so doubles have all their bits and text and blobs do not compress away.
_TEXT_CELL = "hex(randomblob({n}))"
SHAPES: dict[str, tuple[str, str]] = {
    "narrow": (
        "id INTEGER PRIMARY KEY, name TEXT, amount REAL, qty INTEGER",
        "i, 'item-' || (abs(random()) % 100000), random() / 9223372036854775807.0 * 1e6, abs(random()) % 1000",
    ),
    "wide text": (
        "id INTEGER PRIMARY KEY, title TEXT, body TEXT, author TEXT, email TEXT, url TEXT",
        "i, " + ", ".join(_TEXT_CELL.format(n=n) for n in (12, 80, 8, 12, 24)),  # ~270 characters per row
    ),
    "50 columns": (
        "id INTEGER PRIMARY KEY, " + ", ".join(f"c{k} {('INTEGER', 'REAL', 'TEXT')[k % 3]}" for k in range(1, 50)),
        "i, "
        + ", ".join(
            ("abs(random()) % 100000", "random() / 9223372036854775807.0 * 1e6", "'v' || (abs(random()) % 977)")[k % 3]
            for k in range(1, 50)
        ),
    ),
    "blobs": ("id INTEGER PRIMARY KEY, kind TEXT, data BLOB", "i, 'k' || (i % 7), randomblob(256)"),
}
POLLED_SUFFIX = "_polled"


def shape_table(shape: str) -> str:
    """The SQL name of a shape's table (its polled twin adds :data:`POLLED_SUFFIX`)."""
    return shape.replace(" ", "_").replace("50", "fifty")


def create_shape(path: Path, shape: str, rows: int) -> Path:
    """A fresh SQLite file (WAL) with ``rows`` rows of ``shape``, and its polled twin (``updated_at`` added)."""
    columns, values = SHAPES[shape]
    table = shape_table(shape)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"CREATE TABLE {table} ({columns})")
    conn.execute(f"CREATE TABLE {table}{POLLED_SUFFIX} ({columns}, updated_at INTEGER NOT NULL)")
    chunk = 500_000
    for start in range(1, rows + 1, chunk):
        stop = min(rows, start + chunk - 1)
        conn.execute("BEGIN")
        conn.execute(
            f"WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n WHERE i < {stop}) "
            f"INSERT INTO {table} SELECT {values} FROM n"
        )
        conn.execute(
            f"INSERT INTO {table}{POLLED_SUFFIX} SELECT *, 1700000000 + id / 1000 FROM {table} "
            "WHERE id BETWEEN ? AND ?",
            (start, stop),
        )
        conn.execute("COMMIT")
    conn.close()
    return path
