"""What engines that know nothing of rhei_lake read from a lake's Delta tables, for comparison with SQLite.

Each reader gets only the table's Delta URI and the store's options. Rows come
back as sorted tuples whose floats are replaced by their IEEE bits, so a
comparison with the oracle is exact (``-0.0`` is not ``0.0``).
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from rhei_lake.capture.sqlite_schema import quote_ident
from tests.support.oracle import _sort_key


def exact(rows: Iterable[Sequence[Any]]) -> list[tuple]:
    """Rows as sorted tuples, floats as their bits."""
    out = [tuple(("float", struct.pack("<d", v)) if isinstance(v, float) else v for v in row) for row in rows]
    return sorted(out, key=_sort_key)


def arrow_rows(table: pa.Table, columns: Sequence[str]) -> list[tuple]:
    return exact(zip(*(table.column(c).to_pylist() for c in columns), strict=True)) if table.num_rows else []


def sqlite_rows(conn: sqlite3.Connection, table: str, columns: Sequence[str]) -> list[tuple]:
    cols = ", ".join(quote_ident(c) for c in columns)
    return exact(conn.execute(f"SELECT {cols} FROM {quote_ident(table)}").fetchall())


def sqlite_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({quote_ident(table)})")]


def current_from_changes(changes: pa.Table, key: Sequence[str]) -> pa.Table:
    """The current rows a change feed describes: each key's last event, unless it is a delete."""
    if changes.num_rows == 0:
        return changes
    latest: dict[tuple, int] = {}
    keys = list(zip(*(changes.column(k).to_pylist() for k in key), strict=True))
    seqs = changes.column("_rhei_seq").to_pylist()
    for i, k in enumerate(keys):
        if k not in latest or seqs[i] > seqs[latest[k]]:
            latest[k] = i
    ops = changes.column("_rhei_op").to_pylist()
    keep = sorted(i for i in latest.values() if ops[i] != "D")
    return changes.take(pa.array(keep, pa.int64()))


def duckdb_current_sql(uri: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """DuckDB SQL for the current rows of a change feed (the same rule, in SQL)."""
    cols = ", ".join(quote_ident(c) for c in columns)
    keys = ", ".join(quote_ident(k) for k in key)
    return (
        f"SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY _rhei_seq DESC) AS rn "
        f"FROM delta_scan('{uri}')) WHERE rn = 1 AND _rhei_op <> 'D'"
    )


def deltalake_table(uri: str, options: Mapping[str, str] | None) -> pa.Table:
    from deltalake import DeltaTable

    return DeltaTable(uri, storage_options=dict(options) if options else None).to_pyarrow_table()


def table_uri(storage_url: str, table: str, kind: str) -> str:
    """The Delta URI of one of a table's tables (plain table names only)."""
    return f"{storage_url.rstrip('/')}/{table}/{kind}"
