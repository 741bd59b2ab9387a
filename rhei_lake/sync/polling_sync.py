"""Sidecar sync: follow tables of a database the engine does not own, by polling.

One cycle per table: read the rows after the committed ``(updated_at, key)``
cursor in bounded batches from one consistent read; turn each batch into
events (:mod:`rhei_lake.sync.polled_events`) numbered after the table's
watermark; commit events, watermark and the batch's last cursor together,
conditional on the watermark not having moved. A crash before a commit re-reads
the batch from the previous cursor (no loss); a crash after it resumes from
the new cursor (no duplicate); everything needed to resume is in the lake.

A big table the lake holds nothing of is read whole instead, a column at a
time (``sqlite_first_read`` / ``postgres_first_read`` in :mod:`rhei_lake.capture`),
and committed in one Delta write followed by its cursor.

SQLite orders a text ``updated_at`` by its bytes, which is the order of its
instants only among values spelled alike; each poll also reads, in the same
snapshot, the rows another spelling sorts before the cursor although they are
not older than what the sidecar had read (:mod:`rhei_lake.sync.unordered`).

Every ``hard_delete_interval`` seconds each table is also reconciled
(:mod:`rhei_lake.sync.reconcile`): rows that vanished become ``D`` events, and
rows whose change the cursor cannot see (committed late, with an
``updated_at`` at or before the cursor) are caught up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pyarrow as pa

from rhei_lake import faults
from rhei_lake.capture.poll_cursor import PollCursor
from rhei_lake.capture.polled_source import PolledSource, PollPlan
from rhei_lake.capture.typed_select import NeedsDiagnosis
from rhei_lake.catalog import TableSpec
from rhei_lake.config import LakeConfig
from rhei_lake.errors import CommitConflictError, RheiError, SourceError
from rhei_lake.storage.changelog import Changelog
from rhei_lake.storage.lake_storage import LakeStorage
from rhei_lake.sync.contract import ProgressCallback
from rhei_lake.sync.housekeeping import Housekeeper, bound_tail
from rhei_lake.sync.lake_state import FoldedTable, LakeState
from rhei_lake.sync.polled_events import EventBuilder, updated_at_micros
from rhei_lake.sync.reconcile import reconcile
from rhei_lake.sync.report import ReportBuilder, SyncReport
from rhei_lake.sync.tables import open_changelog
from rhei_lake.sync.unordered import UnorderedWatch, catch_up_unordered
from rhei_lake.timeutil import now_micros

log = logging.getLogger("rhei_lake.sync")


class PolledTableSync:
    """The polling state of one table: its plan, changelog and event builder."""

    def __init__(self, plan: PollPlan, changelog: Changelog, folded: FoldedTable | None = None) -> None:
        self.plan = plan
        self.changelog = changelog
        self.builder = EventBuilder(
            plan.spec, plan.table, relation=plan.relation, quote=plan.quote, literal=plan.literal
        )
        self.state = LakeState(plan.spec, changelog, folded)
        self.last_reconcile: float | None = None
        self.unordered = UnorderedWatch()

    @property
    def name(self) -> str:
        return self.plan.spec.name

    def cursor(self) -> PollCursor | None:
        return PollCursor.decode(self.changelog.cursor, table=self.name)

    def clock(self, cursor: PollCursor | None) -> int:
        """The source time the cursor has reached (UTC micros): what undated deletes are stamped with."""
        if cursor is not None:
            try:
                return updated_at_micros(cursor.updated_at, self.plan.table.epoch_unit)
            except (ValueError, OverflowError, TypeError):
                pass
        return now_micros()

    def catch_up(self, source: PolledSource, keys: Sequence[tuple], clock: int) -> int:
        """Read the current rows of ``keys`` and commit what changed, the cursor left as it is;
        raises the builder's error (a row going backwards, an unreadable value) after
        committing the rows before it. Returns the events committed."""
        rows = source.fetch(self.plan, keys) if keys else []
        if not rows:
            return 0
        base = self.changelog.watermark
        built = self.builder.build(rows, base, self.state.last_events, clock)
        committed = self.commit(built.events, base=base, cursor=None) if built.events.num_rows else 0
        if built.error is not None:
            raise built.error
        return committed

    def commit(self, events, *, base: int, cursor: PollCursor | None) -> int:
        """Commit ``events`` (numbered from ``base + 1``) and ``cursor``; the watermark must still be ``base``."""
        watermark = base + max(events.num_rows, 1)
        self.changelog.commit(events, watermark=watermark, cursor=cursor.encode() if cursor else None, expected=base)
        return events.num_rows


@contextmanager
def _reload_on_conflict(table: PolledTableSync) -> Iterator[None]:
    """Another process committed to this table: re-read its watermark and cursor, let the caller retry."""
    try:
        yield
    except CommitConflictError:
        log.warning("table %r: another writer committed to it; reloading", table.name)
        table.changelog.load()
        raise


class PollingSync:
    """Moves rows polled from a :class:`PolledSource` into the lake's changelogs.

    Keeps the :class:`~rhei_lake.sync.contract.Sync` contract.
    """

    def __init__(self, source: PolledSource, storage: LakeStorage, config: LakeConfig) -> None:
        self.source = source
        self.storage = storage
        self.config = config
        self.changelogs: dict[str, Changelog] = {}
        self.waiting: dict[str, RheiError] = {}  # every configured table is described at attach, or the open fails
        self._tables: dict[str, PolledTableSync] = {}
        self._lock = threading.RLock()
        self._housekeeper = Housekeeper("rhei-polling-housekeeping")

    @property
    def specs(self) -> dict[str, TableSpec]:
        return {name: t.plan.spec for name, t in self._tables.items()}

    @property
    def position(self) -> None:
        return None  # a polled source has no log position: each table has its own cursor

    @property
    def horizon(self) -> None:
        return None  # polling cannot tell that nothing committed before an instant is still unseen

    @property
    def lag_probe(self) -> None:
        return None  # what changed since the last poll is known only by polling

    @property
    def read_only_source(self) -> str:
        return self.source.location.masked

    def attach(self, progress: ProgressCallback | None = None) -> None:
        """Describe every configured table at the source and open (or create) its changelog."""
        with self._lock:
            min_rows = self.config.columnar_min_rows
            for table in self.config.tables:
                plan = self.source.describe(table)
                if min_rows > 0:  # a first sync that reads it whole: its reader process starts while the lake opens
                    store = self.storage.table_store(plan.spec.name, "changes")
                    self.source.prepare_first_read(plan, min_rows, lake_holds_none=lambda: not store.exists())
                changelog, _created = open_changelog(self.storage, plan.spec, self.config)
                self._tables[plan.spec.name] = PolledTableSync(plan, changelog, self._folded(plan))
                self.changelogs[plan.spec.name] = changelog

    def _folded(self, plan: PollPlan) -> FoldedTable:
        """Where compaction folds the table's events (it may not exist yet)."""
        temporal = self.config.sync_mode == "temporal"
        unit = plan.table.epoch_unit
        return FoldedTable(
            store=self.storage.table_store(plan.spec.name, "history" if temporal else "current"),
            temporal=temporal,
            row_time=lambda value: updated_at_micros(value, unit),
            updated_at=plan.table.updated_at,
        )

    # -- the cycle -------------------------------------------------------
    def sync_now(self, progress: ProgressCallback | None = None) -> SyncReport:
        """Poll every table and commit what changed; returns once all of it is committed."""
        started = time.perf_counter()
        report = ReportBuilder()
        with self._lock:
            for table in self._tables.values():
                with _reload_on_conflict(table):
                    events, fresh = self._poll(table, progress)
                report.add(table.name, events, table.changelog.watermark)
                if fresh:
                    table.last_reconcile = time.monotonic()
            for table in self._tables.values():
                if self._reconcile_due(table):
                    with _reload_on_conflict(table):
                        events = reconcile(table, self.source, self.config.batch_size)
                    table.last_reconcile = time.monotonic()
                    report.add(table.name, events, table.changelog.watermark)
            for name, changelog in self.changelogs.items():
                if changelog.needs_flush:
                    self._housekeeper.submit(("flush", name), changelog.flush)
        return report.build(time.perf_counter() - started)

    def _reconcile_due(self, table: PolledTableSync) -> bool:
        if not table.plan.table.hard_deletes:
            return False
        if table.last_reconcile is None:
            return True
        return time.monotonic() - table.last_reconcile >= self.config.hard_delete_interval

    def reconcile_now(self) -> int:
        """Run the hard-delete / late-row scan of every table now; returns the events it committed."""
        with self._lock:
            total = 0
            for table in self._tables.values():
                if table.plan.table.hard_deletes:
                    with _reload_on_conflict(table):
                        total += reconcile(table, self.source, self.config.batch_size)
                    table.last_reconcile = time.monotonic()
            return total

    def _poll(self, table: PolledTableSync, progress: ProgressCallback | None) -> tuple[int, bool]:
        """Commit the rows changed after the table's cursor; returns (events, whether the lake was empty)."""
        changelog = table.changelog
        cursor = table.cursor()
        fresh = cursor is None and changelog.watermark == 0
        counter = self.source.commit_counter()  # before the read's snapshot
        since = table.unordered.look_since(cursor, table.plan.table.epoch_unit, counter)
        batch_rows = self.config.batch_size
        tick: Callable[[int], None] | None = None
        if progress is not None:
            total = self.source.count_changes(table.plan, cursor)

            def tick(done: int) -> None:
                progress(table.name, done, max(total, done))

            tick(0)
        if fresh:
            first = self._first_sync(table, tick)
            if first is not None:
                self._reached(table)
                return first, fresh
        committed = 0
        done = 0
        stream = self.source.read_changes(table.plan, cursor, batch_rows, unordered_since=since)
        try:
            for rows in stream:
                base = changelog.watermark
                # Within one stream (one snapshot) a key appears once: an empty lake needs no lookups.
                lookup = None if fresh else table.state.last_events
                built = table.builder.build(rows, base, lookup, table.clock(cursor))
                if built.consumed:
                    last = rows[built.consumed - 1]
                    cursor = PollCursor(last[table.builder.updated_index], table.builder.raw_key(last))
                    committed += table.commit(built.events, base=base, cursor=cursor)
                    bound_tail(self._housekeeper, table.name, changelog)
                done += len(rows)
                if tick is not None:
                    tick(done)
                if built.error is not None:
                    raise built.error
        finally:
            stream.close()
        if since is not None and cursor is not None:
            committed += catch_up_unordered(table, self.source, stream.unordered, since, cursor)
            table.unordered.counter = counter
        self._reached(table)
        if committed:
            log.info("table %r: %d polled events committed", table.name, committed)
        return committed, fresh

    @staticmethod
    def _reached(table: PolledTableSync) -> None:
        """After a poll: the instant of the cursor it ended on is a time its snapshot held."""
        cursor = table.cursor()
        if cursor is not None:
            instant = updated_at_micros(cursor.updated_at, table.plan.table.epoch_unit)
            table.unordered.reached = max(table.unordered.reached or instant, instant)

    def _first_sync(self, table: PolledTableSync, tick: Callable[[int], None] | None) -> int | None:
        """Commit a table the lake holds nothing of in one go, read a column at a time.

        Two commits: the events, with the watermark at the rows counted, then the cursor
        the read ended on. A crash between them leaves no cursor: the next poll re-reads
        the table from the start and finds every row already in the lake (same
        ``updated_at``, same values: no event). Returns the events committed, or ``None``
        when the source has no such read for this table, or a value needs the row path
        (which then commits the rows before it and names it).
        """
        first = self.source.first_read(table.plan, self.config.columnar_min_rows)
        if first is None:
            return None
        changelog = table.changelog
        base = changelog.watermark
        times = first.times
        raised: list[BaseException] = []  # what the stream raised: the writer consuming it reports only its text
        built_events = 0

        def events() -> Iterator[pa.RecordBatch]:
            nonlocal built_events
            done = 0
            try:
                for columns, deleted in first.batches(self.config.batch_size):  # it times its waits
                    with times.measure("events"):
                        built = table.builder.first_events(columns, deleted, base + built_events)
                    if built is None:
                        raise NeedsDiagnosis
                    built_events += built.num_rows
                    done += columns.num_rows
                    if done > counted:
                        raise SourceError(f"the first read of {table.name!r} read more rows than it counted; retry")
                    yield from built.to_batches()
                    if tick is not None:
                        tick(done)
                if done != counted:
                    raise SourceError(f"the first read of {table.name!r} read {done} of the {counted} rows it counted")
            except Exception as exc:
                raised.append(exc)
                raise

        try:
            try:
                counted = first.rows
            except SourceError as exc:
                # The count failed (a statement timeout on the whole table, say) where the read may not
                # have: the row poll reads in small steps, and raises what it meets itself.
                log.warning(
                    "table %r: the columnar first read could not count the table (%s); reading row by row",
                    table.name,
                    exc,
                )
                return None
            if counted == 0:
                return None
            reader = pa.RecordBatchReader.from_batches(table.plan.spec.changes_schema, events())
            try:
                with times.around("delta write"):
                    changelog.commit_stream(reader, watermark=base + counted)
            except Exception as exc:
                if raised and isinstance(raised[0], NeedsDiagnosis):
                    log.info("table %r: a value needs the row-by-row read; switching to it", table.name)
                    return None
                if raised and raised[0] is not exc:
                    raise raised[0] from exc  # e.g. a source that went away: transient, as it was raised
                raise
        finally:
            first.close()
        faults.point("first_sync.after_events_before_cursor")
        with times.measure("cursor commit"):
            table.commit(table.plan.spec.changes_schema.empty_table(), base=base + counted, cursor=first.cursor)
        log.info(
            "table %r: first sync of %d rows committed in one read (%s)",
            table.name,
            built_events,
            times,
            extra={"phases": times.rounded()},
        )
        return built_events

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
            self.source.close()
