"""Polling capture from a SQLite file the engine does not own, opened read-only (``mode=ro``).

Each stream is one statement, so it reads one consistent snapshot. In WAL mode
(recommended) that never blocks the application's writers; in rollback-journal
mode a writer waits while a batch is being read.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from rhei_lake.capture.poll_cursor import PollCursor
from rhei_lake.capture.polled_source import (
    ChangeRead,
    PollPlan,
    check_polled_columns,
    fetch_batches,
    polled_spec_options,
)
from rhei_lake.capture.polled_table import PolledTable
from rhei_lake.capture.source_url import SourceLocation
from rhei_lake.capture.sqlite_db import connect, translate_sqlite_error
from rhei_lake.capture.spare_reader import SpareReader
from rhei_lake.capture.sqlite_first_read import SqliteFirstRead, open_first_read, wants_first_read
from rhei_lake.capture.sqlite_schema import canonical_table_name, column_of, quote_ident, read_table_spec
from rhei_lake.capture.updated_at_order import unordered_sql
from rhei_lake.errors import SchemaError, SourceError

SOURCE_KIND = "sqlite-poll"
_FETCH_CHUNK = 400  # keys per fetch statement (SQLite's parameter limit is far above)


class SqlitePolledSource:
    """A :class:`~rhei_lake.capture.polled_source.PolledSource` over a SQLite file."""

    def __init__(self, location: SourceLocation) -> None:
        assert location.path is not None
        self.location = location
        self.path = location.path
        self._lock = threading.RLock()
        self._spare: tuple[str, SpareReader] | None = None  # (table, the reader its first read takes)
        self._conn = connect(self.path, readonly=True)
        try:
            self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise translate_sqlite_error(exc, self.path) from exc

    def _error(self, exc: sqlite3.Error, plan: PollPlan | None = None) -> SourceError:
        where = f"{self.path}" + (f", table {plan.spec.name!r}" if plan else "")
        error = translate_sqlite_error(exc, where)
        if plan is not None and "no such column" in str(exc).lower():
            error = SchemaError(
                f"{error}: a column the lake reads was dropped or renamed since it opened; a polled table's "
                "columns are fixed when it is first synced, so reopening says what differs"
            )
        return error

    def describe(self, table: PolledTable) -> PollPlan:
        with self._lock:
            try:
                if table.primary_key is None:
                    canonical = canonical_table_name(self._conn, table.name)
                    declared = self._conn.execute(
                        "SELECT count(*) FROM pragma_table_xinfo(?) WHERE pk > 0", (canonical,)
                    ).fetchone()[0]
                    if not declared:
                        raise SchemaError(
                            f"{self.path}: table {canonical!r} declares no primary key; name the columns that "
                            "identify a row with PolledTable(..., primary_key=[...])"
                        )
                spec = read_table_spec(
                    self._conn,
                    table.name,
                    types=table.types,
                    source=SOURCE_KIND,
                    primary_key=table.primary_key,
                )
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        spec = replace(spec, options=polled_spec_options(table, self.location))
        check_polled_columns(spec, table, self.path)
        relation = quote_ident(spec.name)

        def refer(column: str) -> str:
            return column_of(spec.name, column)

        return PollPlan(
            spec=spec,
            table=table,
            relation=relation,
            select={c: refer(c) for c in spec.column_names},
            placeholder=lambda _column: "?",
            byte_order=lambda column: f"{refer(column)} COLLATE BINARY",
            refer=refer,
        )

    def _stream(self, plan: PollPlan, sql: str, params: tuple[Any, ...], batch_rows: int) -> Iterator[list[tuple]]:
        # A dedicated connection: the statement holds its read snapshot until the
        # generator is exhausted or closed, while this object keeps serving fetch().
        conn = connect(self.path, readonly=True)
        try:
            yield from fetch_batches(conn.execute(sql, params).fetchmany, batch_rows)
        except sqlite3.Error as exc:
            raise self._error(exc, plan) from exc
        finally:
            conn.close()

    def read_changes(
        self, plan: PollPlan, cursor: PollCursor | None, batch_rows: int, unordered_since: int | None = None
    ) -> ChangeRead:
        sql, params = plan.changes_sql(cursor)
        # A dedicated connection, in one read transaction: the unordered rows and the stream see
        # one snapshot, held until the read is closed, while this object keeps serving fetch().
        conn = connect(self.path, readonly=True)
        try:
            conn.execute("BEGIN")
            unordered: list[tuple] = []
            if cursor is not None and unordered_since is not None:
                query = unordered_sql(
                    plan.relation,
                    plan.refer(plan.table.updated_at),
                    [plan.select[k] for k in plan.key],
                    cursor.updated_at,
                    unordered_since,
                    plan.table.epoch_unit,
                )
                unordered = conn.execute(*query).fetchall()
            rows = conn.execute(sql, params)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc, plan) from exc
        return ChangeRead(self._batches(rows, plan, batch_rows), unordered, on_close=conn.close)

    def _batches(self, rows: sqlite3.Cursor, plan: PollPlan, batch_rows: int) -> Iterator[list[tuple]]:
        try:
            yield from fetch_batches(rows.fetchmany, batch_rows)
        except sqlite3.Error as exc:
            raise self._error(exc, plan) from exc

    def count_changes(self, plan: PollPlan, cursor: PollCursor | None) -> int:
        sql, params = plan.count_sql(cursor)
        with self._lock:
            try:
                return int(self._conn.execute(sql, params).fetchone()[0])
            except sqlite3.Error as exc:
                raise self._error(exc, plan) from exc

    def prepare_first_read(self, plan: PollPlan, min_rows: int, *, lake_holds_none: Callable[[], bool]) -> None:
        """Start the reader process of the table's first read now, when it will have one (one table at a time).

        Only a head start: what fails here (a busy database, no process to spare) is left to the
        first read, which meets it again and reports it.
        """
        with self._lock:
            if self._spare is not None:
                return
            try:
                if wants_first_read(self._conn, plan, min_rows) and lake_holds_none():
                    self._spare = (plan.spec.name, SpareReader(self.path, readonly=True))
            except (sqlite3.Error, SourceError):
                pass

    def first_read(self, plan: PollPlan, min_rows: int) -> SqliteFirstRead | None:
        with self._lock:
            spare = None
            if self._spare is not None and self._spare[0] == plan.spec.name:
                spare = self._spare[1]
                self._spare = None
            try:
                return open_first_read(self._conn, self.path, plan, min_rows, spare=spare)
            except sqlite3.Error as exc:
                raise self._error(exc, plan) from exc
            finally:
                if spare is not None:
                    spare.close()  # not taken (the read failed before it started): stopped here

    def scan_keys(self, plan: PollPlan, cursor: PollCursor | None, batch_rows: int) -> Iterator[list[tuple]]:
        sql, params = plan.key_scan_sql(cursor)
        return self._stream(plan, sql, params, batch_rows)

    def commit_counter(self) -> int:
        """SQLite's ``data_version``: it moves whenever another connection or process commits."""
        with self._lock:
            try:
                return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def fetch(self, plan: PollPlan, keys: Sequence[tuple]) -> list[tuple]:
        out: list[tuple] = []
        with self._lock:
            try:
                for start in range(0, len(keys), _FETCH_CHUNK):
                    chunk = keys[start : start + _FETCH_CHUNK]
                    params = [v for key in chunk for v in key]
                    out.extend(self._conn.execute(plan.fetch_sql(len(chunk)), params).fetchall())
            except sqlite3.Error as exc:
                raise self._error(exc, plan) from exc
        return out

    def close(self) -> None:
        with self._lock:
            if self._spare is not None:
                self._spare[1].close()
                self._spare = None
            self._conn.close()
