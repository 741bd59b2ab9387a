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

The snapshot's connection holds the table from its size check until the read
ends, so a schema change (ALTER TABLE) arriving meanwhile queues behind it,
and the COPY's own lock would queue behind that: the COPY gives up a lock
wait after ``LOCK_TIMEOUT_MS`` (a transient error; the next sync reads the
table again) rather than wait for ever in a cycle PostgreSQL cannot see.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake import faults
from rhei_lake.capture.poll_cursor import PollCursor
from rhei_lake.capture.prefetch import Prefetch
from rhei_lake.capture.polled_source import PollPlan
from rhei_lake.capture.postgres_db import translate_adbc_error, translate_postgres_error
from rhei_lake.capture.source_url import SourceLocation
from rhei_lake.capture.typed_select import NeedsDiagnosis
from rhei_lake.capture.types import key_misfit
from rhei_lake.catalog import TableSpec
from rhei_lake.phase_times import PhaseTimes


# COPY data per batch. The driver's default, 16 MiB (~200K rows of a narrow table), kept the
# write waiting ~70 ms for the first batch and alone for the last one; 4 MiB batches also
# parse with ~20% less CPU (they stay in cache).
BATCH_BYTES = 4 << 20
LOCK_TIMEOUT_MS = 1000
PREFETCH_BATCHES = 4


def _key_spelt_otherwise(spec: TableSpec, raw: pa.RecordBatch, arrays: list[pa.Array]) -> bool:
    """Whether a key read as text (a column ``types=`` reads as a timestamp, say) is not in its canonical spelling."""
    for i, column in enumerate(spec.columns):
        if column.name in spec.primary_key and pa.types.is_string(raw.column(i).type):
            if key_misfit(raw.column(i).to_pylist(), arrays[i], column.arrow_type, None) is not None:
                return True
    return False


def _read_from_server(stream: pa.RecordBatchReader, table: str, location: SourceLocation) -> Iterator[pa.RecordBatch]:
    """``stream``'s batches; the driver's failure as a SourceError (a lost connection, a lock or statement
    timeout: SourceUnavailableError)."""
    while True:
        try:
            batch = stream.read_next_batch()
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as exc:  # the low-level API's errors arrive as pyarrow's
            raise translate_adbc_error(exc, location, where=f"reading table {table!r}") from None
        yield batch


