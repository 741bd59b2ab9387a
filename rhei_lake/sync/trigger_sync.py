"""Exactly-once sync from the SQLite CDC log into each table's changelog.

One cycle: read a bounded batch of log rows after the current position, convert
them to Arrow per table, commit each table's events with its watermark (the
changelog drops what is already there), advance. Committed events are deleted
from the log at most every ``prune_interval`` seconds, and only after the
commit returned: a crash before the commit re-reads the events (no loss), a
crash after it re-reads events the watermark filters (no duplicate).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from rhei_lake import faults
from rhei_lake.capture.cdc_log import Registration
from rhei_lake.capture.key_repair import LakeKeys
from rhei_lake.capture.snapshot import SnapshotRun
from rhei_lake.capture.trigger_source import TriggerSource
from rhei_lake.catalog import TableSpec
from rhei_lake.config import LakeConfig
from rhei_lake.errors import RheiError, SchemaError, SourceError, TypeMismatchError, WatermarkError
from rhei_lake.storage import delta
from rhei_lake.storage.changelog import Changelog
from rhei_lake.storage.lake_storage import INTERNAL_DIR, LakeStorage
from rhei_lake.sync.commit_time import DatingFloor
from rhei_lake.sync.contract import ProgressCallback
from rhei_lake.sync.housekeeping import Housekeeper, bound_tail
from rhei_lake.sync.report import ReportBuilder, SyncReport
from rhei_lake.sync.status import LagProbe
from rhei_lake.sync.schema_follow import LakeSide
from rhei_lake.sync.tables import apply_spec, held_events, open_changelog, reset_unsynced
from rhei_lake.timeutil import now_micros

log = logging.getLogger("rhei_lake.sync")

DATING_BLOB = f"{INTERNAL_DIR}/dating.json"  # a final read recorded while the database's write lock was held


class TriggerSync:
    """Moves events from a :class:`TriggerSource` into the lake's changelogs.

    A table whose registration has not finished (its snapshot was refused or
    failed) is *waiting*: it has no changelog here, so nothing lists or answers
    for it, and its captured events are passed over (taking its snapshot anew
    replaces them); the other tables sync on. :attr:`waiting` holds the error
    that stopped each one, whose message names the way on.
    """

    def __init__(
        self,
        source: TriggerSource,
        storage: LakeStorage,
        config: LakeConfig,
        *,
        lake_keys: LakeKeys | None = None,
    ) -> None:
        self.source = source
        self.storage = storage
        self.config = config
        self.lake_keys = lake_keys
        self.changelogs: dict[str, Changelog] = {}
        self.waiting: dict[str, RheiError] = {}
        self._horizon: int | None = None  # micros: the last complete drain's final read (None before one)
        self._dating = DatingFloor()  # how events are dated; attach() reads what a previous process committed
        self._position: int | None = None
        self._last_prune = 0.0
        self._lake_specs: dict[str, TableSpec] = {}
        self._lock = threading.RLock()
        self._housekeeper = Housekeeper("rhei-trigger-housekeeping")
        self._reconciled_pending: bool | None = None  # None: not looked yet (a crash may have left some)
        self._taking_anew: set[str] = set()  # mirrored tables whose lake copy is being taken anew (see _attach)

    @property
    def position(self) -> int | None:
        """The CDC log sequence up to which every captured event is committed (``None`` before a sync)."""
        return self._position

    @property
    def specs(self) -> dict[str, TableSpec]:
        return {name: reg.spec for name, reg in self.source.registrations().items() if name in self.changelogs}

    @property
    def lag_probe(self) -> LagProbe:
        return self.source.table_lag

    @property
    def read_only_source(self) -> None:
        return None  # the lake owns its database: writes go through it

    # -- attaching and registering ---------------------------------------
    def attach(self, progress: ProgressCallback | None = None) -> None:
        """Open the changelog of every registered table, finishing interrupted snapshots."""
        with self._lock:
            registrations = self.source.registrations()
            retaken = [
                name
                for name, reg in registrations.items()
                if name not in self.changelogs
                and (not reg.ready or not self.storage.table_store(name, "changes").exists())
            ]
            if retaken:  # a snapshot to take (anew) in this attach: its reader process starts meanwhile
                self.source.prepare_snapshot(retaken[0])
            try:
                self._attach_all(progress)
            finally:
                self.source.release_spare()
            if self._horizon is None:
                cursors = [cl.cursor for cl in self.changelogs.values()]
                stored = self.storage.blobs.get(DATING_BLOB)
                recorded = [self.source.dating_record(), stored.decode(errors="replace") if stored else None]
                self._dating = DatingFloor.committed([*cursors, *recorded])

    def _attach_all(self, progress: ProgressCallback | None) -> None:
        for name in list(self.source.registrations()):
            if name not in self.changelogs:
                try:
                    self._attach(name, progress)
                except RheiError as exc:
                    ready = self.source.registrations()[name].ready
                    if name not in self.waiting or not (ready or isinstance(exc, TypeMismatchError)):
                        raise
                    # A registration whose snapshot meets a value that does not fit (an unfinished
                    # one, or a mirrored table whose lake copy is missing and was taken anew): the
                    # lake still opens, so the row can be fixed through it, and the table waits (see
                    # waiting) with the error's way on, register_table, open to it. A mirrored table whose
                    # copy cannot be taken anew at all (dropped while the lake was closed) waits too: the
                    # first sync refuses it like any dropped table, naming unregister_table.

    def _attach(self, table: str, progress: ProgressCallback | None) -> None:
        reg = self.source.registrations()[table]
        changelog, created = open_changelog(self.storage, reg.spec, self.config)
        self.changelogs[table] = changelog
        self._lake_specs[table] = reg.spec
        try:
            self._attach_changelog(table, reg, changelog, created, progress)
        except BaseException as exc:
            if not self.source.registrations()[table].ready or table in self._taking_anew:
                self._wait(table, exc)
            raise
        finally:
            self._taking_anew.discard(table)
        self.waiting.pop(table, None)

    def _wait(self, table: str, error: BaseException) -> None:
        """``table``'s registration did not finish: nothing answers for it until it does (see :attr:`waiting`)."""
        self.changelogs.pop(table, None)
        self._lake_specs.pop(table, None)
        if isinstance(error, RheiError):
            self.waiting[table] = error
            log.warning("table %r is not mirrored yet: %s", table, error)

    def _attach_changelog(
        self, table: str, reg: Registration, changelog: Changelog, created: bool, progress: ProgressCallback | None
    ) -> None:
        watermark = changelog.watermark
        newest = self.source.max_seq()
        if watermark > newest:
            raise WatermarkError(
                f"table {table!r}: the lake holds events up to {watermark} but this database's CDC log "
                f"only reaches {newest}; the lake belongs to another copy of the database"
            )
        if reg.ready:
            if created or watermark == 0:
                # A ready table's registry records at least its snapshot as synced, so an empty
                # changelog is a lake that lost (or never got) it: a crash between creating the
                # changelog and committing the snapshot. It holds nothing to contradict; re-snapshot.
                if self.storage.durable and created:
                    log.warning(
                        "table %r has no changelog in %s: taking a fresh snapshot", table, self.storage.location.url
                    )
                faults.point("snapshot.before_start")
                self._taking_anew.add(table)
                self._snapshot(self._restarted(table, reg.spec), progress)
            elif watermark < reg.synced_seq:
                raise WatermarkError(
                    f"table {table!r}: the lake's changelog ends at event {watermark}, but this database already "
                    f"pruned events up to {reg.synced_seq} after committing them; the lake was restored from an "
                    "older copy or is a different lake"
                )
        elif watermark >= reg.snapshot_to:
            self.source.mark_ready(table, watermark)  # the snapshot landed; the registry missed it
        elif watermark == 0:
            self._snapshot(self._restarted(table, reg.spec), progress)
        else:
            raise WatermarkError(
                f"table {table!r}: registration is incomplete but the lake already holds events up to {watermark}"
            )

    def _restarted(self, table: str, spec: TableSpec) -> SnapshotRun:
        """``table``'s snapshot taken anew, its empty changelog given the spec the snapshot takes: the
        table as SQLite declares it now, which may differ from ``spec`` (changed while no lake held a copy)."""
        run = self.source.restart_snapshot(table, batch_rows=self.config.batch_size)
        if run.spec != spec:
            try:
                reset_unsynced(self.storage, run.spec, self.config)
                self.changelogs[table], _ = open_changelog(self.storage, run.spec, self.config)
            except BaseException:
                run.close()
                raise
            self._lake_specs[table] = run.spec
        return run

    def register(
        self, name: str, *, types: Mapping[str, str] | None = None, progress: ProgressCallback | None = None
    ) -> TableSpec:
        """Capture ``name`` from now on and commit its existing rows once."""
        with self._lock:
            run: SnapshotRun | None = None
            try:
                try:
                    if self.storage.durable and not self._mirrored(name):
                        # The snapshot's Delta write needs deltalake: imported while a big table's reader
                        # process starts (~12 ms either), not while the snapshot reads (it would hold the
                        # GIL the read's hand-over needs).
                        self.source.prepare_snapshot(name)
                        delta.preload()
                    run = self.source.register(name, types=types, batch_rows=self.config.batch_size)
                finally:
                    self.source.release_spare()  # not taken: the table was registered already, or it failed
                if run is None:
                    canonical = next(n for n in self.source.registrations() if n.lower() == name.lower())
                    if canonical not in self.changelogs or not self.source.registrations()[canonical].ready:
                        self._attach(canonical, progress)  # also retries a snapshot that failed earlier
                    return self.source.registrations()[canonical].spec
                with run.times.measure("changelog"):  # the rows stream in meanwhile
                    held = held_events(self.storage, run.spec.name, self.config)
                    if not held:
                        reset_unsynced(self.storage, run.spec, self.config)  # an earlier attempt with other types
                        changelog, _ = open_changelog(self.storage, run.spec, self.config)
                if held:
                    run.close()
                    self.source.unregister(run.spec.name)
                    raise self._history_kept(run.spec.name, held, types)
                self.changelogs[run.spec.name] = changelog
                self._lake_specs[run.spec.name] = run.spec
                try:
                    faults.point("snapshot.before_start")
                    self._snapshot(run, progress)
                except BaseException as exc:
                    self._wait(run.spec.name, exc)
                    raise
            except BaseException:
                if run is not None:
                    run.close()  # its read began in the registration: stopped whatever failed after it
                raise
            self.waiting.pop(run.spec.name, None)
            return run.spec

    def _mirrored(self, name: str) -> bool:
        """Whether ``name`` (in any case) is registered and its snapshot committed: registering it again
        takes no snapshot."""
        return any(n.lower() == name.lower() and r.ready for n, r in self.source.registrations().items())

    def _history_kept(self, table: str, held: int, types: Mapping[str, str] | None) -> SchemaError:
        """A table registered again (any types) whose history from an earlier registration the lake keeps:
        only another lake can take it (rhei_lake does not delete a table's Delta tables)."""
        call = f"lake.register_table({table!r}" + (f", types={dict(types)!r})" if types else ")")
        if self.storage.durable:
            way = (
                f"close this lake, detach the database from it (rhei_lake.detach_database({self.source.path!r}); "
                "every table it mirrors is then taken anew by the next lake), open a lake on a new storage location "
                f"and call {call} there (this lake stays readable with rhei_lake.open(storage=...))"
            )
        else:
            way = (
                "close this lake (a memory:// lake keeps nothing once closed), open a new memory:// lake on the "
                f"database (it takes every mirrored table anew) and call {call} there"
            )
        return SchemaError(
            f"table {table!r}: the lake in {self.storage.location.url} already holds its history (events up to "
            f"{held}) from an earlier registration (unregister_table keeps a table's Delta tables); registering it "
            "again here, with these or other types, is refused: a new snapshot over that history would keep rows "
            f"deleted since then alive. To mirror it again, {way}"
        )

    def unregister(self, table: str) -> str:
        """Stop mirroring ``table``: commit what was captured, drop its triggers and registry entry.

        Its Delta tables stay in the lake's storage. Returns the table's name as registered.
        """
        with self._lock:
            names = [n for n in self.source.registrations() if n == table or n.lower() == str(table).lower()]
            if not names:
                raise SchemaError(
                    f"no mirrored table {table!r}; known: {sorted(self.source.registrations()) or 'none'}"
                )
            name = names[0]

            def before() -> None:
                self._drain(ReportBuilder())
                # The reads claimed last may be carried by this table's events alone, and no later process
                # reads its cursor: their floor is recorded alone too.
                record = self._dating.cursor(None)
                if record is not None:
                    self._record_read(record)

            self.source.unregister(name, before=before)
            self.changelogs.pop(name, None)
            self._lake_specs.pop(name, None)
            self.waiting.pop(name, None)
            return name

    def _snapshot(self, run: SnapshotRun, progress: ProgressCallback | None) -> int:
        table = run.spec.name
        times = run.times
        try:
            changelog = self.changelogs[table]
            total = run.expected_rows
            reader = run.reader(self.config.batch_size)
            if progress is not None:
                reader = _reporting(reader, lambda done: progress(table, done, total))
            with times.around("delta write"):
                changelog.commit_stream(reader, watermark=run.watermark)
        except BaseException as exc:
            error = run.error if run.error is not None else exc
            if isinstance(error, TypeMismatchError):
                error = self.source.explain_key_error(error, synced=0, lake_keys=self._lake_keys)
            if error is not exc:
                raise error from exc
            raise
        finally:
            run.close()
        faults.point("snapshot.after_commit_before_ready")
        with times.measure("ready mark"):
            self.source.mark_ready(table, run.watermark)
        log.info(
            "table %r: snapshot of %d rows committed (%s)",
            table,
            run.rows_read,
            times,
            extra={"phases": times.rounded()},
        )
        return run.rows_read

    # -- the cycle -------------------------------------------------------
    def sync_now(self, progress: ProgressCallback | None = None) -> SyncReport:
        """Commit every captured event to the lake; returns once all are committed.

        Tables whose registration has not finished are passed over and named in
        the report (:attr:`SyncReport.waiting`); every other table syncs.
        ``progress`` is not called: a cycle moves what triggers captured since
        the last one, never a table's rows in bulk.
        """
        started = time.perf_counter()
        report = ReportBuilder()
        with self._lock:
            self._follow_schema(report)
            position = self._drain(report)
            faults.point("sync.after_commit_before_prune")
            self._after_cycle(position)
            waiting = {name: str(error) for name, error in self.waiting.items()}
        return report.build(time.perf_counter() - started, waiting=waiting, synced_through=self._horizon)

    def drain(self) -> SyncReport:
        """Like :meth:`sync_now` without pruning, so it can run inside a source write transaction."""
        started = time.perf_counter()
        report = ReportBuilder()
        with self._lock:
            self._drain(report)
        return report.build(time.perf_counter() - started, synced_through=self._horizon)

    @property
    def horizon(self) -> int | None:
        """Micros: every change committed to SQLite before this instant is in the lake (the tables waiting
        for their registration aside), and the lake's answer for any instant up to it is final. The
        instant of the last read of the CDC log that reached its end, once all it read was committed
        (``None`` until this process completed one)."""
        return self._horizon

    def _drain(self, report: ReportBuilder) -> int:
        """Commit every captured event; returns the log position everything up to is committed.

        Events are dated no earlier than just after the last complete drain's final read (the
        horizon): see :mod:`~rhei_lake.sync.commit_time`.
        """
        dating = self._dating
        self._commit_reconciled(report, dating)
        position = self._start_position()
        limit = self.config.batch_size
        while True:
            read_at = now_micros()  # before the read's snapshot: whatever it misses commits after this
            held = {name: cl.watermark for name, cl in self.changelogs.items()}
            batch = self.source.read(position, limit, committed=held, passed_over=set(self.waiting))
            fresh = batch.unknown - set(self.waiting)
            if fresh:
                self._adopt(fresh)
                if fresh - set(self.waiting):
                    continue  # adopted: read again, with their events
            if batch.tables:
                faults.point("sync.after_read_before_commit")
            final = batch.rows < limit and batch.error is None
            cursor = dating.cursor((read_at, batch.through) if final else None)
            carried = False  # whether the cursor was committed with some events
            for table, events in batch.tables.items():
                if table in self.waiting:  # a mirrored table whose copy is to be taken anew: that replaces them
                    continue
                changelog = self.changelogs[table]
                self._ensure_lake_spec(table)
                began = time.perf_counter()
                committed = changelog.commit(dating.apply(events), cursor=cursor)
                bound_tail(self._housekeeper, table, changelog)
                report.add(table, committed, changelog.watermark, time.perf_counter() - began)
                carried = carried or committed > 0
            position = batch.through
            self._position = position
            if batch.error is not None:
                raise self._explained(batch.error)
            if batch.rows < limit:
                horizon = max(read_at, dating.newest)  # every event left has a later sequence than all its reads
                # Claimed only once a restart would date by it: committed with the events, else recorded alone.
                if not carried and cursor is not None:
                    self._record_read(cursor)
                self._horizon = horizon
                self._dating = DatingFloor.after_read(horizon)
                return position

    def _record_read(self, record: str) -> None:
        """Keep a final read whose cursor no event carried durable, without a Delta commit: in the database's
        ``_rhei_meta``, or in the lake's storage while another connection holds the database's write lock
        (an open transaction: the case the record is for, which the sync must not wait for) or a schema
        change holds it here (its transaction may yet roll back, and the read is claimed now)."""
        if not self.source.record_dating(record):
            self.storage.blobs.put(DATING_BLOB, record.encode())

    def _explained(self, error: TypeMismatchError) -> TypeMismatchError:
        """A key refused for its spelling, worded as a collision when the way on it names cannot work."""
        if error.canonical is None or error.table not in self.changelogs:
            return error
        return self.source.explain_key_error(
            error, synced=self.changelogs[error.table].watermark, lake_keys=self._lake_keys
        )

    def _lake_keys(self, table: str, keys: list[tuple]) -> set[tuple]:
        if self.lake_keys is None:
            raise SourceError("this lake cannot look keys up in its rows")
        return self.lake_keys(table, keys)

    def repair_event(self, table: str, seq: int, values: Mapping[str, object]) -> dict[str, object]:
        """Correct a captured event (see :meth:`TriggerSource.repair_event`); returns the values replaced."""
        with self._lock:
            if table in self.waiting:
                raise SchemaError(
                    f"table {table!r}: its registration has not finished, so its captured events are not synced "
                    f"(taking its snapshot anew replaces them): {self.waiting[table]}"
                )
            changelog = self.changelogs.get(table)
            synced = changelog.watermark if changelog is not None else 0
            return self.source.repair_event(table, seq, values, synced=synced, lake_keys=self._lake_keys)

    # -- schema evolution ------------------------------------------------
    def _ensure_lake_spec(self, table: str) -> None:
        """Bring the lake's copy of ``table``'s spec up to the registry's before committing its events."""
        spec = self.source.registrations()[table].spec
        if self._lake_specs.get(table) != spec:
            apply_spec(self.storage, spec)
            self.changelogs[table].load()
            self._lake_specs[table] = spec

    def follow_schema(self, table: str | None = None) -> None:
        """Follow (or refuse) schema changes made outside rhei_lake now: of ``table``, or of every table."""
        with self._lock:
            self._follow_schema(ReportBuilder(), only=table)

    def _follow_schema(self, report: ReportBuilder, only: str | None = None) -> None:
        """Follow or refuse schema changes made outside rhei_lake (see :mod:`rhei_lake.sync.schema_follow`).

        ``only`` limits it to one table (an ``alter`` of that table).
        """
        cookie, drifts = self.source.schema_drifts()
        if only is not None:
            drifts = [d for d in drifts if d.table == only]
        for drift in drifts:
            faults.point("schema.follow_detected")
            if drift.action == "refuse":
                self._drain(report)  # what was captured before the change, in the layout the lake mirrors
                raise drift.error()
            if drift.table in self.waiting:  # no lake copy to follow: registering it again takes one as it is
                continue
            self._follow(drift.table, report)
        if not drifts and only is None:
            self.source.schema_verified(cookie)

    def _follow(self, table: str, report: ReportBuilder) -> None:
        self._drain(report)  # so that the lake's rows, read now, are most likely still exact under the lock
        lake = LakeSide(self.storage, self.changelogs[table], self.config.sync_mode, self.specs[table])
        drift = self.source.follow_schema(table, before=lambda: self._drain(report), derive=lake.events)
        if drift is None:
            return
        log.warning("table %r was changed outside rhei_lake (%s): followed", table, drift.change)
        self._reconciled_pending = True
        faults.point("schema.follow_after_commit")
        self._lake_specs.pop(table, None)
        self._ensure_lake_spec(table)  # also when no event was derived: the views must show the new columns
        self._commit_reconciled(report, self._dating)

    def resnapshot(self, table: str) -> SyncReport:
        """Commit, as new versions, what ``table``'s rows hold that the lake's current rows do not."""
        started = time.perf_counter()
        report = ReportBuilder()
        with self._lock:
            self._drain(report)
            lake = LakeSide(self.storage, self.changelogs[table], self.config.sync_mode, self.specs[table])
            if self.source.resnapshot(table, before=lambda: self._drain(report), derive=lake.events):
                self._reconciled_pending = True
            self._commit_reconciled(report, self._dating)
        return report.build(time.perf_counter() - started)

    def _commit_reconciled(self, report: ReportBuilder, dating: DatingFloor) -> None:
        """Commit the events schema follows derived (before any event captured after them), then forget them."""
        if self._reconciled_pending is False:
            return
        done = []
        for chunk in self.source.pending_reconciled():
            changelog = self.changelogs.get(chunk.table)
            if changelog is not None:
                self._ensure_lake_spec(chunk.table)
                began = time.perf_counter()
                committed = changelog.commit(dating.apply(chunk.events), cursor=dating.cursor(None))
                report.add(chunk.table, committed, changelog.watermark, time.perf_counter() - began)
            done.append(chunk.first_seq)
        if done:
            self.source.discard_reconciled(done)
        self._reconciled_pending = False

    def alter(self, table: str, spec: TableSpec, ddl: list[str], *, prepare_lake: Callable[[], None]) -> None:
        """Change ``table``'s columns to ``spec`` by running ``ddl`` on the source.

        Under the source's write lock: commit every captured event (they use the
        old column layout), run ``prepare_lake`` (physical changes to the Delta
        tables that are harmless if the rest fails), then alter the table,
        reinstall its triggers and record ``spec`` in one transaction. Last,
        the lake's copy of the spec; should that fail, the next sync retries it
        before committing any event of the new layout.
        """
        with self._lock:

            def before_alter() -> None:
                try:
                    self._drain(ReportBuilder())
                except TypeMismatchError as exc:
                    if exc.table != table:
                        exc.add_note(
                            f"the change of {table!r} was not made: it commits every captured event first, and "
                            f"an event of {exc.table!r} stops that as it stops every sync"
                        )
                    raise
                prepare_lake()
                faults.point("schema.after_lake_prepare")

            self.source.alter_table(table, spec, ddl, before=before_alter)
            faults.point("schema.after_source_commit")
            self._lake_specs.pop(table, None)
            self._ensure_lake_spec(table)

    def _start_position(self) -> int:
        if self._position is None:
            marks = [c.watermark for c in self.changelogs.values()]
            self._position = min(marks) if marks else self.source.max_seq()
        return self._position

    def _adopt(self, tables: set[str]) -> None:
        """Events of tables another connection registered: load and attach them before going on.

        One whose snapshot is refused waits (see :attr:`waiting`) and stalls no other table.
        """
        self.source.reload_registry()
        known = self.source.registrations()
        for table in tables:
            if table not in known:
                raise WatermarkError(
                    f"the CDC log holds events of {table!r}, which is not registered; was the registry edited by hand?"
                )
            try:
                self._attach(table, None)
            except TypeMismatchError:
                if table not in self.waiting:
                    raise

    def _after_cycle(self, position: int) -> None:
        """Hand the upkeep the cycle made due to the housekeeper, off the sync's critical path."""
        for name, changelog in self.changelogs.items():
            if changelog.needs_flush:
                self._housekeeper.submit(("flush", name), changelog.flush)
        now = time.monotonic()
        if now - self._last_prune >= self.config.prune_interval:
            self._last_prune = now
            self._housekeeper.submit("prune", lambda: self.prune(position))

    def prune(self, through: int | None = None) -> int:
        """Delete committed events from the CDC log now; returns how many."""
        with self._lock:
            if through is None:
                through = self._start_position()
            synced = {name: cl.watermark for name, cl in self.changelogs.items()}
        return self.source.prune(through, synced)

    def flush(self) -> int:
        """Fold every table's hot-path tail into its Delta changelog."""
        with self._lock:
            return sum(cl.flush() for cl in self.changelogs.values())

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the background upkeep handed off so far is done; False on timeout."""
        return self._housekeeper.wait_idle(timeout)

    def close(self) -> None:
        self._housekeeper.close()
        with self._lock:
            try:
                if self._position is not None:
                    self.prune(self._position)
            finally:
                self.source.close()


def _reporting(reader, tick: Callable[[int], None]):
    import pyarrow as pa

    def batches():
        done = 0
        tick(0)
        for batch in reader:
            done += batch.num_rows
            yield batch
            tick(done)

    return pa.RecordBatchReader.from_batches(reader.schema, batches())
