"""HTAP-mode capture: triggers on a SQLite database the engine owns.

Registering a table installs its triggers and reserves sequence numbers for its
existing rows in one write transaction; the existing rows are then streamed
from a read transaction that began *before* that commit while the write lock
was held, so it sees exactly the rows the triggers did not capture: no gap, no
duplicate, and concurrent writers are blocked only for the registration itself.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import pyarrow as pa

from rhei_lake import faults
from rhei_lake.capture import cdc_log, key_repair, reconcile_log, schema_watch
from rhei_lake.capture.cdc_log import STATE_READY, STATE_SNAPSHOT, Registration
from rhei_lake.capture.events import events_from_log_rows
from rhei_lake.capture.reconcile_log import PendingEvents
from rhei_lake.capture.schema_watch import SchemaDrift
from rhei_lake.capture.reader_process import ReaderProcess, fast_reader_available
from rhei_lake.capture.snapshot import ColumnarSnapshot, RowSnapshot, SnapshotRun
from rhei_lake.capture.spare_reader import SpareReader
from rhei_lake.capture.sqlite_db import BUSY_TIMEOUT_MS, connect, enable_wal, translate_sqlite_error
from rhei_lake.capture.sqlite_schema import canonical_table_name, has_rows, quote_ident, read_table_spec, type_overrides
from rhei_lake.capture.triggers import LOG_TABLE, drop_triggers, install_triggers
from rhei_lake.capture.typed_select import NeedsDiagnosis, after_witness, convert, is_misfit_error, log_sql
from rhei_lake.catalog import TIMESTAMP_TYPE, TableSpec
from rhei_lake.errors import SchemaError, SourceError, TypeMismatchError
from rhei_lake.phase_times import PhaseTimes

log = logging.getLogger("rhei_lake.capture")

SOURCE_KIND = "sqlite-trigger"
_WARM_COLUMNAR_EVENTS = 2_000

DeriveEvents = Callable[[TableSpec, TableSpec, pa.Table], pa.Table]
"""``derive(mirrored_spec, new_spec, rows)``: the events that bring the lake to ``rows`` (user columns + ``_rhei_op``)."""


@dataclass
class LogBatch:
    """Events read from the CDC log: per table, in order, up to ``through``."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    through: int = 0
    rows: int = 0
    error: TypeMismatchError | None = None
    unknown: set[str] = field(default_factory=set)


