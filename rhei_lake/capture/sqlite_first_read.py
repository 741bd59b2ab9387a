"""A polled SQLite table's first read, whole, as declared-type Arrow from the ADBC reader process.

The row poll (:mod:`rhei_lake.capture.sqlite_poll`) reads a table in
``(updated_at, key)`` order through ``sqlite3``: exact, but a fraction of the
speed of reading the table at all. A table the lake holds nothing of yet is
read here instead, in one pinned snapshot of the reader process
(:mod:`rhei_lake.capture.reader_process`), typed by declared column
(:mod:`rhei_lake.capture.typed_select`), in storage order: a first sync may
number its events in any order, since each key appears once. The row count
comes from the same snapshot beforehand: it is the query that pins the
snapshot (some query must), it costs SQLite ~20 ms per million narrow rows,
and the watermark the events commit with must be known before the Delta write
starts (``write_deltalake`` takes its app transaction up front, then consumes
the stream); the read checks it got exactly that many rows. The cursor the row
poll would have ended on (the greatest ``(updated_at, key)``) is tracked while
the rows stream by (:mod:`rhei_lake.capture.sqlite_order`), so the table is
read once.

A value that does not fit its declared type ends the read with
:class:`~rhei_lake.capture.typed_select.NeedsDiagnosis`: the caller then
falls back to the row poll, which commits the rows before it and names it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake import faults
from rhei_lake.capture.poll_cursor import PollCursor
from rhei_lake.capture.polled_source import PollPlan
from rhei_lake.capture.prefetch import prefetched
from rhei_lake.capture.reader_process import STREAM_BATCH_ROWS, ReaderProcess, fast_reader_available
from rhei_lake.capture.spare_reader import SpareReader
from rhei_lake.capture.sqlite_order import GreatestRow, declares_collation
from rhei_lake.capture.sqlite_schema import column_of, has_rows, quote_ident
from rhei_lake.capture.typed_select import NeedsDiagnosis, after_witness, convert, is_misfit_error, snapshot_sql
from rhei_lake.errors import SourceError
from rhei_lake.phase_times import PhaseTimes


def soft_deleted_sql(table: str, column: str) -> str:
    """1 where a soft-delete value marks its row deleted, else 0 (the rule of ``polled_events.is_deleted``)."""
    x = column_of(table, column)
    return f"CASE WHEN {x} IS NULL THEN 0 WHEN typeof({x}) IN ('integer', 'real') AND {x} = 0 THEN 0 ELSE 1 END"


class SqliteFirstRead:
    """One pinned snapshot of a polled table, streamed as declared-type Arrow.

    ``rows`` counts the snapshot; once :meth:`batches` is exhausted, ``cursor``
    is its greatest ``(updated_at, key)`` (``None`` for an empty table).
    ``times`` says where the read's time went.
    """

    def __init__(
        self, reader: ReaderProcess, plan: PollPlan, *, sql_order_only: bool, times: PhaseTimes | None = None
    ) -> None:
        self._reader = reader
        self.plan = plan
        self.times = times if times is not None else PhaseTimes()
        self._sql_order_only = sql_order_only  # text sorted by a declared collation: ask SQLite for the cursor
        deleted_at = plan.table.deleted_at
        self._flag = soft_deleted_sql(plan.spec.name, deleted_at) if deleted_at else None
        with self.times.measure("reader start"):
            reader.begin()  # the first query pins the snapshot every later one reads
            counted = reader.query(f"SELECT count(*) FROM {quote_ident(plan.spec.name)}").read_all()
        self.rows = int(counted.column(0)[0].as_py())
        self.cursor: PollCursor | None = None

    def batches(self, batch_rows: int) -> Iterator[tuple[pa.Table, pa.Array | None]]:
        """``(user columns, soft-deleted flags or None)`` per batch; NeedsDiagnosis on a misfit.

        Read and converted in a thread of its own, two batches ahead of the caller.
        """
        produced = PhaseTimes()
        converted = prefetched(
            self._converted(batch_rows, produced), 2, name="rhei-first-read", abandon=self._reader.abort
        )
        yield from self.times.timed("waiting for rows", converted)
        self.times.merge(produced, elsewhere=True)

    def _converted(self, batch_rows: int, times: PhaseTimes) -> Iterator[tuple[pa.Table, pa.Array | None]]:
        spec = self.plan.spec
        sql, typed = snapshot_sql(spec, extra=[(self._flag, "0")] if self._flag else ())
        greatest = GreatestRow(typed, (self.plan.table.updated_at, *self.plan.key))
        try:
            # a misfit in its first batch stops it here
            stream = self._reader.batches(sql, batch_rows=min(batch_rows, STREAM_BATCH_ROWS))
        except SourceError as exc:
            if is_misfit_error(exc):
                raise NeedsDiagnosis from exc
            raise
        try:
            for raw in times.timed("typed read", after_witness(stream)):
                with times.measure("conversion"):
                    arrays, _ = convert(typed, raw)
                    if not self._sql_order_only:
                        greatest.observe(raw)
                    flags = pc.equal(raw.column(0), 1) if self._flag else None
                faults.point("first_read.batch_converted")
                yield pa.Table.from_arrays(arrays, schema=spec.schema), flags
        except SourceError as exc:
            if is_misfit_error(exc):
                raise NeedsDiagnosis from exc
            raise
        finally:
            stream.close()  # an unfinished stream stops the reader here, not when the error is collected
        for phase, seconds in self._reader.last_query_times.items():
            times.add(f"reader process: {phase}", seconds)
        last = greatest.values if not self._sql_order_only else self._greatest_by_sql()
        self.cursor = PollCursor(last[0], tuple(last[1:])) if last is not None else None

    def _greatest_by_sql(self) -> tuple | None:
        rows = self._reader.query(self.plan.last_row_sql()).read_all()
        return tuple(column[0].as_py() for column in rows.columns) if rows.num_rows else None

    def close(self) -> None:
        self._reader.close()


def wants_first_read(conn: sqlite3.Connection, plan: PollPlan, min_rows: int) -> bool:
    """Whether a first sync of ``plan``'s table reads it here: ``min_rows`` rows or more, and ADBC installed."""
    return min_rows > 0 and fast_reader_available() and has_rows(conn, plan.spec.name, min_rows)


def open_first_read(
    conn: sqlite3.Connection, path: str, plan: PollPlan, min_rows: int, *, spare: SpareReader | None = None
) -> SqliteFirstRead | None:
    """A :class:`SqliteFirstRead` of ``plan``'s table when :func:`wants_first_read` (known when a ``spare``
    was started for it: the read is exact whatever the table's size); its reader process is ``spare``'s
    when that is still alive."""
    if spare is None and not wants_first_read(conn, plan, min_rows):
        return None
    times = PhaseTimes()
    sql_order_only = declares_collation(conn, plan.spec.name)
    with times.measure("reader start"):
        reader = spare.reader(path, readonly=True) if spare is not None else ReaderProcess(path, readonly=True)
    try:
        return SqliteFirstRead(reader, plan, sql_order_only=sql_order_only, times=times)
    except BaseException:
        reader.close()
        raise
