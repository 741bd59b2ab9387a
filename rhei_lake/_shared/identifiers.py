"""Quoting SQL identifiers and string literals (SQLite, PostgreSQL and DataFusion agree on both)."""

from __future__ import annotations

from rhei_lake.errors import SchemaError


def quote_ident(name: str) -> str:
    """Quote an SQL identifier for SQLite (and PostgreSQL/DataFusion): ``"a""b"``."""
    if "\x00" in name:
        raise SchemaError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def column_of(table: str, column: str) -> str:
    """``"table"."column"``: how SQLite reads must name a column of a table they mirror.

    SQLite reads a double-quoted name that resolves to no column as a string
    literal, so a bare ``"column"`` dropped or renamed since the lake described
    the table would read as its own name in every row; a qualified one is an error.
    """
    return f"{quote_ident(table)}.{quote_ident(column)}"


def quote_literal(value: str) -> str:
    """Quote a string literal: ``'it''s'``."""
    if "\x00" in value:
        raise SchemaError(f"value {value!r} contains a NUL character")
    return "'" + value.replace("'", "''") + "'"
