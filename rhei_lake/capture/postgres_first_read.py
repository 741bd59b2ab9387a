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
from rhei_lake.errors import SourceError, SourceUnavailableError
from rhei_lake.phase_times import PhaseTimes


def _key_spelt_otherwise(spec: TableSpec, raw: pa.RecordBatch, arrays: list[pa.Array]) -> bool:
    """Whether a key read as text (a column ``types=`` reads as a timestamp, say) is not in its canonical spelling."""
    for i, column in enumerate(spec.columns):
        if column.name in spec.primary_key and pa.types.is_string(raw.column(i).type):
            if key_misfit(raw.column(i).to_pylist(), arrays[i], column.arrow_type, None) is not None:
                return True
    return False


def _read_from_server(stream: pa.RecordBatchReader, table: str) -> Iterator[pa.RecordBatch]:
    """``stream``'s batches; the driver's failure as a SourceError (a lost connection: SourceUnavailableError)."""
    while True:
        try:
            batch = stream.read_next_batch()
        except StopIteration:
            return
        except OSError as exc:  # the low-level API's errors arrive as pyarrow's: libpq's I/O (a lost connection)
            raise SourceUnavailableError(f"reading table {table!r} from PostgreSQL failed: {exc}") from None
        except pa.ArrowException as exc:
            raise SourceError(f"reading table {table!r} from PostgreSQL failed: {exc}") from None
        yield batch


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
        self._adbc_database: Any = None
        self._adbc: Any = None
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
        # The driver manager's low-level API: its DB-API layer imports polars and pandas when
        # they are installed (~0.3 s, more than reading a million rows takes here).
        import adbc_driver_manager
        import adbc_driver_postgresql

        # The cursor's query (a scan, without an index on updated_at) runs on the server while ADBC reads.
        self._cursor_thread = threading.Thread(target=self._read_cursor, name="rhei-first-read-cursor", daemon=True)
        self._cursor_thread.start()
        self._adbc_database = adbc_driver_postgresql.connect(url)
        self._adbc = adbc_driver_manager.AdbcConnection(self._adbc_database)
        self._adbc.set_autocommit(False)  # a transaction, begun now
        for sql in (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            f"SET TRANSACTION SNAPSHOT '{self._snapshot}'",
            "SET TRANSACTION READ ONLY",
        ):
            statement = self._statement(sql)
            try:
                statement.execute_update()
            finally:
                statement.close()

    def _statement(self, sql: str) -> Any:
        import adbc_driver_manager

        statement = adbc_driver_manager.AdbcStatement(self._adbc)
        statement.set_sql_query(sql)
        return statement

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
        statement = self._statement(sql)
        try:
            converted = prefetched(
                self._converted(statement, produced), 2, name="rhei-first-read", abandon=statement.cancel
            )
            yield from self.times.timed("waiting for rows", converted)
        finally:
            statement.close()
        self.times.merge(produced, elsewhere=True)
        with self.times.measure("cursor read"):
            self._await_cursor()

    def _converted(self, statement: Any, times: PhaseTimes) -> Iterator[tuple[pa.Table, pa.ChunkedArray | None]]:
        with times.measure("typed read"):
            handle, _ = statement.execute_query()
            stream = pa.RecordBatchReader._import_from_c(handle.address)
        # The stream lives in the statement's memory: it is released here, in the thread that reads it,
        # before the statement is closed, whether the read ends, fails or is stopped.
        with stream:
            yield from self._cast(_read_from_server(stream, self.plan.spec.name), times)

    def _cast(
        self, stream: Iterator[pa.RecordBatch], times: PhaseTimes
    ) -> Iterator[tuple[pa.Table, pa.ChunkedArray | None]]:
        spec = self.plan.spec
        deleted_at = self.plan.table.deleted_at
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
        if self._adbc_database is not None:
            try:
                self._adbc_database.close()
            except Exception:
                pass
