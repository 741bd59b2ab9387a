"""An external database for sidecar tests (a SQLite file or a PostgreSQL database), and a random workload.

The ``items`` table has the same shape on both: an integer key, three value
columns, ``updated_at`` (ISO text on SQLite, ``timestamptz`` on PostgreSQL) and
a soft-delete ``deleted_at``. :class:`SidecarWorkload` mutates it with a clock
that only moves forward and often stands still, so many rows share one
``updated_at``.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import rhei_lake
from tests.support.workload import random_double

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START = datetime(2026, 1, 1, tzinfo=UTC)

ITEMS_DDL = {
    "sqlite": (
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, qty INTEGER, "
        "updated_at TEXT NOT NULL, deleted_at TEXT)"
    ),
    "postgresql": (
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, price double precision, qty bigint, "
        "updated_at timestamptz NOT NULL, deleted_at timestamptz)"
    ),
}


def micros(dt: datetime) -> int:
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass
class SourceDB:
    """A source database the tests write to directly (the sidecar only reads it)."""

    kind: str
    url: str
    conn: Any

    def execute(self, sql: str, params: tuple = ()) -> None:
        if self.kind == "postgresql":
            sql = sql.replace("?", "%s")
        self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        if self.kind == "postgresql":
            with self.conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)
        else:
            self.conn.execute("BEGIN")
            self.conn.executemany(sql, rows)
            self.conn.execute("COMMIT")

    def query(self, sql: str) -> list[tuple]:
        return [tuple(r) for r in self.conn.execute(sql).fetchall()]

    def stamp(self, dt: datetime) -> Any:
        """How an instant is stored in ``updated_at``."""
        return dt.isoformat(timespec="microseconds").replace("+00:00", "Z") if self.kind == "sqlite" else dt

    def ts_micros(self, value: Any) -> int:
        if isinstance(value, str):
            return micros(datetime.fromisoformat(value))
        return micros(value)

    def live_items(self) -> dict[int, tuple]:
        """Rows of ``items`` that are not soft-deleted, by id, as the lake should show them."""
        rows = self.query("SELECT id, name, price, qty, updated_at, deleted_at FROM items WHERE deleted_at IS NULL")
        return {r[0]: r for r in rows}

    def close(self) -> None:
        self.conn.close()


def sqlite_source(path: str) -> SourceDB:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    return SourceDB("sqlite", f"sqlite://{path}", conn)


def postgres_source(server, database: str) -> SourceDB:
    return SourceDB("postgresql", server.url(database), server.connect(database))


def items_table(**options: Any) -> rhei_lake.PolledTable:
    return rhei_lake.PolledTable("items", updated_at="updated_at", deleted_at="deleted_at", **options)


class SidecarWorkload:
    """Random inserts, updates, soft deletes, undeletes and hard deletes of ``items``."""

    def __init__(self, source: SourceDB, seed: int, key_space: int = 40) -> None:
        self.source = source
        self.rng = random.Random(seed)
        self.key_space = key_space
        self.clock = START

    def tick(self) -> datetime:
        # Often the clock stands still: many rows then share one updated_at.
        if self.rng.random() < 0.5:
            self.clock += timedelta(microseconds=self.rng.choice([1, 7, 1000, 250_000, 3_000_000]))
        return self.clock

    def synced(self) -> None:
        """A sync happened: later writes get a later updated_at (as any application clock would give)."""
        self.clock += timedelta(microseconds=1)

    def _values(self) -> tuple:
        rng = self.rng
        name = None if rng.random() < 0.1 else "".join(rng.choice("abcdeñ漢'") for _ in range(rng.randint(0, 8)))
        price = None if rng.random() < 0.1 else random_double(rng)
        qty = None if rng.random() < 0.1 else rng.randint(-(2**63), 2**63 - 1)
        return name, price, qty

    def step(self) -> None:
        src, rng = self.source, self.rng
        key = rng.randint(1, self.key_space)
        now = src.stamp(self.tick())
        exists = src.query(f"SELECT deleted_at FROM items WHERE id = {key}")
        roll = rng.random()
        if not exists:
            src.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL)", (key, *self._values(), now))
        elif roll < 0.5:
            src.execute(
                "UPDATE items SET name = ?, price = ?, qty = ?, updated_at = ? WHERE id = ?",
                (*self._values(), now, key),
            )
        elif roll < 0.65:
            if exists[0][0] is None:
                src.execute("UPDATE items SET deleted_at = ?, updated_at = ? WHERE id = ?", (now, now, key))
            else:
                src.execute("UPDATE items SET deleted_at = NULL, updated_at = ? WHERE id = ?", (now, key))
        else:
            src.execute("DELETE FROM items WHERE id = ?", (key,))

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()