class TriggerSource:
    """Change capture from ``_rhei_cdc_log`` in a SQLite database the engine owns."""

    kind = SOURCE_KIND

    def __init__(self, path: str, *, columnar_min_rows: int = 0) -> None:
        self.path = path
        self.columnar_min_rows = columnar_min_rows
        self._log_reader: ReaderProcess | None = None
        self._spare: tuple[str, SpareReader] | None = None  # (table, the reader its snapshot takes)
        self._prune_conn: sqlite3.Connection | None = None
        self._prune_lock = threading.Lock()
        self._lock = threading.RLock()
        self._verified_cookie: int | None = None
        self._conn = connect(path)
        try:
            enable_wal(self._conn, path)
            installed = cdc_log.installed_source_id(self._conn)
            if installed is None:  # first open: create the log (the only write an open needs)
                with self._immediate():
                    installed = cdc_log.install_log(self._conn)
            elif not cdc_log.has_pending_table(self._conn):  # a log older than the guard triggers
                with self._immediate():
                    cdc_log.install_pending(self._conn)
            self.source_id = installed
            self._slots = cdc_log.log_slots(self._conn)
            self._registrations = cdc_log.read_registry(self._conn)
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.Error):
                raise translate_sqlite_error(exc, path) from exc
            raise

    # -- registry --------------------------------------------------------
    def registrations(self) -> dict[str, Registration]:
        with self._lock:
            return dict(self._registrations)

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    @contextmanager
    def _immediate(self, *, join: bool = False) -> Iterator[None]:
        """One write transaction on the source's connection, committed when the block ends.

        ``BEGIN IMMEDIATE`` takes SQLite's write lock at once, so what the block
        reads cannot change before it commits. An error rolls the transaction
        back and is raised, SQLite's own as a rhei_lake error. With ``join``, a
        transaction the caller already holds on the connection is used (and left
        to the caller) instead of a new one.
        """
        own = not (join and self._conn.in_transaction)
        try:
            if own:
                self._conn.execute("BEGIN IMMEDIATE")
            yield
            if own:
                self._conn.execute("COMMIT")
        except BaseException as exc:
            if own:
                self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise translate_sqlite_error(exc, self.path) from exc
            raise

    def reload_registry(self) -> None:
        """Re-read the registry (another connection may have registered tables)."""
        with self._lock:
            self._registrations = cdc_log.read_registry(self._conn)
            self._slots = cdc_log.log_slots(self._conn)

    def register(
        self, name: str, *, types: Mapping[str, str] | None = None, batch_rows: int = 65_536
    ) -> SnapshotRun | None:
        """Install triggers for ``name`` and reserve its snapshot.

        Returns the snapshot to stream into the lake, or ``None`` when the table
        is already registered with the same schema. A big table's snapshot is
        already reading (batches of ``batch_rows`` at most, for its ``reader``).
        """
        with self._lock:
            reader = None
            run: SnapshotRun | None = None
            times = PhaseTimes()
            try:
                pending = self._registrations.get(canonical_table_name(self._conn, name))
                if pending is None or not pending.ready:
                    with times.measure("reader start"):
                        reader = self._columnar_reader(name)
                self._conn.execute("BEGIN IMMEDIATE")
                if types is None and pending is not None:  # registered again as it was: with its types=
                    types = self._kept_overrides(pending.spec)
                spec = read_table_spec(self._conn, name, types=types, source=SOURCE_KIND, source_id=self.source_id)
                current = self._registrations.get(spec.name)
                same = current is not None and current.spec.same_shape(spec)
                if current is not None and (current.ready or same):
                    self._conn.execute("ROLLBACK")
                    if not same:
                        raise self._retype_refused(current.spec, dict(types or {}))
                    if reader is not None:
                        reader.close()
                    return None
                if current is not None:  # its snapshot never landed: registered again with other types
                    drop_triggers(self._conn, spec.name)
                    cdc_log.delete_table_events(self._conn, spec.name)
                run = self._begin_snapshot(spec, reader, times, batch_rows)
                return run
            except BaseException as exc:
                self._failed(run, reader)
                if isinstance(exc, sqlite3.Error):
                    raise translate_sqlite_error(exc, self.path) from exc
                raise

    def _failed(self, run: SnapshotRun | None, reader: ReaderProcess | None) -> None:
        """A registration (or a snapshot taken anew) failed: undo its transaction if it is open, and stop
        its run, reading already if it got that far (an interrupt after the commit), else its reader."""
        self._rollback()
        if run is not None:
            run.close()
        elif reader is not None:
            reader.close()

    def _as_it_is(self, spec: TableSpec) -> TableSpec:
        """``spec``'s table as SQLite declares it now, with the ``types=`` it was registered with."""
        now = read_table_spec(
            self._conn, spec.name, types=self._kept_overrides(spec), source=SOURCE_KIND, source_id=self.source_id
        )
        return now if now.name == spec.name and not now.same_shape(spec) else spec

    def _kept_overrides(self, spec: TableSpec) -> dict[str, str]:
        """The ``types=`` ``spec`` was registered with, for the columns its table still has (the application
        may have dropped one since: a plain register_table must not fail on a column it never named)."""
        present = {row[0] for row in self._conn.execute("SELECT name FROM pragma_table_xinfo(?)", (spec.name,))}
        return {column: declared for column, declared in type_overrides(spec).items() if column in present}

    def _retype_refused(self, spec: TableSpec, types: dict[str, str]) -> SchemaError:
        """A mirrored table registered again with other ``types``: its history has the old ones, so only a
        new lake can take them (the way on: stop mirroring it here first, or the new lake's first snapshot
        would register it again with the old types)."""
        name = spec.name
        return SchemaError(
            f"table {name!r} is already mirrored, with columns {[f'{c.name} {c.declared_type}' for c in spec.columns]} "
            "(its snapshot is committed: opening a lake retries a registration's refused snapshot); types= applies to a table's "
            "first registration only. Add or drop columns with lake.add_column/lake.drop_column. To mirror it "
            f"with types={types!r}, start a new lake: stop mirroring it here (lake.unregister_table({name!r}), which "
            "commits what was captured first: a change stuck on a value is repaired as its error says), close "
            f"this lake, detach the database from it (rhei_lake.detach_database({self.path!r})), open a lake on a new "
            f"storage location and call lake.register_table({name!r}, types={types!r}) there (this lake, on durable "
            "storage, stays readable with rhei_lake.open(storage=...))"
        )

    def restart_snapshot(self, table: str, *, batch_rows: int = 65_536) -> SnapshotRun:
        """Take a fresh snapshot of a registered table (its lake copy is missing or never landed).

        The snapshot takes the table as SQLite declares it now, with the ``types=`` it was registered
        with (for the columns it still has): nothing in the lake holds the registered layout, and the
        application may have changed it meanwhile (a rebuild while no lake was open). The registry
        records the spec the snapshot used (:attr:`SnapshotRun.spec`).
        """
        with self._lock:
            times = PhaseTimes()
            with times.measure("reader start"):
                reader = self._columnar_reader(table)
            run: SnapshotRun | None = None
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                spec = self._as_it_is(self._registrations[table].spec)
                cdc_log.delete_table_events(self._conn, table)
                run = self._begin_snapshot(spec, reader, times, batch_rows)
                return run
            except BaseException as exc:
                self._failed(run, reader)
                if isinstance(exc, sqlite3.Error):
                    raise translate_sqlite_error(exc, self.path) from exc
                raise

    def _wants_columnar(self, table: str) -> bool:
        if self.columnar_min_rows <= 0 or not fast_reader_available():
            return False
        return has_rows(self._conn, canonical_table_name(self._conn, table), self.columnar_min_rows)

    def _columnar_reader(self, table: str) -> ReaderProcess | None:
        """A reader process for a big table's snapshot, started before any lock is taken
        (by :meth:`prepare_snapshot` when it was told ahead: the table was found big then)."""
        if self._spare is not None and self._spare[0] == table:
            spare, self._spare = self._spare[1], None
            try:
                return spare.reader(self.path)
            finally:
                spare.close()  # not taken: stopped here
        return ReaderProcess(self.path) if self._wants_columnar(table) else None

    def prepare_snapshot(self, table: str) -> None:
        """``table``'s snapshot is about to be taken: start its reader process now, when it will have
        one, so that its start overlaps other work (the rest of the lake's open; deltalake's import
        before a registration). One table at a time; :meth:`release_spare` stops one not taken. Only a
        head start: what fails here (a table gone, a busy database, no process to spare) is left to
        the snapshot, which meets it again and reports it."""
        with self._lock:
            if self._spare is not None:
                return
            try:
                if self._wants_columnar(table):
                    self._spare = (table, SpareReader(self.path))
            except (SchemaError, SourceError, sqlite3.Error):
                pass

    def release_spare(self) -> None:
        """Stop a reader process :meth:`prepare_snapshot` started that no snapshot took."""
        with self._lock:
            if self._spare is not None:
                self._spare[1].close()
                self._spare = None

    def _begin_snapshot(
        self, spec: TableSpec, columnar: ReaderProcess | None, times: PhaseTimes, batch_rows: int
    ) -> SnapshotRun:
        """Inside an IMMEDIATE transaction: triggers + reservation + registry, pin a reader, commit.

        The run (a columnar one reads from the pin on) is closed if anything fails before it is returned.
        """
        run: SnapshotRun | None = None
        try:
            with times.around("registration"):
                run = self._registered_snapshot(spec, columnar, times, batch_rows)
            return run
        except BaseException:
            if run is not None:
                run.close()
            raise

    def _registered_snapshot(
        self, spec: TableSpec, columnar: ReaderProcess | None, times: PhaseTimes, batch_rows: int
    ) -> SnapshotRun:
        self._slots = cdc_log.ensure_slots(self._conn, len(spec.columns))
        install_triggers(self._conn, spec)
        schema_watch.record(self._conn, spec.name)
        clock = cdc_log.snapshot_clock(self._conn)
        run = self._pinned_run(spec, clock, columnar, times)
        try:
            # A columnar run reads from here on, while its rows are counted here: its reader's
            # snapshot and this count see the same rows (this transaction holds the write lock).
            run.start(batch_rows)
            rows = _count_rows(self._conn, spec.name)
            snap_from, snap_to, _ = cdc_log.reserve_snapshot(self._conn, spec.name, rows, clock)
            registration = Registration(spec, STATE_SNAPSHOT, snap_from, snap_to, 0)
            cdc_log.write_registration(self._conn, registration)
            run.reserved(registration)
            self._conn.execute("COMMIT")
        except BaseException:
            run.close()
            raise
        self._registrations[spec.name] = registration
        return run

    def _pinned_run(
        self, spec: TableSpec, clock: cdc_log.SnapshotClock, columnar: ReaderProcess | None, times: PhaseTimes
    ) -> SnapshotRun:
        """The snapshot's run, its reader's read transaction pinned: the reader's first read pins its WAL
        snapshot, the state just before the registering commit, which (the caller holds the write lock)
        equals the state at the commit."""
        pin = f"SELECT 1 FROM {quote_ident(spec.name)} NOT INDEXED LIMIT 1"
        if columnar is not None:
            with times.measure("reader start"):
                columnar.begin()
                columnar.query(pin).read_all()
            return ColumnarSnapshot(columnar, spec, clock, times)
        reader = connect(self.path)
        try:
            reader.execute("BEGIN")
            reader.execute(pin).fetchall()
        except BaseException:
            reader.close()
            raise
        return RowSnapshot(reader, spec, clock, times)

    def mark_ready(self, table: str, synced_seq: int) -> None:
        with self._lock:
            reg = self._registrations[table]
            ready = Registration(
                reg.spec, STATE_READY, reg.snapshot_from, reg.snapshot_to, max(reg.synced_seq, synced_seq)
            )
            with self._immediate():
                cdc_log.write_registration(self._conn, ready)
            self._registrations[table] = ready

    def alter_table(self, table: str, spec: TableSpec, ddl: list[str], *, before: Callable[[], object]) -> None:
        """Run ``ddl`` on ``table`` so its columns become ``spec``'s, with triggers and registry to match.

        One IMMEDIATE transaction: no other writer can capture an event while
        ``before()`` runs (it commits the events already in the log, which use
        the old column layout) and until the new triggers are in place.
        """
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc
            try:
                before()
                first = cdc_log.max_seq(self._conn) + 1  # the first event of the new layout
                spec = schema_watch.stamp_added_columns(self._registrations[table].spec, spec, first)
                drop_triggers(self._conn, table)
                for statement in ddl:
                    self._conn.execute(statement)
                live = [r[0] for r in self._conn.execute("SELECT name FROM pragma_table_xinfo(?)", (table,))]
                if live != spec.column_names:
                    raise SchemaError(
                        f"table {table!r}: after the change SQLite has columns {live}, expected {spec.column_names}"
                    )
                self._slots = cdc_log.ensure_slots(self._conn, len(spec.columns))
                install_triggers(self._conn, spec)
                schema_watch.record(self._conn, table)
                registration = replace(self._registrations[table], spec=spec)
                cdc_log.write_registration(self._conn, registration)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._slots = cdc_log.log_slots(self._conn)
                raise SchemaError(f"table {table!r}: SQLite refused the change: {exc}") from exc
            except BaseException:
                self._rollback()
                self._slots = cdc_log.log_slots(self._conn)
                raise
            self._registrations[table] = registration

    def unregister(self, table: str, *, before: Callable[[], object] = lambda: None) -> None:
        """Drop the triggers and registry entry of ``table`` (its lake tables stay).

        ``before()`` runs first in the same IMMEDIATE transaction (it commits the
        events captured so far), so no write to the table falls in between.
        """
        with self._lock:
            with self._immediate():
                before()
                drop_triggers(self._conn, table)
                cdc_log.delete_table_events(self._conn, table)
                self._conn.execute(f"DELETE FROM {cdc_log.REGISTRY_TABLE} WHERE name = ?", (table,))
                schema_watch.forget(self._conn, table)
                reconcile_log.discard_table(self._conn, table)
            self._registrations.pop(table, None)

    # -- schema changes made outside rhei_lake ---------------------------
    def schema_drifts(self) -> tuple[int, list[SchemaDrift]]:
        """SQLite's schema cookie, and how each ready table differs from what is mirrored.

        One ``PRAGMA`` read when the cookie did not move since the last
        :meth:`schema_verified`; otherwise every ready table is compared with
        its fingerprint (see :mod:`rhei_lake.capture.schema_watch`).
        """
        with self._lock:
            try:
                cookie = schema_watch.schema_cookie(self._conn)
                if cookie == self._verified_cookie:
                    return cookie, []
                ready = {name: reg.spec for name, reg in self._registrations.items() if reg.ready}
                return cookie, schema_watch.judge(self._conn, ready)
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc

    def schema_verified(self, cookie: int) -> None:
        """Every mirrored table matched its fingerprint when the schema cookie was ``cookie``."""
        with self._lock:
            self._verified_cookie = cookie

    def _begin_with_reader(self, table: str) -> ReaderProcess | None:
        """Start a big table's reader process (before the lock, as for a registration), then BEGIN IMMEDIATE.

        The reader is ``None`` for a small table, or one that is gone (the caller judges that).
        """
        try:
            reader = self._columnar_reader(table)
        except SchemaError:
            reader = None
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self.path) from exc
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if reader is not None:
                reader.close()
            raise translate_sqlite_error(exc, self.path) from exc
        return reader

    def resnapshot(self, table: str, *, before: Callable[[], object], derive: DeriveEvents) -> int:
        """Derive the events that bring the lake's copy of ``table`` to its rows now; returns how many.

        As :meth:`follow_schema` does for a changed table, under one IMMEDIATE
        transaction (no write slips between the read and the sequence numbers):
        ``before()`` commits what was captured, the rows are read, ``derive``
        turns them into the events the lake lacks, and those are numbered and
        stored until the lake has them (:mod:`rhei_lake.capture.reconcile_log`).
        """
        with self._lock:
            reader = self._begin_with_reader(table)
            try:
                before()
                spec = self._registrations[table].spec
                rows = reconcile_log.table_rows_columnar(reader, spec) if reader is not None else None
                if rows is None:
                    rows = reconcile_log.table_rows(self._conn, spec)
                derived = derive(spec, spec, rows)
                if derived.num_rows:
                    start, _, ts = cdc_log.reserve_snapshot(self._conn, table, derived.num_rows)
                    reconcile_log.store(self._conn, table, reconcile_log.numbered(spec, derived, start + 1, ts))
                self._conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise translate_sqlite_error(exc, self.path) from exc
                raise
            finally:
                if reader is not None:
                    reader.close()
            return derived.num_rows

    def follow_schema(self, table: str, *, before: Callable[[], object], derive: DeriveEvents) -> SchemaDrift | None:
        """Follow a change of ``table``'s schema made outside rhei_lake; returns it (``None``: nothing changed).

        One IMMEDIATE transaction, so no write can slip between the judgement
        and the new triggers: ``before()`` commits the events already captured
        (they use the mirrored layout); the table is judged again (a refused
        change raises :class:`~rhei_lake.errors.SchemaChangedError`); its rows
        are read and ``derive`` turns them into the events the lake lacks; those
        get sequence numbers reserved in the CDC log and are stored until the
        lake has them (:mod:`rhei_lake.capture.reconcile_log`); the triggers,
        registry and fingerprint are rewritten for the new spec. Columns the
        table gained are valid from the first of those sequence numbers.
        """
        with self._lock:
            reader = self._begin_with_reader(table)
            try:
                before()
                mirrored = self._registrations[table]
                drift = schema_watch.inspect(
                    self._conn, mirrored.spec, schema_watch.read_fingerprints(self._conn).get(table)
                )
                if drift is None:
                    self._conn.execute("ROLLBACK")
                    return None
                if drift.action == "refuse":
                    raise drift.error()
                assert drift.spec is not None
                first = cdc_log.max_seq(self._conn) + 1
                spec = schema_watch.stamp_added_columns(mirrored.spec, drift.spec, first)
                rows = reconcile_log.table_rows_columnar(reader, spec) if reader is not None else None
                if rows is None:
                    rows = reconcile_log.table_rows(self._conn, spec)
                derived = derive(mirrored.spec, spec, rows)
                if derived.num_rows:
                    start, _, ts = cdc_log.reserve_snapshot(self._conn, table, derived.num_rows)
                    reconcile_log.store(self._conn, table, reconcile_log.numbered(spec, derived, start + 1, ts))
                self._slots = cdc_log.ensure_slots(self._conn, len(spec.columns))
                install_triggers(self._conn, spec)
                schema_watch.record(self._conn, table)
                registration = replace(mirrored, spec=spec)
                cdc_log.write_registration(self._conn, registration)
                faults.point("schema.follow_before_commit")
                self._conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                self._slots = cdc_log.log_slots(self._conn)
                if isinstance(exc, sqlite3.Error):
                    raise translate_sqlite_error(exc, self.path) from exc
                raise
            finally:
                if reader is not None:
                    reader.close()
            self._registrations[table] = registration
            return drift

    def pending_reconciled(self) -> list[PendingEvents]:
        """Events a schema follow derived that the lake may not have yet, in sequence order."""
        with self._lock:
            try:
                return reconcile_log.pending(self._conn)
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc

    def discard_reconciled(self, first_seqs: list[int]) -> None:
        """Forget derived events the lake has committed (inside a transaction already open here, or in one of its own)."""
        with self._lock, self._immediate(join=True):
            reconcile_log.discard(self._conn, first_seqs)

    # -- events ----------------------------------------------------------
    def read(
        self,
        after: int,
        limit: int,
        *,
        committed: Mapping[str, int] | None = None,
        passed_over: Collection[str] = (),
    ) -> LogBatch:
        """Events after sequence ``after`` (at most ``limit`` log rows), as Arrow per table.

        ``committed`` maps a table to the sequence up to which the lake holds its
        events: those are passed over without being decoded. They may have been
        logged before the table's columns changed (a rebuild, ``drop_column``: the
        change commits every event logged before it first), and log rows hold
        values by position, so only the layout of the events after it is known.

        If a value does not fit its declared type, the batch stops just before that
        event and carries the error, so everything before it can still be committed.

        The events of ``passed_over`` tables (waiting for their registration, even
        one still recorded as mirrored) are not decoded: the table only shows in
        :attr:`LogBatch.unknown`, so a value of theirs that does not fit stops no
        other table.
        """
        committed = committed or {}
        columnar = self._read_columnar(after, limit, committed, passed_over)
        if columnar is not None:
            return columnar
        with self._lock:
            try:
                rows = cdc_log.read_events(self._conn, after, limit, self._slots)
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc
            registrations = self._registrations
        batch = LogBatch(through=rows[-1][0] if rows else after, rows=len(rows))
        grouped: dict[str, list[tuple]] = {}
        for row in rows:
            if row[2] == cdc_log.OP_SNAPSHOT_MARKER or row[0] <= committed.get(row[1], 0):
                continue
            grouped.setdefault(row[1], []).append(row)
        for table, table_rows in grouped.items():
            reg = registrations.get(table)
            if reg is None or not reg.ready or table in passed_over:
                batch.unknown.add(table)
                continue
            events, error = _convert_clean_prefix(reg.spec, table_rows)
            batch.tables[table] = events
            if error is not None and (batch.error is None or (error.seq or 0) < (batch.error.seq or 0)):
                batch.error = error
        if batch.error is not None:
            stop = batch.error.seq or 0
            batch.through = stop - 1
            batch.tables = {t: ev for t, ev in _truncate(batch.tables, stop).items() if ev.num_rows}
        return batch

    def _read_columnar(
        self, after: int, limit: int, committed: Mapping[str, int], passed_over: Collection[str]
    ) -> LogBatch | None:
        """A big backlog read per table by the ADBC reader process, or ``None`` to read row by row.

        Also ``None`` when a value may not fit its declared type: the row path
        then finds the exact event and commits everything before it.
        """
        if self.columnar_min_rows <= 0 or not fast_reader_available():
            return None
        with self._lock:
            newest = cdc_log.max_seq(self._conn)
            # Starting the reader costs a fraction of a second, worth it for a big backlog;
            # once running, it beats reading row by row from a few thousand events on.
            threshold = self.columnar_min_rows if self._log_reader is None else _WARM_COLUMNAR_EVENTS
            if newest - after < threshold:
                return None
            through = min(newest, after + limit)
            tables = cdc_log.tables_between(self._conn, after, through)
            registrations = self._registrations
            if self._log_reader is None:
                self._log_reader = ReaderProcess(self.path)
            reader = self._log_reader
        batch = LogBatch(through=through, rows=limit if through < newest else through - after)
        for table in tables:
            reg = registrations.get(table)
            if reg is None or not reg.ready or table in passed_over:
                batch.unknown.add(table)
                continue
            start = max(after, committed.get(table, 0))
            if start >= through:
                continue
            events = _columnar_events(reader, reg.spec, start, through, limit)
            if events is None:
                return None
            if events.num_rows:
                batch.tables[table] = events
        return batch

    def repair_event(
        self,
        table: str,
        seq: int,
        values: Mapping[str, object],
        *,
        synced: int,
        lake_keys: key_repair.LakeKeys,
    ) -> dict[str, object]:
        """Correct values of one captured event that does not fit its declared types.

        The only way past a :class:`TypeMismatchError` short of changing the
        column's type: the event stays in place and in order, with the given
        values, which must convert exactly. A correction of a primary-key column
        must keep every SQLite row its own lake row (see
        :mod:`~rhei_lake.capture.key_repair`; ``synced`` is the table's synced
        watermark, ``lake_keys`` looks keys up in the lake). Returns the values
        it replaced.
        """
        with self._lock:
            reg = self._registrations.get(table)
            if reg is None:
                raise SchemaError(f"table {table!r} is not registered")
            if not reg.ready:
                raise SchemaError(
                    f"table {table!r}: its registration has not finished, so its captured events are not synced; "
                    f"call lake.register_table({table!r}) again, which takes its snapshot anew"
                )
            spec = reg.spec
            unknown = [c for c in values if c not in spec.column_names]
            if unknown:
                raise SchemaError(f"table {table!r} has no column(s) {unknown}; its columns are {spec.column_names}")
            with self._immediate():
                row = cdc_log.read_event(self._conn, seq, self._slots)
                if row is None or row[1] != table or row[2] == cdc_log.OP_SNAPSHOT_MARKER:
                    raise SourceError(
                        f"event {seq} of table {table!r} is not in the CDC log (already committed and pruned, "
                        "or another table's)"
                    )
                slots = {spec.column_names.index(c): v for c, v in values.items()}
                patched = list(row)
                for index, value in slots.items():
                    patched[4 + index] = value
                events_from_log_rows(spec, [tuple(patched)])  # raises TypeMismatchError if still wrong
                if key_repair.touches_key(spec, values):
                    image = patched[4 : 4 + len(spec.columns)]
                    problem = key_repair.repair_problem(
                        self._conn, spec, seq, image, synced=synced, slots=self._slots, lake_keys=lake_keys
                    )
                    if problem is not None:
                        raise TypeMismatchError(
                            f"table {table!r}: correcting event {seq} to {dict(values)!r} is refused: {problem}, so "
                            "two SQLite rows would become one lake row. Correct it to the key its row has in SQLite "
                            "(store the row's key in the canonical spelling first); if another row holds that key, "
                            "make the keys distinct in the application, or mirror the column as text in a new lake "
                            "(the error that stopped the sync names the steps)",
                            table=table,
                            column=next(c for c in values if c in spec.primary_key),
                            primary_key={k: row[4 + spec.column_names.index(k)] for k in spec.primary_key},
                            seq=seq,
                        )
                cdc_log.set_event_slots(self._conn, seq, slots)
            return {c: row[4 + spec.column_names.index(c)] for c in values}

    def explain_key_error(
        self, error: TypeMismatchError, *, synced: int, lake_keys: key_repair.LakeKeys
    ) -> TypeMismatchError:
        """``error``, worded as a collision if it refuses a key whose canonical spelling another row holds
        (see :func:`~rhei_lake.capture.key_repair.explain_key_error`)."""
        with self._lock:
            reg = self._registrations.get(error.table)
            if reg is None or error.canonical is None:
                return error
            own = not self._conn.in_transaction
            try:
                if own:
                    self._conn.execute("BEGIN")
                return key_repair.explain_key_error(
                    self._conn,
                    reg.spec,
                    error,
                    database=self.path,
                    synced=synced,
                    slots=self._slots,
                    lake_keys=lake_keys,
                )
            except sqlite3.Error as exc:
                log.warning("could not tell whether the key of %r collides: %s", error.table, exc)
                return error
            finally:
                if own:
                    self._rollback()

    def prune(self, through: int, synced: dict[str, int]) -> int:
        """Delete events committed to the lake (up to ``through``) from the log.

        On a connection of its own, so a prune running in the background never
        holds up reading the log.
        """
        with self._prune_lock:
            try:
                if self._prune_conn is None:
                    self._prune_conn = connect(self.path)
                return cdc_log.prune(self._prune_conn, through, synced)
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc

    def lag(self, after: int) -> tuple[int, int | None]:
        """Events waiting after ``after`` and the oldest one's timestamp (micros)."""
        with self._lock:
            return cdc_log.pending_count(self._conn, after)

    def table_lag(self, table: str, after: int) -> tuple[int, int | None]:
        """Events of ``table`` waiting after ``after`` and the oldest one's timestamp (micros)."""
        with self._lock:
            try:
                return cdc_log.pending_count(self._conn, after, table=table)
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc

    def max_seq(self) -> int:
        with self._lock:
            return cdc_log.max_seq(self._conn)

    def dating_record(self) -> str | None:
        """The read of the CDC log last recorded by :meth:`record_dating` (``None`` if none was)."""
        with self._lock:
            try:
                return cdc_log.read_meta(self._conn, cdc_log.DATING_KEY)
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc

    def record_dating(self, record: str) -> bool:
        """Keep ``record`` (see :mod:`rhei_lake.sync.commit_time`) durably, in a transaction of its own;
        ``False`` when another connection holds the write lock (without waiting for it: an application's
        open transaction must not stall the sync), or when a transaction is open here (a schema change
        draining the log first): the record would last only if that commits, and the read is claimed now."""
        with self._lock:
            if self._conn.in_transaction:
                return False
            try:
                self._conn.execute("PRAGMA busy_timeout = 0")
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                        return False
                    raise
                finally:
                    self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                cdc_log.write_meta(self._conn, cdc_log.DATING_KEY, record)
                self._conn.execute("COMMIT")
                return True
            except sqlite3.Error as exc:
                self._rollback()
                raise translate_sqlite_error(exc, self.path) from exc

    def close(self) -> None:
        with self._lock:
            self.release_spare()
            if self._log_reader is not None:
                self._log_reader.close()
                self._log_reader = None
            with self._prune_lock:
                if self._prune_conn is not None:
                    self._prune_conn.close()
                    self._prune_conn = None
            self._conn.close()


