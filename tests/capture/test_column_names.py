"""SQLite reads name a mirrored table's columns qualified by the table.

SQLite reads a double-quoted name that resolves to no column as a string literal: a read
built from a description of the table that a column has since left (dropped or renamed by
another connection between the description and the read) would put the column's name in
every row instead of failing.
"""

from __future__ import annotations

import sqlite3

import pytest

from rhei_lake.capture.key_repair import _holds
from rhei_lake.capture.reconcile_log import table_rows
from rhei_lake.capture.sqlite_schema import read_table_spec


@pytest.fixture
def described(tmp_path):
    """A connection, and the spec of ``items`` read before its column ``name`` was renamed."""
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')")
    spec = read_table_spec(conn, "items")
    yield conn, spec
    conn.close()


@pytest.mark.parametrize("change", ["ALTER TABLE items DROP COLUMN name", "ALTER TABLE items RENAME COLUMN name TO n"])
def test_a_whole_table_read_of_a_column_gone_fails_instead_of_reading_its_name(described, change):
    conn, spec = described
    assert table_rows(conn, spec).column("name").to_pylist() == ["a", "b"]
    conn.execute(change)
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        table_rows(conn, spec)


def test_a_key_lookup_of_a_key_column_renamed_fails_instead_of_matching_its_name(tmp_path):
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    conn.execute("CREATE TABLE items (k TEXT PRIMARY KEY, v INTEGER)")
    conn.execute("INSERT INTO items VALUES ('k', 1)")  # the key's value is the key column's own name
    spec = read_table_spec(conn, "items")
    assert _holds(conn, spec, ["k"])
    conn.execute("ALTER TABLE items RENAME COLUMN k TO key")
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        _holds(conn, spec, ["k"])
    conn.close()
