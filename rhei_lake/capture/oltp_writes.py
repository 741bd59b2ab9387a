"""Writes to the SQLite database a lake owns: one statement, or a batch in one transaction.

Both run on the lake's single write connection (the caller holds its lock).
Mirrored tables cannot be altered here (see :mod:`rhei_lake.capture.sqlite_guard`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from rhei_lake.capture.sqlite_db import translate_sqlite_error
from rhei_lake.capture.sqlite_guard import BATCH_SAVEPOINT, Refusal, may_change_schema, write_guard
from rhei_lake.errors import ConfigError, RheiError

Params = Sequence[Any] | Mapping[str, Any]
Statement = str | tuple[str, Params]
"""One statement of a batch: SQL text, or ``(sql, params)``."""


_DEFERRED_BEGIN = re.compile(r"\s*BEGIN(\s+DEFERRED)?(\s+TRANSACTION)?\s*;?\s*$", re.IGNORECASE)
"""A ``BEGIN`` that takes no lock: :func:`execute` runs it as ``BEGIN IMMEDIATE``."""


def execute(
    conn: sqlite3.Connection,
    sql: str,
    params: Params,
    *,
    mirrored: Collection[str],
    path: str,
    returned: Callable[[list[str], list[tuple[Any, ...]]], None] | None = None,
) -> int:
    """Run one statement; returns the number of rows changed.

    ``returned(columns, rows)`` receives what the statement returned (a ``RETURNING``
    clause), when given and the statement returned columns.
    """
    refusal = Refusal()
    guarded = may_change_schema(sql)
    if guarded:
        conn.set_authorizer(write_guard(refusal, mirrored, in_batch=False))
    if _DEFERRED_BEGIN.match(sql):
        # The lake's background work (pruning the CDC log) writes from another connection: a deferred
        # transaction that read before it wrote would fail with SQLITE_BUSY_SNAPSHOT, without waiting.
        sql = "BEGIN IMMEDIATE"
    try:
        total = conn.total_changes
        cursor = conn.execute(sql, params)
        rows = cursor.fetchall()
        if returned is not None and cursor.description:
            returned([d[0] for d in cursor.description], rows)
        return rows_changed(conn, total)
    except sqlite3.Error as exc:
        raise _translate(exc, refusal, path) from exc
    finally:
        if guarded:
            conn.set_authorizer(None)


def execute_batch(
    conn: sqlite3.Connection,
    statements: Iterable[Statement],
    *,
    mirrored: Collection[str],
    path: str,
    check: Callable[[sqlite3.Connection, set[str]], None] | None = None,
) -> int:
    """Run ``statements`` in one transaction, all or nothing; returns the rows changed in total.

    Inside a transaction the caller opened, the batch is a savepoint of it.
    A failing statement rolls the whole batch back and the error names its
    position. Statements that would end or open the transaction are refused.
    ``check(conn, dropped)`` runs after the last statement, before the batch
    commits, with the mirrored tables the batch dropped (a rebuild); an error it
    raises rolls the batch back.
    """
    batch = [_normalize(i, s) for i, s in enumerate(statements)]
    refusal = Refusal()
    nested = conn.in_transaction
    try:
        conn.execute(f"SAVEPOINT {BATCH_SAVEPOINT}" if nested else "BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path) from exc
    changed = 0
    index = -1
    try:
        dropped: set[str] = set()
        conn.set_authorizer(write_guard(refusal, mirrored, in_batch=True, dropped=dropped))
        try:
            for index, (sql, params) in enumerate(batch):  # noqa: B007 - the except clause names the statement
                total = conn.total_changes
                conn.execute(sql, params).fetchall()
                changed += rows_changed(conn, total)
        finally:
            conn.set_authorizer(None)
        if check is not None:
            check(conn, dropped)
        conn.execute(f"RELEASE {BATCH_SAVEPOINT}" if nested else "COMMIT")
        return changed
    except BaseException as exc:
        _undo(conn, nested)
        if isinstance(exc, sqlite3.Error):
            error = _translate(exc, refusal, path)
            where = f"statement {index + 1} of {len(batch)}" if index >= 0 else "the batch"
            raise type(error)(f"execute_batch: {where} failed, nothing was applied: {error}") from exc
        raise


def rows_changed(conn: sqlite3.Connection, total_before: int) -> int:
    """Rows the statement just run inserted, updated or deleted itself (not its triggers).

    ``cursor.rowcount`` is -1 for a ``WITH ... INSERT`` (Python only counts
    statements that start with a DML keyword), and ``total_changes`` also counts
    the capture triggers' own inserts; SQLite's ``changes()`` is exact but keeps
    the last DML statement's count across statements that change nothing, so it
    is read only when something changed.
    """
    if conn.total_changes == total_before:
        return 0
    return conn.execute("SELECT changes()").fetchone()[0]


def _normalize(index: int, statement: Statement) -> tuple[str, Params]:
    if isinstance(statement, str):
        return statement, ()
    if isinstance(statement, tuple) and len(statement) == 2 and isinstance(statement[0], str):
        return statement[0], statement[1] if statement[1] is not None else ()
    raise ConfigError(
        f"execute_batch: statement {index + 1} must be SQL text or a (sql, params) pair, not {type(statement).__name__}"
    )


def _undo(conn: sqlite3.Connection, nested: bool) -> None:
    try:
        if nested:
            conn.execute(f"ROLLBACK TO {BATCH_SAVEPOINT}")
            conn.execute(f"RELEASE {BATCH_SAVEPOINT}")
        elif conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # SQLite already rolled back (e.g. after SQLITE_FULL)


def _translate(exc: sqlite3.Error, refusal: Refusal, path: str) -> RheiError:
    refused = refusal.take()
    return refused if refused is not None else translate_sqlite_error(exc, path)