def _count_rows(conn: sqlite3.Connection, table: str) -> int:
    """``count(*)`` of ``table``; without its indexes if one uses a collation this connection lacks.

    SQLite counts through the smallest index (faster than the table), which needs
    the index's collation, and the application may register one of its own.
    """
    try:
        return conn.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()[0]
    except sqlite3.OperationalError as exc:
        if "no such collation sequence" not in str(exc):
            raise
        return conn.execute(f"SELECT count(*) FROM {quote_ident(table)} NOT INDEXED").fetchone()[0]


def _columnar_events(reader: ReaderProcess, spec: TableSpec, after: int, through: int, limit: int) -> pa.Table | None:
    """``spec``'s events in ``(after, through]`` read columnar, or ``None`` if they need the row path."""
    sql, typed = log_sql(spec, LOG_TABLE, after, through)
    parts = []
    try:
        for raw in after_witness(reader.query(sql, batch_rows=min(limit, 65_536))):
            arrays, _ = convert(typed, raw)
            ts = raw.column(2).cast(pa.int64()).cast(TIMESTAMP_TYPE)
            parts.append(pa.Table.from_arrays([*arrays, raw.column(0), raw.column(1), ts], schema=spec.changes_schema))
    except NeedsDiagnosis:
        return None
    except SourceError as exc:
        if is_misfit_error(exc):
            return None
        raise
    return pa.concat_tables(parts) if parts else spec.changes_schema.empty_table()


def _convert_clean_prefix(spec: TableSpec, rows: list[tuple]) -> tuple[pa.Table, TypeMismatchError | None]:
    """Convert ``rows``; on a bad value, convert the rows before the earliest bad event instead."""
    error: TypeMismatchError | None = None
    while True:
        if not rows:
            return spec.changes_schema.empty_table(), error
        try:
            return events_from_log_rows(spec, rows), error
        except TypeMismatchError as exc:
            error = exc
            rows = [r for r in rows if r[0] < (exc.seq or 0)]


def _truncate(tables: dict[str, pa.Table], stop: int) -> dict[str, pa.Table]:
    import pyarrow.compute as pc

    from rhei_lake.catalog import SEQ

    return {t: ev.filter(pc.less(ev.column(SEQ), stop)) for t, ev in tables.items()}
