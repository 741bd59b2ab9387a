"""Polling capture: what a sidecar source offers, and the SQL it reads with.

A :class:`PolledSource` reads a table it does not own, never writing to it:

* :meth:`~PolledSource.read_changes` streams the rows after a
  :class:`~rhei_lake.capture.poll_cursor.PollCursor` in ``(updated_at, key)``
  order, in bounded batches, from one statement (one consistent snapshot, so
  no key appears twice in one stream), and on SQLite first, in the same
  snapshot, the rows that sort before the cursor although they may not be older
  than the time the poll has reached (:class:`ChangeRead`);
* :meth:`~PolledSource.scan_keys` streams every key in byte order with its
  ``updated_at`` and soft-delete value (for hard-delete detection);
* :meth:`~PolledSource.fetch` reads the current rows of given keys.

The SQL is shared by both dialects; only placeholders, collations and the
expression a column is selected with differ (see :class:`PollPlan`).
"""

from __future__ import annotations

import os

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from rhei_lake.capture.poll_cursor import PollCursor
from rhei_lake.capture.events import sql_literal
from rhei_lake.capture.polled_table import PolledTable
from rhei_lake.capture.source_url import SourceLocation
from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import TableSpec
from rhei_lake.errors import SchemaError, SourceError
from rhei_lake.phase_times import PhaseTimes


@dataclass(frozen=True)
class PollPlan:
    """How one polled table is read from one source dialect."""

    spec: TableSpec
    table: PolledTable
    relation: str  # the quoted (qualified) table name
    select: dict[str, str]  # column -> the expression it is selected with
    placeholder: Callable[[str], str]  # column -> a parameter placeholder typed like the column
    byte_order: Callable[[str], str]  # column -> an ORDER BY term sorting like Python compares its values
    quote: Callable[[str], str] = q  # identifier quoting of the dialect (for SQL shown to the user)
    # column -> how the read's SQL names it: SQLite's is qualified by the table, so that a column dropped
    # or renamed since the plan stops the read instead of reading as a string literal (its quoted name)
    refer: Callable[[str], str] = q
    literal: Callable[[Any], str] = sql_literal  # a value as an SQL literal of the dialect
    # column -> (expression, placeholder) the cursor compares and orders it by, where not the
    # column itself (a PostgreSQL text updated_at is compared as the instant it spells)
    order_terms: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, ...]:
        return self.spec.primary_key

    def _term(self, column: str) -> str:
        return self.order_terms[column][0] if column in self.order_terms else self.refer(column)

    def _param(self, column: str) -> str:
        return self.order_terms[column][1] if column in self.order_terms else self.placeholder(column)

    def _row_after(self, cursor: PollCursor) -> str:
        cols = ", ".join(self._term(c) for c in (self.table.updated_at, *self.key))
        params = ", ".join(self._param(c) for c in (self.table.updated_at, *self.key))
        return f"({cols}) > ({params})"

    def _columns(self) -> str:
        return ", ".join(f"{self.select[c]}" for c in self.spec.column_names)

    def changes_sql(self, cursor: PollCursor | None) -> tuple[str, tuple[Any, ...]]:
        """Rows after ``cursor`` in ``(updated_at, key)`` order."""
        order = ", ".join(self._term(c) for c in (self.table.updated_at, *self.key))
        where, params = ("", ()) if cursor is None else (f" WHERE {self._row_after(cursor)}", cursor.params)
        return f"SELECT {self._columns()} FROM {self.relation}{where} ORDER BY {order}", params

    def last_row_sql(self) -> str:
        """The ``(updated_at, *key)`` of the row :meth:`changes_sql` without a cursor would end on."""
        columns = (self.table.updated_at, *self.key)
        order = ", ".join(f"{self._term(c)} DESC" for c in columns)
        return f"SELECT {', '.join(self.select[c] for c in columns)} FROM {self.relation} ORDER BY {order} LIMIT 1"

    def count_sql(self, cursor: PollCursor | None) -> tuple[str, tuple[Any, ...]]:
        where, params = ("", ()) if cursor is None else (f" WHERE {self._row_after(cursor)}", cursor.params)
        return f"SELECT count(*) FROM {self.relation}{where}", params

    def key_scan_sql(self, cursor: PollCursor | None) -> tuple[str, tuple[Any, ...]]:
        """Every key in byte order, with its updated_at, soft-delete value and whether it is after ``cursor``."""
        keys = ", ".join(self.select[k] for k in self.key)
        deleted = self.select[self.table.deleted_at] if self.table.deleted_at else "NULL"
        if cursor is None:
            after, params = "1", ()
        else:
            after, params = f"CASE WHEN {self._row_after(cursor)} THEN 1 ELSE 0 END", cursor.params
        order = ", ".join(self.byte_order(k) for k in self.key)
        sql = (
            f"SELECT {keys}, {self.select[self.table.updated_at]}, {deleted}, {after} "
            f"FROM {self.relation} ORDER BY {order}"
        )
        return sql, params

    def fetch_sql(self, count: int) -> str:
        """The current rows of ``count`` keys (parameters: the keys' values, flattened)."""
        if len(self.key) == 1:
            ph = self.placeholder(self.key[0])
            column = self.refer(self.key[0])
            return f"SELECT {self._columns()} FROM {self.relation} WHERE {column} IN ({', '.join([ph] * count)})"
        cols = ", ".join(self.refer(k) for k in self.key)
        one = "(" + ", ".join(self.placeholder(k) for k in self.key) + ")"
        return f"SELECT {self._columns()} FROM {self.relation} WHERE ({cols}) IN (VALUES {', '.join([one] * count)})"


