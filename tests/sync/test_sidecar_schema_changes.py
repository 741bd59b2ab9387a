"""A SQLite sidecar against random writes and schema changes made by the application, SQLite the oracle.

A polled table's columns are fixed when the lake opens. After every sync the lake's rows equal SQLite's
on those columns (REAL compared by its bits), whatever was added, rebuilt or written meanwhile; a change
that takes a column the lake reads away (dropped, renamed) stops the sync with a SchemaError and leaves
the lake as it was; reopening the lake after either, or after a rebuild that reorders the columns, is
refused (a polled table's columns are fixed, in their order, when it is first synced). The first
sync reads the table whole through the reader started at open
(``columnar_min_rows=1``) or row by row (``0``): both must agree with SQLite.
"""

from __future__ import annotations

import sqlite3
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest

import rhei_lake
from rhei_lake.capture.reader_process import fast_reader_available
from rhei_lake.errors import SchemaError

MIRRORED = ("id", "name", "price", "updated_at")
DDL = "CREATE TABLE {} (id INTEGER PRIMARY KEY, name TEXT, price REAL, updated_at INTEGER NOT NULL, deleted_at TEXT)"
PRICES = st.one_of(st.none(), st.floats(allow_nan=False), st.sampled_from([0.0, -0.0, 0.1 + 0.2, 1e308, 5e-324]))
NAMES = st.one_of(st.none(), st.text(max_size=4))
KEYS = st.integers(0, 7)

OPS = st.one_of(
    st.tuples(st.just("upsert"), KEYS, NAMES, PRICES),
    st.tuples(st.just("soft delete"), KEYS),
    st.tuples(st.just("undelete"), KEYS),
    st.tuples(st.just("hard delete"), KEYS),
    st.tuples(st.just("add column"), st.sampled_from(["extra", "note"])),
    st.tuples(st.just("rebuild"), st.booleans()),  # copy into a new table and rename it over (reordered or not)
    st.tuples(st.just("take a column"), st.sampled_from(["DROP COLUMN name", "RENAME COLUMN price TO cost"])),
    st.tuples(st.just("sync")),
    st.tuples(st.just("reopen")),
)


class Source:
    """The application's side: its connection and clock."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(DDL.format("items"))
        self.clock = 1_000
        self.taken = False  # a column the lake reads was dropped or renamed
        self.added = False  # a column the lake does not read was added
        self.reordered = False  # the table was rebuilt with its columns in another order

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def apply(self, op: tuple) -> None:
        kind = op[0]
        c = self.conn
        if kind == "upsert" and not self.taken:
            _, key, name, price = op
            c.execute(
                "INSERT INTO items (id, name, price, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET name = excluded.name, price = excluded.price, updated_at = excluded.updated_at",
                (key, name, price, self.tick()),
            )
        elif kind == "soft delete":
            c.execute("UPDATE items SET deleted_at = 'x', updated_at = ? WHERE id = ?", (self.tick(), op[1]))
        elif kind == "undelete":
            c.execute(
                "UPDATE items SET deleted_at = NULL, updated_at = ? WHERE id = ? AND deleted_at IS NOT NULL",
                (self.tick(), op[1]),
            )
        elif kind == "hard delete":
            c.execute("DELETE FROM items WHERE id = ?", (op[1],))
        elif kind == "add column":
            columns = [row[1] for row in c.execute("PRAGMA table_info(items)")]
            if op[1] not in columns:
                self.added = True
                c.execute(f"ALTER TABLE items ADD COLUMN {op[1]} TEXT DEFAULT 'd'")
        elif kind == "rebuild" and not self.taken:
            reordered = op[1]
            self.reordered, self.added = reordered, False  # the new table has the original columns only
            c.execute("BEGIN")
            if reordered:
                c.execute(
                    "CREATE TABLE items_new (deleted_at TEXT, updated_at INTEGER NOT NULL, price REAL, name TEXT, "
                    "id INTEGER PRIMARY KEY)"
                )
            else:
                c.execute(DDL.format("items_new"))
            c.execute(
                "INSERT INTO items_new (id, name, price, updated_at, deleted_at) "
                "SELECT id, name, price, updated_at, deleted_at FROM items"
            )
            c.execute("DROP TABLE items")
            c.execute("ALTER TABLE items_new RENAME TO items")
            c.execute("COMMIT")
        elif kind == "take a column" and not self.taken:
            c.execute(f"ALTER TABLE items {op[1]}")
            self.taken = True

    def live(self) -> list[tuple]:
        rows = self.conn.execute(f"SELECT {', '.join(MIRRORED)} FROM items WHERE deleted_at IS NULL ORDER BY id")
        return [_bits(row) for row in rows]


def _bits(row) -> tuple:
    return tuple(struct.pack("<d", v) if isinstance(v, float) else v for v in row)


def _lake_rows(lake: rhei_lake.Lake) -> list[tuple]:
    rows = lake.query(f"SELECT {', '.join(MIRRORED)} FROM items ORDER BY id").to_pylist()
    return [_bits(tuple(row[c] for c in MIRRORED)) for row in rows]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.lists(st.tuples(st.just("upsert"), KEYS, NAMES, PRICES), max_size=6),
    ops=st.lists(OPS, max_size=14),
    columnar=st.booleans() if fast_reader_available() else st.just(False),
)
def test_the_lake_equals_sqlite_on_its_columns_or_stops_when_one_is_taken(tmp_path_factory, before, ops, columnar):
    where = tmp_path_factory.mktemp("sidecar")
    source = Source(str(where / "app.db"))
    for op in before:
        source.apply(op)
    table = rhei_lake.PolledTable("items", updated_at="updated_at", deleted_at="deleted_at", hard_deletes=True)

    def reopen() -> rhei_lake.Lake:
        return rhei_lake.open(
            source=f"sqlite://{where / 'app.db'}",
            storage=str(where / "lake"),
            tables=[table],
            columnar_min_rows=1 if columnar else 0,
            hard_delete_interval=0,  # every sync also finds hard deletes
        )

    lake = reopen()
    try:
        last: list[tuple] | None = None
        for op in [*ops, ("sync",)]:
            if op[0] == "reopen":
                lake.close()
                if source.taken or source.added or source.reordered:
                    with pytest.raises(SchemaError, match="mirror it to a new storage location"):
                        lake = reopen()
                    lake = rhei_lake.open(storage=str(where / "lake"))  # read only: what the lake holds
                    if last is not None:
                        assert _lake_rows(lake) == last
                    return
                lake = reopen()
                continue
            if op[0] != "sync":
                source.apply(op)
                continue
            if source.taken:
                try:
                    lake.sync_now()
                except SchemaError as exc:
                    assert "no such column" in str(exc)
                else:
                    raise AssertionError("a sync read a table a column of which was dropped or renamed")
                if last is not None:
                    assert _lake_rows(lake) == last, "a refused sync changed the lake"
                return
            lake.sync_now()
            last = _lake_rows(lake)
            assert last == source.live()
    finally:
        lake.close()
        source.conn.close()
