"""SQLite authorizers: what a connection may do, checked by SQLite itself when it prepares a statement.

An authorizer sees every action a statement would take (read a column, begin a
transaction, alter a table) before anything runs, so a refusal leaves nothing
half-done and no SQL has to be parsed by us to find out what it does.

* :func:`read_only`: SELECT, column reads, functions and recursive CTEs only.
  The OLTP read path runs user SQL under it (on top of ``PRAGMA query_only``).
* :func:`write_guard`: everything, except altering a mirrored table (its
  triggers and lake schema would silently drift: use ``add_column`` /
  ``drop_column``), dropping one outside a batch (a rebuild's ``DROP TABLE``
  belongs in :meth:`~rhei_lake.Lake.execute_batch`, whose end judges the
  result) and, inside a batch, ending or opening the batch's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection

from rhei_lake.errors import RheiError, SchemaError, SourceError, WriteRefusedError

Authorizer = Callable[[int, str | None, str | None, str | None, str | None], int]

_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
BATCH_SAVEPOINT = "_rhei_batch"


class Refusal:
    """Remembers why the last action was denied, so the error can say it plainly."""

    def __init__(self) -> None:
        self.error: RheiError | None = None

    def deny(self, error: RheiError) -> int:
        self.error = error
        return sqlite3.SQLITE_DENY

    def take(self) -> RheiError | None:
        error, self.error = self.error, None
        return error


def read_only(refusal: Refusal) -> Authorizer:
    """Allow reads only."""

    def authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        return refusal.deny(WriteRefusedError("query() is read-only; run writes with execute()"))

    return authorize


def write_guard(
    refusal: Refusal, mirrored: Collection[str], *, in_batch: bool, dropped: set[str] | None = None
) -> Authorizer:
    """Allow everything but ALTER TABLE on a mirrored table, DROP TABLE of one outside a batch
    (and transaction control in a batch). ``dropped`` collects the mirrored tables a batch drops."""
    lowered = {name.lower(): name for name in mirrored}

    def authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if action == sqlite3.SQLITE_ALTER_TABLE and (arg2 or "").lower() in lowered:
            return refusal.deny(
                SchemaError(
                    f"table {arg2!r} is mirrored: change its columns with add_column()/drop_column() so its "
                    "triggers and lake schema follow (renaming it or its columns is not supported)"
                )
            )
        if action == sqlite3.SQLITE_DROP_TABLE and (arg1 or "").lower() in lowered and in_batch:
            if dropped is not None:
                dropped.add(lowered[(arg1 or "").lower()])
        elif action == sqlite3.SQLITE_DROP_TABLE and (arg1 or "").lower() in lowered:
            return refusal.deny(
                SchemaError(
                    f"table {arg1!r} is mirrored: dropping it would end its capture. To rebuild it (create a new "
                    "table, copy the rows, drop the old one, rename the new one), run those statements in one "
                    f"execute_batch(): a rebuild that keeps the primary key is followed. To stop mirroring it, "
                    f"unregister_table({arg1!r}) first"
                )
            )
        if in_batch and action == sqlite3.SQLITE_TRANSACTION:
            return refusal.deny(SourceError(f"{arg1} inside execute_batch(): the batch is already one transaction"))
        if in_batch and action == sqlite3.SQLITE_SAVEPOINT and (arg2 or "").lower() == BATCH_SAVEPOINT:
            return refusal.deny(SourceError(f"savepoint {BATCH_SAVEPOINT!r} belongs to execute_batch()"))
        return sqlite3.SQLITE_OK

    return authorize


def may_change_schema(sql: str) -> bool:
    """Whether ``sql`` could be an ALTER or DROP statement (a cheap pre-check before installing the guard)."""
    low = sql.lower()
    return "alter" in low or "drop" in low
