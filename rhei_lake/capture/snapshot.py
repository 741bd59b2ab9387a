"""The existing rows of a newly captured table, read from a pinned snapshot.

Two readers with one contract (change events ``I`` with consecutive sequences,
in bounded batches, exactly the rows of the pinned snapshot, a TypeMismatchError
for a value that does not fit its declared type):

* :class:`RowSnapshot` reads through the ``sqlite3`` module: no start-up cost,
  used for small tables;
* :class:`ColumnarSnapshot` reads through the ADBC reader process
  (:mod:`rhei_lake.capture.reader_process`): about an order of magnitude faster,
  used for big tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pyarrow as pa

from rhei_lake import faults
from rhei_lake.capture.cdc_log import Registration, SnapshotClock
from rhei_lake.capture.events import ORIGIN_SNAPSHOT, events_from_rows, misfit_detail, type_mismatch
from rhei_lake.capture.insert_columns import InsertColumns
from rhei_lake.capture.prefetch import Prefetch
from rhei_lake.capture.reader_process import STREAM_BATCH_ROWS, ReaderProcess
from rhei_lake.capture.sqlite_schema import column_of, quote_ident
from rhei_lake.capture.typed_select import (
    Misfit,
    NeedsDiagnosis,
    TypedSelect,
    after_witness,
    convert,
    is_misfit_error,
    snapshot_sql,
)
from rhei_lake.catalog import OP_INSERT, TableSpec
from rhei_lake.errors import SourceError, TypeMismatchError
from rhei_lake.phase_times import PhaseTimes


class SnapshotRun:
    """Common bookkeeping of a snapshot being streamed into the lake.

    A run is made inside the write transaction that registers its table, once its
    reader is pinned and before its rows are counted; that transaction then
    reserves their sequence numbers (:meth:`reserved`). A columnar run may read
    meanwhile: where its rows go (``clock``) is fixed before the count.
    """

    def __init__(self, spec: TableSpec, clock: SnapshotClock, times: PhaseTimes | None = None) -> None:
        self.spec = spec
        self.clock = clock
        self.error: BaseException | None = None
        self.rows_read = 0
        self.times = times if times is not None else PhaseTimes()
        self._registration: Registration | None = None

    @property
    def registration(self) -> Registration:
        """The registration that reserved the snapshot's sequence numbers."""
        if self._registration is None:
            raise RuntimeError(f"snapshot of {self.spec.name!r}: its sequence numbers are not reserved yet")
        return self._registration

    def reserved(self, registration: Registration) -> None:
        """The registering transaction reserved the snapshot's sequence numbers: ``registration``'s."""
        if registration.snapshot_from != self.clock.after or registration.spec != self.spec:
            raise ValueError(f"snapshot of {self.spec.name!r}: reserved numbers after another origin or spec")
        self._registration = registration

    @property
    def ts_micros(self) -> int:
        return self.clock.ts_micros

    @property
    def expected_rows(self) -> int:
        return self.registration.snapshot_to - self.registration.snapshot_from - 1

    @property
    def watermark(self) -> int:
        return self.registration.snapshot_to

    def reader(self, batch_rows: int) -> pa.RecordBatchReader:
        """The snapshot as change events (``I``), in bounded batches."""
        return pa.RecordBatchReader.from_batches(self.spec.changes_schema, self._guarded(batch_rows))

    def _guarded(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._batches(batch_rows):
                self.rows_read += batch.num_rows
                if self.rows_read > self.expected_rows:
                    raise SourceError(f"snapshot of {self.spec.name!r} read more rows than were counted; retry")
                yield batch
            if self.rows_read != self.expected_rows:  # one pinned snapshot: the count and the read agree
                raise SourceError(
                    f"snapshot of {self.spec.name!r} read {self.rows_read} of the {self.expected_rows} rows "
                    "counted; retry"
                )
        except BaseException as exc:
            self.error = exc
            raise

    def start(self, batch_rows: int) -> None:
        """Begin reading now, ahead of :meth:`reader` (called with the same ``batch_rows``): while the
        registration counts the rows and the lake makes the snapshot's Delta table ready. A reader that
        reads only when pulled ignores it."""

    def _batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop reading (what was read ahead is dropped) and release the snapshot's reader."""
        raise NotImplementedError


class RowSnapshot(SnapshotRun):
    """A snapshot read row by row through ``sqlite3``."""

    def __init__(
        self, conn: sqlite3.Connection, spec: TableSpec, clock: SnapshotClock, times: PhaseTimes | None = None
    ) -> None:
        super().__init__(spec, clock, times)
        self._conn = conn

    def _batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        spec = self.spec
        cols = ", ".join(column_of(spec.name, c.name) for c in spec.columns)
        next_seq = self.clock.after + 1
        cursor = self._conn.execute(f"SELECT {cols} FROM {quote_ident(spec.name)}")
        while True:
            rows = cursor.fetchmany(batch_rows)
            if not rows:
                return
            table = events_from_rows(spec, rows, first_seq=next_seq, op=OP_INSERT, ts_micros=self.ts_micros)
            next_seq += len(rows)
            yield from table.to_batches()

    def close(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._conn.close()


class ColumnarSnapshot(SnapshotRun):
    """A snapshot read as Arrow by the ADBC reader process, whose read transaction is pinned."""

    def __init__(
        self, reader: ReaderProcess, spec: TableSpec, clock: SnapshotClock, times: PhaseTimes | None = None
    ) -> None:
        super().__init__(spec, clock, times)
        self._reader = reader
        self._ahead: tuple[Prefetch[pa.RecordBatch], PhaseTimes] | None = None

    def start(self, batch_rows: int) -> None:
        # Read and convert in a thread of its own, two batches ahead of the Delta writer (and the
        # reader process's pipe ahead of that): from now, while the rows are counted and the changelog
        # is created.
        if self._ahead is None:
            produced = PhaseTimes()
            converted = self._converted(batch_rows, produced)
            self._ahead = Prefetch(converted, 2, name="rhei-snapshot-read", abandon=self._reader.abort), produced

    def _batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        self.start(batch_rows)
        assert self._ahead is not None
        ahead, produced = self._ahead
        yield from self.times.timed("waiting for rows", ahead.items())
        self.times.merge(produced, elsewhere=True)

    def _converted(self, batch_rows: int, times: PhaseTimes) -> Iterator[pa.RecordBatch]:
        spec = self.spec
        sql, typed = snapshot_sql(spec)
        next_seq = self.clock.after + 1
        schema = spec.changes_schema
        bookkeeping = InsertColumns(self.ts_micros)
        try:
            # a misfit in its first batch stops it here
            stream = self._reader.batches(sql, batch_rows=min(batch_rows, STREAM_BATCH_ROWS))
        except SourceError as exc:
            if not is_misfit_error(exc):
                raise
            raise self._diagnose(batch_rows) from exc
        try:
            for raw in times.timed("typed read", after_witness(stream)):
                with times.measure("conversion"):
                    arrays, _ = convert(typed, raw)
                n = raw.num_rows
                with times.measure("sequence numbers"):
                    extra = [bookkeeping.seq(next_seq, n), bookkeeping.ops(n), bookkeeping.stamps(n)]
                next_seq += n
                faults.point("first_read.batch_converted")
                yield pa.RecordBatch.from_arrays([*arrays, *extra], schema=schema)
            for phase, seconds in self._reader.last_query_times.items():
                times.add(f"reader process: {phase}", seconds)
            # Every row is read: the pinned snapshot (which holds back WAL checkpoints) and the process
            # go now, while the writer finishes, not after its commit.
            self._reader.close()
        except NeedsDiagnosis:
            try:
                for _ in stream:  # drain: the reader's transaction stays pinned for the diagnosis
                    pass
            except SourceError as exc:
                if not is_misfit_error(exc):
                    raise
            raise self._diagnose(batch_rows) from None
        except SourceError as exc:
            if not is_misfit_error(exc):
                raise
            raise self._diagnose(batch_rows) from exc
        finally:
            stream.close()  # an unfinished stream stops the reader here, not when the error is collected

    def _diagnose(self, batch_rows: int) -> BaseException:
        """The exact error for a value that does not fit, found by a strict read of the same snapshot."""
        sql, typed = snapshot_sql(self.spec, strict=True)
        for raw in after_witness(self._reader.query(sql, batch_rows=batch_rows)):
            _, misfit = convert(typed, raw)
            if misfit is not None:
                return misfit_error(self.spec, typed, raw, misfit)
        return SourceError(f"snapshot of {self.spec.name!r}: the fast read saw a misfit the strict read did not")

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead[0].close()  # a read started and never (or not wholly) consumed: stopped first
        self._reader.close()


def misfit_error(
    spec: TableSpec, typed: TypedSelect, raw: pa.RecordBatch, misfit: Misfit, *, origin: str = ORIGIN_SNAPSHOT
) -> TypeMismatchError:
    """The TypeMismatchError for a misfit the typed read found (the row path's words)."""
    key = {k: misfit.value if k == misfit.column else typed.raw_value(raw, k, misfit.row) for k in spec.primary_key}
    detail, canonical = misfit_detail(spec, misfit.column, misfit.value)
    return type_mismatch(spec, misfit.column, key, None, detail, origin, fits=misfit.value, canonical=canonical)
