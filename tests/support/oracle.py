"""SQLite as the oracle: compare what the lake answers with what the database holds."""

from __future__ import annotations

import math
import sqlite3
import struct
import weakref
from pathlib import Path
from typing import Any

import rhei_lake
from rhei_lake.capture.sqlite_schema import quote_ident


_ORACLES: weakref.WeakKeyDictionary[rhei_lake.Lake, sqlite3.Connection] = weakref.WeakKeyDictionary()


def oltp_oracle(lake: rhei_lake.Lake) -> sqlite3.Connection:
    """A read-only connection of the test's own to the SQLite database an HTAP lake owns.

    The oracle reads the database directly, as another process would, never
    through the lake: it sees what is committed there. One per lake, closed when
    the lake object is gone.
    """
    if lake.config.oltp_path is None:
        raise ValueError("oltp_oracle needs a lake opened with oltp_path=")
    conn = _ORACLES.get(lake)
    if conn is None:
        uri = Path(lake.config.oltp_path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        _ORACLES[lake] = conn
        weakref.finalize(lake, conn.close)
    return conn


def _sort_key(row: tuple) -> tuple:
    return tuple((v is None, type(v).__name__, v) for v in row)


def sqlite_state(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table`` as SQLite holds it, sorted."""
    rows = conn.execute(f"SELECT * FROM {quote_ident(table)}").fetchall()
    return sorted(rows, key=_sort_key)


def lake_state(lake: rhei_lake.Lake, table: str, **query_options: Any) -> list[tuple[Any, ...]]:
    """Every row of the lake's ``table`` view, sorted."""
    result = lake.query(f"SELECT * FROM {quote_ident(table)}", **query_options)
    return sorted((tuple(r.values()) for r in result.to_pylist()), key=_sort_key)


class ExactFloat(float):
    """A float equal only to a float with the same bits (``-0.0`` is not ``0.0``), shown with them.

    An integer equals it when it is exactly that number (SQLite's ``7`` in a column the lake
    mirrors as float64 is the lake's ``7.0``).
    """

    def __eq__(self, other: object) -> bool:
        if isinstance(other, float):
            return struct.pack("<d", self) == struct.pack("<d", other)
        if isinstance(other, int) and not isinstance(other, bool):
            value = float(self)
            return value == other and math.copysign(1.0, value) > 0 if value == 0 else value == other
        return False

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return float.__hash__(self)

    def __repr__(self) -> str:
        return f"{float(self)!r}[{struct.pack('<d', self).hex()}]"


def exact_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` with every float compared by its bits (see :class:`ExactFloat`)."""
    return [tuple(ExactFloat(v) if isinstance(v, float) else v for v in row) for row in rows]


def assert_same_state(lake: rhei_lake.Lake, conn: sqlite3.Connection, table: str) -> None:
    """The lake's current ``table`` equals the SQLite table exactly (floats bit for bit)."""
    expected = exact_rows(sqlite_state(conn, table))
    actual = exact_rows(lake_state(lake, table))
    if expected != actual:
        missing = [r for r in expected if r not in actual][:5]
        extra = [r for r in actual if r not in expected][:5]
        raise AssertionError(
            f"{table}: lake has {len(actual)} rows, SQLite {len(expected)}; "
            f"missing from lake {missing}, unexpected in lake {extra}"
        )
