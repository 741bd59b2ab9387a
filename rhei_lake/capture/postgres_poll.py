"""Polling capture from PostgreSQL (psycopg 3), read-only.

Streams use server-side cursors inside one read-only transaction, so a table
of any size is read in bounded batches from one consistent snapshot. Columns
are typed by ``pg_catalog`` (see ``postgres_types.py``).
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rhei_lake.capture.events import sql_literal
from rhei_lake.capture.poll_cursor import PollCursor
from rhei_lake.capture.polled_source import (
    ChangeRead,
    PollPlan,
    check_polled_columns,
    fetch_batches,
    polled_spec_options,
)
from rhei_lake.capture.polled_table import PolledTable
from rhei_lake.capture.postgres_db import connect, translate_postgres_error
from rhei_lake.capture.postgres_first_read import PostgresFirstRead, adbc_postgres_available
from rhei_lake.capture.postgres_types import pg_arrow_type, select_expression
from rhei_lake.capture.source_url import SourceLocation
from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.capture.types import make_column
from rhei_lake.catalog import Column, TableSpec, validate_table_name
from rhei_lake.errors import SchemaError, SourceError

log = logging.getLogger("rhei_lake.capture")

SOURCE_KIND = "postgresql-poll"
_FETCH_CHUNK = 500
_TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "citext", "name"})
_TABLE_KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}

_RELATION_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind, has_table_privilege(c.oid, 'SELECT')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass(%s)
"""
_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_PRIMARY_KEY_SQL = """
SELECT a.attname
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisprimary
ORDER BY k.ord
"""


def _pg_ident(name: str) -> str:
    # psycopg reads % as a placeholder marker, also inside quoted identifiers.
    return quote_ident(name).replace("%", "%%")


