"""The OLTP route: reads answered by SQLite itself, typed exactly like the lake's answers.

Reads run on a small pool of read connections. The database is in WAL mode, so
each read sees every committed write (read-your-writes) without blocking the
writer. Every read connection has ``PRAGMA query_only`` and a read-only
authorizer, so no statement sent through ``query()`` can change the database.

Values are converted to Arrow with the table's declared types
(:func:`~rhei_lake.capture.events.convert_columns`), so a point read returns
the same schema as the same query answered by the lake.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from rhei_lake._shared.identifiers import quote_ident
from rhei_lake._shared.sqlite_db import connect, translate_sqlite_error
from rhei_lake._shared.sqlite_guard import Refusal, read_only
from rhei_lake.capture.events import convert_columns
from rhei_lake.capture.types import ValueMismatch, describe_value, to_arrow
from rhei_lake.catalog import TableSpec
from rhei_lake.errors import (
    LakeClosedError,
    QueryError,
    RheiError,
    SourceUnavailableError,
    TypeMismatchError,
    WriteRefusedError,
)
from rhei_lake.query.router import PointRead

_MAX_IDLE = 4


class OltpReader:
    """Answers OLTP-routed queries from the SQLite database at ``path``."""

    def __init__(self, path: str, *, max_idle: int = _MAX_IDLE) -> None:
        self.path = path
        self._max_idle = max_idle
        self._idle: list[tuple[sqlite3.Connection, Refusal]] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- connections -------------------------------------------------------
    def _open(self) -> tuple[sqlite3.Connection, Refusal]:
        conn = connect(self.path, create=False)
        conn.execute("PRAGMA query_only = ON")
        refusal = Refusal()
        conn.set_authorizer(read_only(refusal))
        return conn, refusal

    @contextmanager
    def _connection(self) -> Iterator[tuple[sqlite3.Connection, Refusal]]:
        with self._lock:
            if self._closed:
                raise LakeClosedError("this lake is closed")
            pooled = self._idle.pop() if self._idle else None
        pooled = pooled or self._open()
        try:
            yield pooled
        finally:
            with self._lock:
                keep = not self._closed and len(self._idle) < self._max_idle
                if keep:
                    self._idle.append(pooled)
            if not keep:
                pooled[0].close()

    @contextmanager
    def _borrowed(self, conn: sqlite3.Connection) -> Iterator[tuple[sqlite3.Connection, Refusal]]:
        """The caller's write connection, read-only for the duration (sees its open transaction)."""
        refusal = Refusal()
        conn.set_authorizer(read_only(refusal))
        try:
            yield conn, refusal
        finally:
            conn.set_authorizer(None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    # -- reads -------------------------------------------------------------
    def read_point(self, plan: PointRead, spec: TableSpec, *, conn: sqlite3.Connection | None = None) -> pa.Table:
        """Run a point read; the result has the lake's Arrow types for ``spec``."""
        sql, params = point_read_sql(plan, spec)
        rows = self._run(sql, params, conn)[1]
        columns: list[Sequence[Any]] = list(zip(*rows)) if rows else [[] for _ in spec.columns]
        try:
            arrays = convert_columns(spec, columns)
        except TypeMismatchError as exc:
            raise TypeMismatchError(
                f"table {spec.name!r}, column {exc.column!r}, row {exc.primary_key}: SQLite holds a value that "
                "does not fit the column's declared type (the lake refuses it too); fix the value",
                table=spec.name,
                column=exc.column,
                primary_key=exc.primary_key,
            ) from None
        index = {name: i for i, name in enumerate(spec.column_names)}
        fields = [pa.field(o.name, spec.column(o.column).arrow_type) for o in plan.outputs]
        return pa.Table.from_arrays([arrays[index[o.column]] for o in plan.outputs], schema=pa.schema(fields))

    def read_sql(
        self,
        sql: str,
        column_types: Sequence[pa.DataType | None] | None,
        *,
        conn: sqlite3.Connection | None = None,
    ) -> pa.Table:
        """Run a user's SELECT verbatim (``hint='oltp'``); plain columns of a mirrored table get its types."""
        names, rows = self._run(sql, (), conn)
        columns = list(zip(*rows)) if rows else [() for _ in names]
        if column_types is not None and len(column_types) != len(names):
            column_types = None
        arrays = []
        for i, name in enumerate(names):
            dtype = column_types[i] if column_types is not None else None
            arrays.append(_typed(name, list(columns[i]), dtype))
        return pa.Table.from_arrays(arrays, names=names)

    def _run(self, sql: str, params: Sequence[Any], conn: sqlite3.Connection | None) -> tuple[list[str], list[tuple]]:
        context = self._borrowed(conn) if conn is not None else self._connection()
        with context as (connection, refusal):
            try:
                cursor = connection.execute(sql, params)
                names = [d[0] for d in cursor.description or ()]
                return names, cursor.fetchall()
            except (sqlite3.Error, sqlite3.Warning) as exc:
                raise _translate(exc, refusal, sql, self.path) from exc


def point_read_sql(plan: PointRead, spec: TableSpec) -> tuple[str, list[Any]]:
    """The SQLite statement of a point read, literals bound as parameters.

    Text compares and sorts with ``COLLATE BINARY`` (byte order, as DataFusion
    does) whatever collation the column declares.
    """
    strings = {c.name for c in spec.columns if pa.types.is_string(c.arrow_type)}

    def ref(column: str) -> str:
        return quote_ident(column) + (" COLLATE BINARY" if column in strings else "")

    cols = ", ".join(quote_ident(c) for c in spec.column_names)
    sql = f"SELECT {cols} FROM {quote_ident(spec.name)}"
    params: list[Any] = []
    terms = []
    for pred in plan.predicates:
        if len(pred.values) == 1:
            terms.append(f"{ref(pred.column)} = ?")
        else:
            terms.append(f"{ref(pred.column)} IN ({', '.join('?' * len(pred.values))})")
        params.extend(pred.values)
    if terms:
        sql += " WHERE " + " AND ".join(terms)
    if plan.order:
        sql += " ORDER BY " + ", ".join(ref(c) + (" DESC" if desc else "") for c, desc in plan.order)
    if plan.limit is not None or plan.offset is not None:
        sql += " LIMIT ? OFFSET ?"
        params.extend([plan.limit if plan.limit is not None else -1, plan.offset or 0])
    return sql, params


def _typed(name: str, values: list[Any], dtype: pa.DataType | None) -> pa.Array:
    if dtype is not None:
        try:
            return to_arrow(values, dtype)
        except ValueMismatch as bad:
            raise QueryError(
                f"column {name!r}: SQLite returned {describe_value(bad.value)}, which does not fit {dtype} ({bad.reason})"
            ) from None
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        raise QueryError(
            f"column {name!r} mixes SQLite types, so it has no single Arrow type; "
            "CAST it in the SQL or let the lake answer (hint='olap')"
        ) from None


def _translate(exc: BaseException, refusal: Refusal, sql: str, path: str) -> RheiError:
    refused = refusal.take()
    if refused is not None:
        return refused
    text = str(exc)
    low = text.lower()
    if "readonly" in low or "read-only" in low:
        return WriteRefusedError(f"query() is read-only; run writes with execute() ({text})")
    translated = translate_sqlite_error(exc, path)
    if isinstance(translated, SourceUnavailableError):
        return translated
    snippet = " ".join(sql.split())
    if len(snippet) > 200:
        snippet = snippet[:197] + "..."
    return QueryError(f"SQLite: {text} (in: {snippet})")
