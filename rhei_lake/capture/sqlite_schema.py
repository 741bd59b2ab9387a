"""Read a SQLite table's declared columns and primary key into a :class:`TableSpec`."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from rhei_lake._shared.identifiers import column_of as column_of
from rhei_lake._shared.identifiers import quote_ident as quote_ident
from rhei_lake._shared.identifiers import quote_literal as quote_literal
from rhei_lake.capture.types import make_column
from rhei_lake.catalog import TableSpec, validate_table_name
from rhei_lake.errors import SchemaError


def canonical_table_name(conn: sqlite3.Connection, name: str) -> str:
    """The table's name as created (SQLite names are case-insensitive); SchemaError if absent."""
    validate_table_name(name)
    row = conn.execute(
        "SELECT name, type, sql FROM sqlite_master WHERE name = ? COLLATE NOCASE AND type IN ('table', 'view')",
        (name,),
    ).fetchone()
    if row is None:
        raise SchemaError(f"table {name!r} does not exist in the SQLite database")
    canonical, kind, sql = row
    if kind == "view":
        raise SchemaError(f"{canonical!r} is a view; only tables can be mirrored")
    if sql and sql.lstrip().upper().startswith("CREATE VIRTUAL"):
        raise SchemaError(f"{canonical!r} is a virtual table; only ordinary tables can be mirrored")
    return canonical


def has_rows(conn: sqlite3.Connection, table: str, rows: int) -> bool:
    """Whether ``table`` holds at least ``rows`` rows, found by stepping through that many at most.

    ``count(*)`` reads every page of the table: for deciding how to read a big
    one, its first ``rows`` rows say enough.
    """
    sql = f"SELECT count(*) FROM (SELECT 1 FROM {quote_ident(table)} NOT INDEXED LIMIT ?)"
    return conn.execute(sql, (rows,)).fetchone()[0] >= rows


def type_overrides(spec: TableSpec) -> dict[str, str]:
    """The ``types=`` a table was registered with: each column mirrored as another type than it declares."""
    return {c.name: c.declared_type for c in spec.columns if c.source_type is not None}


def read_table_spec(
    conn: sqlite3.Connection,
    name: str,
    *,
    types: Mapping[str, str] | None = None,
    source: str = "sqlite-trigger",
    source_id: str | None = None,
    primary_key: Sequence[str] | None = None,
) -> TableSpec:
    """Build the spec of table ``name`` from its declared schema.

    ``types`` overrides declared types by column name (for columns declared
    without a type, or to read a column differently); ``primary_key``
    overrides the declared key (a sidecar may follow a table without one).
    """
    canonical = canonical_table_name(conn, name)
    rows = conn.execute('SELECT name, type, "notnull", pk, hidden FROM pragma_table_xinfo(?)', (canonical,)).fetchall()
    overrides = dict(types or {})
    columns = []
    keyed: list[tuple[int, str]] = []
    for col_name, declared, not_null, pk, hidden in rows:
        if hidden == 1:  # hidden columns of virtual tables
            continue
        if col_name in overrides:
            column = make_column(
                col_name, overrides.pop(col_name), table=canonical, not_null=bool(not_null), source_type=declared
            )
        else:
            column = make_column(col_name, declared, table=canonical, not_null=bool(not_null))
        columns.append(column)
        if pk:
            keyed.append((pk, col_name))
    if overrides:
        raise SchemaError(f"table {canonical!r}: types= names unknown columns {sorted(overrides)}")
    if primary_key is not None:
        names = [c.name for c in columns]
        for key in primary_key:
            if key not in names:
                raise SchemaError(
                    f"table {canonical!r} has no column {key!r} (named in primary_key); its columns are {names}"
                )
        keyed = list(enumerate(primary_key, 1))
    if not keyed:
        raise SchemaError(
            f"table {canonical!r} has no PRIMARY KEY; rhei_lake needs one to track rows. "
            "Add one (for example `id INTEGER PRIMARY KEY`) and register again"
        )
    primary_key = tuple(col for _, col in sorted(keyed))
    return TableSpec(
        name=canonical,
        columns=tuple(columns),
        primary_key=primary_key,
        source=source,
        source_id=source_id,
    )
