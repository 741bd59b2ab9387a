"""Quoting SQL identifiers and string literals (SQLite, PostgreSQL and DataFusion agree on both)."""

from __future__ import annotations

from rhei_lake.errors import SchemaError


def quote_ident(name: str) -> str:
    """Quote an SQL identifier for SQLite (and PostgreSQL/DataFusion): ``"a""b"``."""
    if "\x00" in name:
        raise SchemaError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string literal: ``'it''s'``."""
    if "\x00" in value:
        raise SchemaError(f"value {value!r} contains a NUL character")
    return "'" + value.replace("'", "''") + "'"