class ChangeRead:
    """One consistent read of a table's changes.

    Iterating yields the rows after the cursor in batches; :attr:`unordered`
    holds ``(updated_at, *key)`` of the rows that sort before the cursor although
    their time may be at or after the one asked for, read first in the same
    snapshot (a superset: the caller reads their times; see
    :mod:`rhei_lake.capture.updated_at_order`; always empty where the source
    orders ``updated_at`` by instant). :meth:`close` ends the read.
    """

    def __init__(
        self,
        batches: Iterator[list[tuple]],
        unordered: list[tuple] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._batches = batches
        self.unordered = unordered or []
        self._on_close = on_close

    def __iter__(self) -> Iterator[list[tuple]]:
        return self._batches

    def close(self) -> None:
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()
        if self._on_close is not None:
            self._on_close()


def fetch_batches(fetchmany: Callable[[int], list], size: int) -> Iterator[list[tuple]]:
    """Yield ``fetchmany(size)`` results until one comes back empty."""
    while rows := fetchmany(size):
        yield rows


def check_polled_columns(spec: TableSpec, table: PolledTable, where: str) -> None:
    """SchemaError naming the first configured column the source table lacks."""
    names = spec.column_names
    for role, column in (("updated_at", table.updated_at), ("deleted_at", table.deleted_at)):
        if column is not None and column not in names:
            raise SchemaError(
                f"{where}: table {spec.name!r} has no column {column!r} (configured as {role}); its columns are {names}"
            )


def polled_spec_options(table: PolledTable, location: SourceLocation) -> dict[str, str]:
    """What a polled table's spec records about its capture (shown by ``rh info``)."""
    options = {"updated_at": table.updated_at, "epoch_unit": table.epoch_unit, "source_url": location.masked}
    if table.deleted_at:
        options["deleted_at"] = table.deleted_at
    return options


class FirstRead(Protocol):
    """A whole table read at once for its first sync: one snapshot, declared-type Arrow, any row order."""

    @property
    def rows(self) -> int:
        """Rows in the snapshot: what the batches must add up to (it may wait for a count still running)."""
        ...

    cursor: PollCursor | None  # its greatest (updated_at, key); set once batches() is exhausted at the latest
    times: PhaseTimes  # where the read's time went

    def batches(self, batch_rows: int) -> Iterator[tuple[pa.Table, pa.Array | pa.ChunkedArray | None]]:
        """``(user columns, soft-deleted flags or None)`` per batch; NeedsDiagnosis when the row
        poll must take over (a value only the row-by-row rules can convert, or name)."""
        ...

    def close(self) -> None: ...


class PolledSource(Protocol):
    """A database a sidecar polls, read-only."""

    location: SourceLocation

    def describe(self, table: PolledTable) -> PollPlan:
        """Read the table's declared columns and key; SchemaError naming anything missing."""
        ...

    def read_changes(
        self, plan: PollPlan, cursor: PollCursor | None, batch_rows: int, unordered_since: int | None = None
    ) -> ChangeRead:
        """Rows (spec column order) after ``cursor``, ``(updated_at, key)`` order, one snapshot; with
        ``unordered_since`` (UTC micros) also the rows that sort before ``cursor`` although their
        ``updated_at`` may be at or after it, from the same snapshot."""
        ...

    def count_changes(self, plan: PollPlan, cursor: PollCursor | None) -> int:
        """How many rows :meth:`read_changes` would return now (for progress)."""
        ...

    def prepare_first_read(self, plan: PollPlan, min_rows: int, *, lake_holds_none: Callable[[], bool]) -> None:
        """Start now what :meth:`first_read` of ``plan``'s table will need, so that it overlaps the rest
        of the lake's open, when the lake holds nothing of the table (``lake_holds_none()``: a look at
        the store, asked last); it may do nothing."""
        ...

    def first_read(self, plan: PollPlan, min_rows: int) -> FirstRead | None:
        """A whole-table columnar read for a table the lake holds nothing of, when the source
        offers one and the table has at least ``min_rows`` rows."""
        ...

    def scan_keys(self, plan: PollPlan, cursor: PollCursor | None, batch_rows: int) -> Iterator[list[tuple]]:
        """Every row's ``(*key, updated_at, deleted_at, after_cursor)`` in byte order of the key."""
        ...

    def commit_counter(self) -> int | None:
        """A number that moves whenever the source commits a change (``None``: no such number)."""
        ...

    def fetch(self, plan: PollPlan, keys: Sequence[tuple]) -> list[tuple]:
        """The current rows (spec column order) of ``keys``; vanished keys are absent."""
        ...

    def close(self) -> None: ...


def open_polled_source(location: SourceLocation) -> PolledSource:
    """The :class:`PolledSource` for a parsed source URL."""
    if location.kind == "sqlite":
        from rhei_lake.capture.sqlite_poll import SqlitePolledSource

        _check_sqlite_path(location)
        return SqlitePolledSource(location)
    from rhei_lake.capture.postgres_poll import PostgresPolledSource

    return PostgresPolledSource(location)


def _check_sqlite_path(location: SourceLocation) -> None:
    """A missing file named ``sqlite:///name``: say it is absolute, and how to name one in the working folder."""
    path = location.path or ""
    if os.path.exists(path):
        return
    message = f"source: SQLite database {path!r} does not exist"
    relative = path.lstrip("/")
    if path.startswith("/") and location.url.startswith("sqlite:///") and relative:
        message += (
            f" (sqlite:///{relative} is the absolute path /{relative}; for {relative} in the working folder "
            f"write sqlite://{relative})"
        )
    raise SourceError(message)