class PostgresPolledSource:
    """A :class:`~rhei_lake.capture.polled_source.PolledSource` over PostgreSQL."""

    def __init__(self, location: SourceLocation) -> None:
        self.location = location
        self._lock = threading.RLock()
        self._conn = connect(location)
        self._streams = 0

    # -- connection ------------------------------------------------------
    def _connection(self):
        if self._conn.closed or self._conn.broken:
            self._conn = connect(self.location)
            self._streams = 0
        return self._conn

    def _end(self) -> None:
        """End the read-only transaction unless a stream still reads in it."""
        if self._streams == 0 and not self._conn.closed:
            try:
                self._conn.rollback()
            except Exception:  # a broken connection is replaced on next use
                pass

    def _error(self, exc: BaseException, where: str) -> SourceError:
        return translate_postgres_error(exc, self.location, where=where)

    def _query(self, sql: str, params: Sequence[Any], where: str) -> list[tuple]:
        import psycopg

        with self._lock:
            try:
                with self._connection().cursor() as cur:
                    cur.execute(sql, params)
                    return cur.fetchall()
            except psycopg.Error as exc:
                raise self._error(exc, where) from exc
            finally:
                self._end()

    # -- schema ----------------------------------------------------------
    def describe(self, table: PolledTable) -> PollPlan:
        validate_table_name(table.name)
        qualified = quote_ident(table.name)
        if table.source_schema:
            qualified = f"{quote_ident(table.source_schema)}.{qualified}"
        where = f"table {table.name!r}"
        found = self._query(_RELATION_SQL, (qualified,), where)
        if not found:
            place = f"schema {table.source_schema!r}" if table.source_schema else "the search_path"
            raise SchemaError(f"{self.location.masked}: table {table.name!r} does not exist in {place}")
        oid, schema, relname, relkind, readable = found[0]
        if relkind not in _TABLE_KINDS:
            raise SchemaError(
                f"{self.location.masked}: {schema}.{relname} is not a table or view (relkind {relkind!r})"
            )
        if not readable:
            raise SourceError(
                f"{self.location.masked}: permission denied for table {schema}.{relname}; "
                "GRANT SELECT on it to the sidecar's role"
            )
        columns, bases = self._columns(oid, relname, table)
        primary_key = table.primary_key or tuple(r[0] for r in self._query(_PRIMARY_KEY_SQL, (oid,), where))
        names = [c.name for c in columns]
        for key in primary_key:
            if key not in names:
                raise SchemaError(
                    f"{self.location.masked}: table {relname!r} has no column {key!r} (named in primary_key); "
                    f"its columns are {names}"
                )
        if not primary_key:
            raise SchemaError(
                f"{self.location.masked}: table {relname!r} declares no primary key; "
                "name the columns that identify a row with PolledTable(..., primary_key=[...])"
            )
        spec = TableSpec(
            name=table.name,
            columns=tuple(columns),
            primary_key=tuple(primary_key),
            source=SOURCE_KIND,
            options=polled_spec_options(table, self.location),
        )
        check_polled_columns(spec, table, self.location.masked)
        relation = f"{_pg_ident(schema)}.{_pg_ident(relname)}"
        declared = {c.name: c.declared_type for c in columns}
        arrow = {c.name: c.arrow_type for c in columns}
        order_terms = {}
        if bases[table.updated_at] in _TEXT_TYPES:
            # Text compares by collation, not as the instant it spells ('…01 11:00' < '…01T10:00'):
            # compare the instant (naive text is UTC: the session's zone). No index serves this.
            ident = _pg_ident(table.updated_at)
            order_terms[table.updated_at] = (f"({ident}::timestamptz)", "(%s::text::timestamptz)")
            log.warning(
                "table %r: updated_at column %r is %s; polls compare it as timestamptz, which no index on "
                "it serves (each poll reads the table). Declare it timestamptz to poll by index",
                relname,
                table.updated_at,
                declared[table.updated_at],
            )
        return PollPlan(
            spec=spec,
            table=table,
            relation=relation,
            select={c.name: select_expression(_pg_ident(c.name), bases[c.name], c.arrow_type) for c in columns},
            placeholder=lambda column: f"%s::{declared[column]}",
            byte_order=lambda column: _byte_order(column, arrow[column]),
            quote=_pg_ident,
            literal=functools.partial(sql_literal, postgres=True),
            order_terms=order_terms,
        )

    def _columns(self, oid: int, relname: str, table: PolledTable) -> tuple[list[Column], dict[str, str]]:
        """The columns, and each one's base type name (``pg_type.typname``)."""
        overrides = dict(table.types)
        columns = []
        bases: dict[str, str] = {}
        for name, declared, not_null, base, typmod in self._query(_COLUMNS_SQL, (oid,), f"table {relname!r}"):
            if name in overrides:
                column = make_column(name, overrides.pop(name), table=relname, not_null=bool(not_null))
                column = Column(name, declared, column.arrow_type, column.nullable)
            else:
                column = Column(name, declared, pg_arrow_type(base, int(typmod)), nullable=not not_null)
            columns.append(column)
            bases[name] = base
        if overrides:
            raise SchemaError(f"table {relname!r}: types= names unknown columns {sorted(overrides)}")
        return columns, bases

    # -- reads -----------------------------------------------------------
    def _stream(self, sql: str, params: Sequence[Any], batch_rows: int, where: str) -> Iterator[list[tuple]]:
        import psycopg

        with self._lock:
            conn = self._connection()
            self._streams += 1
        name = f"rhei_{uuid.uuid4().hex[:12]}"
        try:
            with conn.cursor(name=name, binary=True) as cur:
                cur.itersize = batch_rows
                cur.execute(sql, params)

                def fetchmany(size: int) -> list:
                    with self._lock:
                        return cur.fetchmany(size)

                yield from fetch_batches(fetchmany, batch_rows)
        except psycopg.Error as exc:
            raise self._error(exc, where) from exc
        finally:
            with self._lock:
                self._streams -= 1
                self._end()

    def read_changes(
        self, plan: PollPlan, cursor: PollCursor | None, batch_rows: int, unordered_since: int | None = None
    ) -> ChangeRead:
        # PostgreSQL orders updated_at by instant (typed columns natively, text ones cast): no row
        # sorts before the cursor unless it is older.
        sql, params = plan.changes_sql(cursor)
        return ChangeRead(self._stream(sql, params, batch_rows, f"reading table {plan.spec.name!r}"))

    def count_changes(self, plan: PollPlan, cursor: PollCursor | None) -> int:
        sql, params = plan.count_sql(cursor)
        return int(self._query(sql, params, f"counting table {plan.spec.name!r}")[0][0])

    def prepare_first_read(self, plan: PollPlan, min_rows: int, *, lake_holds_none: Callable[[], bool]) -> None:
        """Nothing to start ahead: the first read's ADBC driver runs in this process."""

    def first_read(self, plan: PollPlan, min_rows: int) -> PostgresFirstRead | None:
        if min_rows <= 0 or not adbc_postgres_available():
            return None
        import psycopg

        conn = connect(self.location)
        try:
            first = PostgresFirstRead(conn, plan, min_rows, self.location)  # closes conn if it fails
            if not first.big:
                first.close()
                return None
            first.start(self.location.url)
            return first
        except Exception as exc:
            # The row poll reads any table; if it cannot either, it raises the error that says why.
            # An ADBC message may echo the URL, so only its kind is logged.
            why = str(self._error(exc, "columnar read")) if isinstance(exc, psycopg.Error) else type(exc).__name__
            log.warning(
                "table %r: the columnar first read is unavailable (%s); reading row by row", plan.spec.name, why
            )
            return None

    def scan_keys(self, plan: PollPlan, cursor: PollCursor | None, batch_rows: int) -> Iterator[list[tuple]]:
        sql, params = plan.key_scan_sql(cursor)
        return self._stream(sql, params, batch_rows, f"scanning keys of {plan.spec.name!r}")

    def commit_counter(self) -> None:
        return None

    def fetch(self, plan: PollPlan, keys: Sequence[tuple]) -> list[tuple]:
        out: list[tuple] = []
        for start in range(0, len(keys), _FETCH_CHUNK):
            chunk = keys[start : start + _FETCH_CHUNK]
            params = [v for key in chunk for v in key]
            out.extend(self._query(plan.fetch_sql(len(chunk)), params, f"reading rows of {plan.spec.name!r}"))
        return out

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except Exception:
                pass


def _byte_order(column: str, arrow_type) -> str:
    import pyarrow as pa

    ident = _pg_ident(column)
    if pa.types.is_string(arrow_type):
        return f'{ident}::text COLLATE "C"'
    return ident
