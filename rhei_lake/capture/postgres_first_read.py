"""A polled PostgreSQL table's first read, whole, as declared-type Arrow through ADBC (binary COPY).

psycopg hands rows to Python one value at a time; ``adbc-driver-postgresql``
reads a result with PostgreSQL's binary COPY straight into Arrow. A table the
lake holds nothing of is read that way, in storage order (each key appears
once, so the order of a first sync's events does not matter), from the same
snapshot as the row count and the cursor, which psycopg reads exactly as the
row poll would have (``pg_export_snapshot``: one REPEATABLE READ snapshot
shared by both connections).

Each column is cast to its declared Arrow type (:mod:`rhei_lake.capture.postgres_types`);
a value the cast refuses ends the read with
:class:`~rhei_lake.capture.typed_select.NeedsDiagnosis`, and the caller falls
back to the row poll, which names it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake import faults
from rhei_lake.capture.poll_cursor import PollCursor
from rhei_lake.capture.prefetch import prefetched
from rhei_lake.capture.polled_source import PollPlan
from rhei_lake.capture.typed_select import NeedsDiagnosis
from rhei_lake.capture.types import key_misfit
from rhei_lake.catalog import TableSpec
from rhei_lake.phase_times import PhaseTimes


def _key_spelt_otherwise(spec: TableSpec, raw: pa.RecordBatch, arrays: list[pa.Array]) -> bool:
    """Whether a key read as text (a column ``types=`` reads as a timestamp, say) is not in its canonical spelling."""
    for i, column in enumerate(spec.columns):
        if column.name in spec.primary_key and pa.types.is_string(raw.column(i).type):
            if key_misfit(raw.column(i).to_pylist(), arrays[i], column.arrow_type, None) is not None:
                return True
    return False


def adbc_postgres_available() -> bool:
    """Whether ``adbc-driver-postgresql`` is installed (otherwise every read goes through psycopg)."""
    try:
        import adbc_driver_postgresql  # noqa: F401
    except ImportError:
        return False
    return True


def soft_deleted(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row, whether a declared-type soft-delete value marks it deleted (``polled_events.is_deleted``)."""
    dtype = column.type
    if pa.types.is_boolean(dtype):
        return pc.fill_null(column, False)
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return pc.fill_null(pc.not_equal(column, pa.scalar(0).cast(dtype)), False)
    return pc.is_valid(column)


class PostgresFirstRead:
    """One REPEATABLE READ snapshot of a polled PostgreSQL table, streamed as declared-type Arrow.

    ``rows`` counts the snapshot; ``cursor`` is its greatest ``(updated_at, key)``
    (``None`` for an empty table), read alongside the rows and known once
    :meth:`batches` is exhausted. ``times`` says where the read's time went.
    """

    def __init__(self, psycopg_conn: Any, plan: PollPlan) -> None:
        """Pin a snapshot on ``psycopg_conn`` (a dedicated connection, closed with this read) and count it."""
        import psycopg

        self.plan = plan
        self._pg = psycopg_conn
        self._adbc = None
        self.cursor: PollCursor | None = None
        self._cursor_thread: threading.Thread | None = None
        self._cursor_error: BaseException | None = None
        self.times = PhaseTimes()
        try:
            with self.times.measure("row count"):
                self._pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # read-only already
                with self._pg.cursor() as cur:
                    cur.execute("SELECT pg_export_snapshot()", ())
                    (self._snapshot,) = cur.fetchone()
                    cur.execute(f"SELECT count(*) FROM {plan.relation}", ())
                    self.rows = int(cur.fetchone()[0])
        except BaseException:
            self.close()
            raise

    def start(self, url: str) -> None:
        """Read the cursor and open the ADBC connection on the same snapshot."""
        try:
            with self.times.measure("reader start"):
                self._start(url)
        except BaseException:
            self.close()
            raise

    def _start(self, url: str) -> None:
        import adbc_driver_postgresql.dbapi as adbc

        # The cursor's query (a scan, without an index on updated_at) runs on the server while ADBC reads.
        self._cursor_thread = threading.Thread(target=self._read_cursor, name="rhei-first-read-cursor", daemon=True)
        self._cursor_thread.start()
        self._adbc = adbc.connect(url)
        with self._adbc.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute(f"SET TRANSACTION SNAPSHOT '{self._snapshot}'")
            cur.execute("SET TRANSACTION READ ONLY")

    def _read_cursor(self) -> None:
        try:
            with self._pg.cursor(binary=True) as cur:  # as the row poll reads: the cursor's values are its values
                cur.execute(self.plan.last_row_sql(), ())
                last = cur.fetchone()
            self.cursor = PollCursor(last[0], tuple(last[1:])) if last is not None else None
        except BaseException as exc:  # raised where the cursor is needed
            self._cursor_error = exc

    def _await_cursor(self) -> None:
        if self._cursor_thread is not None:
            self._cursor_thread.join()
            self._cursor_thread = None
        if self._cursor_error is not None:
            raise self._cursor_error

    def batches(self, batch_rows: int) -> Iterator[tuple[pa.Table, pa.ChunkedArray | None]]:
        """``(user columns, soft-deleted flags or None)`` per batch; NeedsDiagnosis when a value will not cast.

        Batches are as large as the driver reads them (16 MB of COPY data), whatever ``batch_rows`` says;
        they are read and cast in a thread of their own, two batches ahead of the caller.
        """
        spec = self.plan.spec
        # ADBC's PostgreSQL driver reads a psycopg-style "%%" in a quoted name literally.
        select = ", ".join(self.plan.select[c].replace("%%", "%") for c in spec.column_names)
        sql = f"SELECT {select} FROM {self.plan.relation.replace('%%', '%')}"
        produced = PhaseTimes()
        with self._adbc.cursor() as cur:
            converted = prefetched(
                self._converted(cur, sql, produced), 2, name="rhei-first-read", abandon=cur.adbc_cancel
            )
            yield from self.times.timed("waiting for rows", converted)
        self.times.merge(produced, elsewhere=True)
        with self.times.measure("cursor read"):
            self._await_cursor()

    def _converted(self, cur: Any, sql: str, times: PhaseTimes) -> Iterator[tuple[pa.Table, pa.ChunkedArray | None]]:
        spec = self.plan.spec
        deleted_at = self.plan.table.deleted_at
        with times.measure("typed read"):
            cur.execute(sql)
            stream = cur.fetch_record_batch()
        for raw in times.timed("typed read", stream):
            if raw.num_rows == 0:
                continue
            with times.measure("conversion"):
                try:
                    arrays = [raw.column(i).cast(c.arrow_type) for i, c in enumerate(spec.columns)]
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    raise NeedsDiagnosis from None
                if _key_spelt_otherwise(spec, raw, arrays):
                    raise NeedsDiagnosis  # the row poll names it
                table = pa.Table.from_arrays(arrays, schema=spec.schema)
                flags = soft_deleted(table.column(deleted_at)) if deleted_at else None
            faults.point("first_read.batch_converted")
            yield table, flags

    def close(self) -> None:
        if self._cursor_thread is not None:  # the read stopped early: the cursor's query may still run
            try:
                self._pg.cancel()
            except Exception:  # closing anyway
                pass
            self._cursor_thread.join()
        for conn in (self._adbc, self._pg):
            if conn is None:
                continue
            try:
                conn.rollback()
            except Exception:  # closing anyway
                pass
            try:
                conn.close()
            except Exception:
                pass
