"""Change events a schema follow derived, kept in SQLite until the lake has them.

When rhei_lake follows a table that was rebuilt or altered behind its back, the
rows written while capture was blind become events by diffing the table against
the lake (:mod:`rhei_lake.sync.schema_follow`). Those events are stored here,
as Arrow IPC, in the same SQLite transaction that reinstalls the table's
triggers and reserves their sequence numbers in the CDC log; so either all of
it happened or none did. They are committed to the lake before any event
captured after them (the changelog's watermark drops any already there), then
deleted.

::

    _rhei_reconcile(first_seq INTEGER PRIMARY KEY, tbl, last_seq, events BLOB)
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import pyarrow as pa

from rhei_lake.capture.events import convert_columns
from rhei_lake.capture.reader_process import ReaderProcess
from rhei_lake.capture.sqlite_schema import column_of, quote_ident
from rhei_lake.capture.typed_select import NeedsDiagnosis, after_witness, convert, is_misfit_error, snapshot_sql
from rhei_lake.catalog import OP, SEQ, TIMESTAMP_TYPE, TableSpec, int_range
from rhei_lake.errors import SourceError

RECONCILE_TABLE = "_rhei_reconcile"
CHUNK_ROWS = 50_000
"""Events per stored chunk: bounds a row's size (SQLite's limit is 1 GB per value)."""


@dataclass(frozen=True)
class PendingEvents:
    """One stored chunk of derived events of one table, in sequence order."""

    table: str
    first_seq: int
    last_seq: int
    events: pa.Table


def table_rows(conn: sqlite3.Connection, spec: TableSpec, batch_rows: int = 50_000) -> pa.Table:
    """Every row of ``spec``'s table, converted to its Arrow schema (a value that does not fit raises)."""
    columns = ", ".join(column_of(spec.name, c) for c in spec.column_names)
    cursor = conn.execute(f"SELECT {columns} FROM {quote_ident(spec.name)}")
    parts = []
    while rows := cursor.fetchmany(batch_rows):
        parts.append(pa.Table.from_arrays(convert_columns(spec, list(zip(*rows))), schema=spec.schema))
    return pa.concat_tables(parts) if parts else spec.schema.empty_table()


def table_rows_columnar(reader: ReaderProcess, spec: TableSpec) -> pa.Table | None:
    """:func:`table_rows` through the ADBC reader process (an order of magnitude faster on big tables).

    ``None`` when a value may not fit its declared type: the row read then
    names it exactly. The reader sees the last committed state, which is the
    caller's while it holds the write lock and has written nothing.
    """
    sql, typed = snapshot_sql(spec)
    parts = []
    try:
        for raw in after_witness(reader.query(sql, batch_rows=65_536)):
            arrays, _ = convert(typed, raw)
            parts.append(pa.Table.from_arrays(arrays, schema=spec.schema))
    except NeedsDiagnosis:
        return None
    except SourceError as exc:
        if not is_misfit_error(exc):
            raise
        return None
    return pa.concat_tables(parts) if parts else spec.schema.empty_table()


def numbered(spec: TableSpec, derived: pa.Table, first_seq: int, ts_micros: int) -> pa.Table:
    """``derived`` (user columns + ``_rhei_op``) as change events numbered from ``first_seq``, all at ``ts_micros``."""
    n = derived.num_rows
    ts = pa.array([ts_micros] * n, pa.int64()).cast(TIMESTAMP_TYPE)
    columns = [derived.column(c.name) for c in spec.columns]
    return pa.Table.from_arrays([*columns, int_range(first_seq, n), derived.column(OP), ts], schema=spec.changes_schema)


def store(conn: sqlite3.Connection, table: str, events: pa.Table) -> None:
    """Keep ``events`` (sorted by ``_rhei_seq``) until they are committed (inside the caller's transaction)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {RECONCILE_TABLE} "
        "(first_seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, last_seq INTEGER NOT NULL, events BLOB NOT NULL)"
    )
    for offset in range(0, events.num_rows, CHUNK_ROWS):
        chunk = events.slice(offset, CHUNK_ROWS)
        seqs = chunk.column(SEQ)
        conn.execute(
            f"INSERT INTO {RECONCILE_TABLE} (first_seq, tbl, last_seq, events) VALUES (?, ?, ?, ?)",
            (seqs[0].as_py(), table, seqs[-1].as_py(), _to_ipc(chunk)),
        )


def pending(conn: sqlite3.Connection) -> list[PendingEvents]:
    """Every stored chunk, in sequence order."""
    if not has_pending_table(conn):
        return []
    rows = conn.execute(f"SELECT tbl, first_seq, last_seq, events FROM {RECONCILE_TABLE} ORDER BY first_seq")
    return [PendingEvents(tbl, first, last, _from_ipc(blob)) for tbl, first, last, blob in rows]


def discard(conn: sqlite3.Connection, first_seqs: list[int]) -> None:
    """Delete committed chunks (inside the caller's transaction)."""
    conn.executemany(f"DELETE FROM {RECONCILE_TABLE} WHERE first_seq = ?", [(s,) for s in first_seqs])


def discard_table(conn: sqlite3.Connection, table: str) -> None:
    """Delete ``table``'s chunks (its capture ends, or a fresh snapshot supersedes them)."""
    if has_pending_table(conn):
        conn.execute(f"DELETE FROM {RECONCILE_TABLE} WHERE tbl = ?", (table,))


def has_pending_table(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (RECONCILE_TABLE,)).fetchone()
    return row is not None


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all()
