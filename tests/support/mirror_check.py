"""SQLite as the oracle, comparing floats by their bits, at every instant a test marked."""

from __future__ import annotations

import math
import sqlite3
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rhei_lake
from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.catalog import VALID_TO
from tests.reliability.crash_lab import assert_history_follows_changes
from tests.support.oracle import _sort_key


def by_bits(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` with every float replaced by its bits (so -0.0 differs from 0.0), sorted."""

    def value(v: Any) -> Any:
        if isinstance(v, float):
            return ("float", struct.pack("<d", v).hex(), "nan" if math.isnan(v) else v)
        return v

    return sorted((tuple(value(v) for v in row) for row in rows), key=_sort_key)


def sqlite_rows(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return by_bits(conn.execute(f"SELECT * FROM {quote_ident(table)}").fetchall())


def lake_rows(lake: rhei_lake.Lake, table: str, **options: Any) -> list[tuple[Any, ...]]:
    result = lake.query(f"SELECT * FROM {quote_ident(table)}", hint="olap", **options)
    return by_bits([tuple(r.values()) for r in result.to_pylist()])


@dataclass(frozen=True)
class Mark:
    """SQLite's rows at an instant, and which incarnation of each column the lake mirrored then."""

    instant: datetime
    columns: list[tuple[str, int]]  # (name, valid_from_seq)
    rows: list[tuple[Any, ...]]

    def expected(self, now: list[tuple[str, int]]) -> list[tuple[Any, ...]]:
        """The rows as the views show them today: today's columns, NULL in those mirrored only since."""
        where = {column: i for i, column in enumerate(self.columns)}
        return by_bits([tuple(row[where[c]] if c in where else None for c in now) for row in self.rows])


@dataclass
class MirrorCheck:
    """Marks instants with SQLite's state, then checks the lake's current rows, ``as_of`` reads and history."""

    lake: rhei_lake.Lake
    conn: sqlite3.Connection
    table: str
    marks: list[Mark] = field(default_factory=list)

    def _columns(self) -> list[tuple[str, int]]:
        return [(c.name, c.valid_from_seq) for c in self.lake.table_spec(self.table).columns]

    def mark(self) -> None:
        """Record SQLite's state now (call right after a sync, when the lake claims that state)."""
        time.sleep(0.003)  # SQLite's clock has millisecond resolution
        names = [name for name, _ in self._columns()]
        rows = self.conn.execute(f"SELECT {', '.join(map(quote_ident, names))} FROM {quote_ident(self.table)}")
        self.marks.append(Mark(datetime.now(UTC), self._columns(), rows.fetchall()))
        time.sleep(0.003)

    def assert_current(self) -> None:
        assert lake_rows(self.lake, self.table) == sqlite_rows(self.conn, self.table)

    def assert_all(self, *, history: bool = True) -> None:
        """Current rows, every marked instant (``as_of``) and, in temporal mode, the history's integrity."""
        self.assert_current()
        if not history:
            return
        now = self._columns()
        for mark in self.marks:
            assert lake_rows(self.lake, self.table, as_of=mark.instant) == mark.expected(now), f"as_of {mark.instant}"
        assert_history_follows_changes(self.lake, self.table)
        key = ", ".join(quote_ident(k) for k in self.lake.table_spec(self.table).primary_key)
        doubled = self.lake.query(
            f"SELECT {key}, count(*) AS n FROM {quote_ident(self.table + '_history')} "
            f"WHERE {VALID_TO} IS NULL GROUP BY {key} HAVING count(*) > 1"
        )
        assert doubled.num_rows == 0, f"keys with two open versions: {doubled.to_pylist()[:5]}"