def _quietly(step: Callable[[], object]) -> None:
    """Run a step of closing a read that may fail (the server gone: no cancel reaches it) and close the rest anyway."""
    try:
        step()
    except Exception:
        pass


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

    ``big`` says whether the snapshot holds at least the ``min_rows`` it was
    opened with (found by reading that many rows at most). :meth:`start`
    counts the snapshot and reads its cursor in a thread while the ADBC
    connection opens and the rows stream: ``rows`` waits for the count;
    ``cursor`` is the snapshot's greatest ``(updated_at, key)`` (``None`` for an
    empty table), known once :meth:`batches` is exhausted. ``times`` says where
    the read's time went.
    """

    def __init__(self, psycopg_conn: Any, plan: PollPlan, min_rows: int, location: SourceLocation) -> None:
        """Pin a snapshot on ``psycopg_conn`` (a dedicated connection to ``location``, closed with this read)."""
        import psycopg

        self.plan = plan
        self._pg = psycopg_conn
        self._location = location
        self._adbc_database: Any = None
        self._adbc: Any = None
        self.cursor: PollCursor | None = None
        self._rows: int | None = None
        self._counted = threading.Event()
        self._closing = threading.Event()  # the thread starts no query once set
        self._snapshot_thread: threading.Thread | None = None
        self._snapshot_error: BaseException | None = None
        self._read_statement: Any = None
        self._prefetch: Prefetch[tuple[pa.Table, pa.ChunkedArray | None]] | None = None
        self._produced = PhaseTimes()  # the COPY thread's phases, merged into times at the end
        self.times = PhaseTimes()
        try:
            with self.times.measure("snapshot"):
                self._pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # read-only already
                with self._pg.cursor() as cur:
                    cur.execute("SELECT pg_export_snapshot()", ())
                    (self._snapshot,) = cur.fetchone()
                    # The count and the last row's scan run beside the read: on a server sharing the
                    # sidecar's cores, parallel workers took them from the read and the write (a 1M-row
                    # first sync on 2 cores: ~38 ms slower with them). The count, which the write waits
                    # for, is then ~1.6x slower on an idle server.
                    cur.execute("SET LOCAL max_parallel_workers_per_gather = 0", ())
                    cur.execute(f"SELECT count(*) FROM (SELECT 1 FROM {plan.relation} LIMIT %s) AS head", (min_rows,))
                    self.big = int(cur.fetchone()[0]) >= min_rows
        except BaseException:
            self.close()
            raise

    @property
    def rows(self) -> int:
        """The rows in the snapshot: what the batches must add up to (waits for the count)."""
        if self._snapshot_thread is not None and not self._counted.is_set():
            with self.times.measure("waiting for the count"):
                self._counted.wait()
        if self._rows is None:
            self._await_snapshot()  # raises what stopped the count
            raise RuntimeError("a first read counts its rows once started")
        return self._rows

    def start(self, url: str) -> None:
        """Count the snapshot and read its cursor in a thread; open the ADBC connection on the same
        snapshot and start streaming its rows (:meth:`batches`)."""
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

        # The count and the cursor's query (scans, without an index on updated_at) run on the server
        # while the driver loads and connects, then while ADBC reads.
        counting = threading.Thread(target=self._read_snapshot_facts, name="rhei-first-read-count", daemon=True)
        counting.start()
        self._snapshot_thread = counting
        self._adbc_database = adbc_driver_postgresql.connect(url)  # loads the driver and the server's types
        self._adbc = adbc_driver_manager.AdbcConnection(self._adbc_database)
        self._adbc.set_autocommit(False)  # a transaction, begun now
        for sql in (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            f"SET TRANSACTION SNAPSHOT '{self._snapshot}'",
            "SET TRANSACTION READ ONLY",
            # The snapshot's connection holds the table (ACCESS SHARE) from its size check on: a lock this
            # one waits for is one queued behind that, e.g. an ALTER TABLE, which waits for this read to
            # end. Nothing in PostgreSQL breaks that cycle (the other connection is idle, not waiting):
            # give way after a moment instead of waiting for ever.
            f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'",
        ):
            statement = self._statement(sql)
            try:
                statement.execute_update()
            finally:
                statement.close()
        self._begin_read()

    def _statement(self, sql: str) -> Any:
        import adbc_driver_manager

        statement = adbc_driver_manager.AdbcStatement(self._adbc)
        statement.set_sql_query(sql)
        return statement

    def _read_snapshot_facts(self) -> None:
        import psycopg

        where = f"counting the rows of table {self.plan.spec.name!r}"
        try:
            faults.point("first_read.before_count")
            if self._closing.is_set():
                return
            with self._pg.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {self.plan.relation}", ())
                self._rows = int(cur.fetchone()[0])
            self._counted.set()
            where = f"reading the last row of table {self.plan.spec.name!r}"
            if self._closing.is_set():
                return
            with self._pg.cursor(binary=True) as cur:  # as the row poll reads: the cursor's values are its values
                cur.execute(self.plan.last_row_sql(), ())
                last = cur.fetchone()
            self.cursor = PollCursor(last[0], tuple(last[1:])) if last is not None else None
        except psycopg.Error as exc:  # raised where the count or the cursor is needed
            self._snapshot_error = translate_postgres_error(exc, self._location, where=where)
        except BaseException as exc:
            self._snapshot_error = exc
        finally:
            self._counted.set()

    def _await_snapshot(self) -> None:
        if self._snapshot_thread is not None:
            self._snapshot_thread.join()
            self._snapshot_thread = None
        if self._snapshot_error is not None:
            raise self._snapshot_error

    def _begin_read(self) -> None:
        """Start the COPY now, in a thread of its own that reads and casts ``PREFETCH_BATCHES`` ahead of :meth:`batches`."""
        spec = self.plan.spec
        # ADBC's PostgreSQL driver reads a psycopg-style "%%" in a quoted name literally.
        select = ", ".join(self.plan.select[c].replace("%%", "%") for c in spec.column_names)
        sql = f"SELECT {select} FROM {self.plan.relation.replace('%%', '%')}"
        self._read_statement = statement = self._statement(sql)
        statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)})
        # Four batches (~16 MiB of COPY data) ahead: the write starts once the rows are counted, and until
        # then the COPY reads on (two ahead: ~22 ms slower, 1M rows on 2 cores).
        self._prefetch = Prefetch(
            self._converted(statement, self._produced),
            PREFETCH_BATCHES,
            name="rhei-first-read",
            abandon=lambda: _quietly(statement.cancel),
        )

    def batches(self, batch_rows: int) -> Iterator[tuple[pa.Table, pa.ChunkedArray | None]]:
        """``(user columns, soft-deleted flags or None)`` per batch; NeedsDiagnosis when a value will not cast.

        Batches are as large as the driver reads them (``BATCH_BYTES`` of COPY data), whatever
        ``batch_rows`` says; :meth:`start` began reading them, ``PREFETCH_BATCHES`` ahead of the caller.
        """
        if self._prefetch is None:
            raise RuntimeError("a first read streams its rows once, after start()")
        try:
            yield from self.times.timed("waiting for rows", self._prefetch.items())
        finally:
            self._end_read()
        self.times.merge(self._produced, elsewhere=True)
        with self.times.measure("cursor read"):
            self._await_snapshot()

    def _end_read(self) -> None:
        """Stop the COPY's thread (cancelling the query unless it ended) and close its statement."""
        if self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None
        if self._read_statement is not None:
            _quietly(self._read_statement.close)
            self._read_statement = None

    def _converted(self, statement: Any, times: PhaseTimes) -> Iterator[tuple[pa.Table, pa.ChunkedArray | None]]:
        import adbc_driver_manager

        with times.measure("typed read"):
            try:
                handle, _ = statement.execute_query()
            except adbc_driver_manager.Error as exc:
                where = f"reading table {self.plan.spec.name!r}"
                raise translate_adbc_error(exc, self._location, where=where) from None
            stream = pa.RecordBatchReader._import_from_c(handle.address)
        # The stream lives in the statement's memory: it is released here, in the thread that reads it,
        # before the statement is closed, whether the read ends, fails or is stopped.
        with stream:
            yield from self._cast(_read_from_server(stream, self.plan.spec.name, self._location), times)

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
        self._end_read()
        self._closing.set()
        counting = self._snapshot_thread
        # The read stopped early: its count or cursor's query may run (a cancel sent before a query
        # starts is lost: sent until the thread ends).
        while counting is not None and counting.is_alive():
            _quietly(self._pg.cancel)
            counting.join(0.05)
        self._snapshot_thread = None
        for conn in (self._adbc, self._pg):
            if conn is not None:
                _quietly(conn.rollback)
                _quietly(conn.close)
        if self._adbc_database is not None:
            _quietly(self._adbc_database.close)
