"""SQLite as a bit-exact oracle: current state compared value by value (floats by their bits),
and the change feed replayed as a lake would apply it."""

from __future__ import annotations

import contextlib
import sqlite3
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import rhei_lake
from rhei_lake.capture.sqlite_schema import quote_ident


def exact(value: Any) -> tuple[str, Any]:
    """A value as a comparable token that tells ``0.0`` from ``-0.0`` and ``1`` from ``1.0``."""
    if isinstance(value, float):
        return ("float", struct.pack(">d", value))
    return (type(value).__name__, value)


def exact_rows(rows: Sequence[Sequence[Any]]) -> list[tuple]:
    return sorted(tuple(exact(v) for v in row) for row in rows)


def sqlite_rows(conn: sqlite3.Connection, table: str) -> list[tuple]:
    return exact_rows(conn.execute(f"SELECT * FROM {quote_ident(table)}").fetchall())


def lake_rows(lake: rhei_lake.Lake, table: str) -> list[tuple]:
    result = lake.query(f"SELECT * FROM {quote_ident(table)}", hint="olap")
    return exact_rows([tuple(r.values()) for r in result.to_pylist()])


def assert_lake_is_sqlite(lake: rhei_lake.Lake, conn: sqlite3.Connection, table: str) -> None:
    """The lake's current ``table`` holds exactly SQLite's rows, bit for bit."""
    expected = sqlite_rows(conn, table)
    actual = lake_rows(lake, table)
    assert actual == expected, (
        f"{table}: missing from the lake {[r for r in expected if r not in actual][:5]}, "
        f"unexpected in the lake {[r for r in actual if r not in expected][:5]}"
    )


def feed(lake: rhei_lake.Lake, table: str) -> list[dict[str, Any]]:
    query = f"SELECT * FROM {quote_ident(table + '_changes')} ORDER BY _rhei_seq"
    return lake.query(query, hint="olap").to_pylist()


def replay_feed(lake: rhei_lake.Lake, table: str, key: Sequence[str]) -> list[tuple]:
    """Apply ``table``'s change feed in order; fail on a D or U of a key the lake does not hold.

    An I of a key the lake holds is allowed: a row replaced by one with the same
    key. Returns the rows the replay ends with (as :func:`exact_rows`).
    """
    live: dict[tuple, tuple] = {}
    for event in feed(lake, table):
        op, seq = event.pop("_rhei_op"), event.pop("_rhei_seq")
        event.pop("_rhei_ts")
        k = tuple(exact(event[c]) for c in key)
        if op in ("D", "U"):
            assert k in live, f"{table}: {op} (seq {seq}) of key {k}, which the lake does not hold: {event}"
        if op == "D":
            del live[k]
        else:
            live[k] = tuple(event.values())
    return exact_rows(list(live.values()))


@contextlib.contextmanager
def captured(
    directory: Path, *statements: str, tables: Sequence[str] = ("t",), types: Mapping[str, str] | None = None
) -> Iterator[tuple[str, sqlite3.Connection, rhei_lake.Lake]]:
    """An application database (``statements`` run first) mirrored by a lake on ``memory://``.

    Yields the database path, the application's own connection (autocommit,
    default settings) and the lake with ``tables`` registered (with ``types``).
    """
    db = str(directory / "app.db")
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as app:
        for statement in statements:
            app.execute(statement)
        with rhei_lake.open(oltp_path=db, storage="memory://") as lake:
            for table in tables:
                lake.register_table(table, types=types)
            yield db, app, lake
