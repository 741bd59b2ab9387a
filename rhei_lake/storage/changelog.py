"""A table's change feed with its synced watermark: the exactly-once commit point.

``Changelog`` owns the rule from docs/design.md: before committing, read back the
stored watermark and drop events at or below it; commit the rows and the new
watermark together; on a conflict, re-read and retry. On durable tiers the rows
go to the hot-path :class:`~rhei_lake.storage.tail.SegmentTail` and are flushed
into the Delta table in bulk; on ``memory://`` they go straight to the table.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake import faults
from rhei_lake._shared.identifiers import quote_ident
from rhei_lake.catalog import SEQ
from rhei_lake.errors import CommitConflictError, StorageError
from rhei_lake.storage.base import AppTransaction, TableStore
from rhei_lake.storage.tail import Segment, SegmentTail

if TYPE_CHECKING:
    from datafusion import SessionContext


class _Unknown:
    """The table's cursor, not read yet."""


_UNKNOWN = _Unknown()

SYNCED_APP_ID = "rhei.synced"
CURSOR_KEY = "rhei.cursor"
_COMMIT_ATTEMPTS = 3
_LOAD_ATTEMPTS = 20
DISCARD_GRACE_SECONDS = 30.0
"""How long flushed segments stay before they are deleted (as the deleting process counts).

A reader that took the watermark just before a flush still finds the chain it
follows; and a reader that looked at the tail less than half of this ago still
finds every segment written since, so it need not look at the table too (see
:meth:`Changelog.poll`)."""
_FLUSH_ATTEMPTS = 8  # a compaction job may commit to the same table several times in a row


class Changelog:
    """The change feed of one table and the watermark of what it holds."""

    def __init__(
        self,
        store: TableStore,
        tail: SegmentTail | None,
        *,
        flush_segments: int,
        flush_rows: int,
        flush_interval: float | None = None,
        discard_grace: float = DISCARD_GRACE_SECONDS,
    ) -> None:
        self.store = store
        self.discard_grace = discard_grace
        self.tail = tail
        self.flush_segments = flush_segments
        self.flush_rows = flush_rows
        self.flush_interval = flush_interval
        self._lock = threading.RLock()  # the commit state: watermark, segments
        self._store_lock = threading.RLock()  # what readers see of table + tail: held across a flush
        self._stored = 0
        self._stored_cursor: str | None | _Unknown = None
        self._segments: list[Segment] = []
        self._tail_rows = 0
        self._tail_since: float | None = None  # wall-clock time the oldest event in the tail was committed
        self._flushed: list[tuple[float, int]] = []  # (when, watermark) of flushes not yet cleaned up
        self.generation = 0  # bumps on every change visible to readers
        self._loaded = False
        self._tail_looked: tuple[float, float] | None = None  # _clocks() at the start of the last full tail read
        self._table_owed = False  # segments arrived, and the look at the table that must follow has not succeeded

    # -- state -----------------------------------------------------------
    def _state(self) -> tuple[int, int, tuple[int, ...]]:
        return (self.store.version(), self._stored, tuple(segment.end for segment in self._segments))

    def _bump_if_moved(self, before: tuple[int, int, tuple[int, ...]]) -> bool:
        moved = self._state() != before
        if moved:
            self.generation += 1
        return moved

    def load(self) -> None:
        """(Re)read the committed watermark and tail chain from storage (the cursor when first asked for)."""
        with self._lock:
            started = _clocks()
            before = self._state() if self._loaded else None
            if before is None and self.tail is not None:
                # The first load: the table is loaded now if it was not, and _load_tail asks for its next
                # commit after reading the chain; asking before too fetched the same log entry twice.
                self.store.exists()
            else:
                self.store.poll()
            stored = self.store.app_version(SYNCED_APP_ID) or 0
            segments: list[Segment] = []
            if self.tail is not None:
                segments, stored = self._load_tail(stored)
                self._tail_looked = started
                self._table_owed = False
                if stored:  # flushed segments left behind (a crash before their discard) go after the grace,
                    # counted from now: the flush that moved the watermark may have landed while this load ran
                    self._flushed.append((time.monotonic(), stored))
            self._set_stored(stored)
            self._segments = segments
            self._tail_rows = sum(s.rows.num_rows for s in segments)
            self._tail_since = _oldest(segments, loaded_at=time.time())
            if before is None:
                self._loaded = True
                self.generation += 1
            else:
                self._bump_if_moved(before)

    def _set_stored(self, stored: int) -> None:
        if stored != self._stored or stored == 0:
            self._stored_cursor = _UNKNOWN if stored else None
        self._stored = stored

    def poll(self, *, table: bool = True) -> bool:
        """Pick up what other writers committed since this object last looked; whether readers see anything new.

        Reads the segment extending the watermark while there is one (a
        request that finds nothing when nothing was synced). Then, if a
        segment arrived (at this look, or at one whose look at the table
        failed), ``table`` is true or the last read of the tail began
        half the discard grace or more before this one ended, asks the table
        whether it has a newer commit (one more request); only then is the
        table reloaded and the chain re-read from its new watermark.
        Same-process commits are seen without it.

        ``table=False`` is enough to see every sync: the commits that reach the
        table without a segment either hold events a reader already has (a
        flush moves segments it read; a compaction reorganises them) or are
        followed by a bridge segment that leads here (:meth:`commit_stream`);
        and a segment written after the last read of the tail is not deleted
        before the grace has passed (:data:`DISCARD_GRACE_SECONDS`). So the
        time that counts runs to the end of the reads (a reader paused before
        its request may find a segment deleted meanwhile), on a clock that
        also runs while the machine sleeps (:func:`_clocks`).
        """
        with self._store_lock, self._lock:
            if self.tail is None:
                before = self._state()
                self.load()
                return self._state() != before
            started = _clocks()
            before = self._state()
            while (segment := self.tail.read(self.watermark)) is not None:
                if not self._segments:
                    self._tail_since = _oldest([segment], loaded_at=time.time())
                self._segments.append(segment)
                self._tail_rows += segment.rows.num_rows
                self._table_owed = True  # until the table was looked at: a failed look leaves it owed
            stale = _elapsed(self._tail_looked) >= self.discard_grace / 2
            if table or self._table_owed or stale:
                if self.store.poll():
                    self._follow_table()
                self._table_owed = False
            self._tail_looked = started
            return self._bump_if_moved(before)

    def _follow_table(self) -> None:
        """After the table moved: keep the part of the chain it does not hold yet (re-read if it jumped past it)."""
        stored = self.store.app_version(SYNCED_APP_ID) or 0
        if stored == self._stored:
            return  # a rewrite (bin-packing, expiry): same events
        if stored in {segment.end for segment in self._segments}:  # a flush of the chain's first segments
            segments = [segment for segment in self._segments if segment.start >= stored]
        else:
            segments, stored = self._load_tail(stored)
        self._set_stored(stored)
        self._segments = segments
        self._tail_rows = sum(segment.rows.num_rows for segment in segments)
        self._tail_since = _oldest(segments, loaded_at=time.time())

    def _load_tail(self, stored: int) -> tuple[list[Segment], int]:
        """The segment chain past the table's watermark, read consistently with the table.

        A concurrent flush commits a new watermark and then deletes the segments
        it moved, so a chain read from a watermark that is stale by then may stop
        early at a deleted file. Deletion only follows the commit: if the
        watermark did not move while the chain was read, or the chain read
        reaches past where it moved to, the table (re-read) plus the segments
        after its watermark is one committed state.
        """
        assert self.tail is not None
        for attempt in range(_LOAD_ATTEMPTS):
            chain = self.tail.load_chain(stored)
            self.store.poll()
            now = self.store.app_version(SYNCED_APP_ID) or 0
            if now == stored:
                return chain, stored
            boundaries = {stored} | {segment.end for segment in chain}
            if now in boundaries:
                return [segment for segment in chain if segment.start >= now], now
            stored = now
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise CommitConflictError(f"{self.store.uri}: the changelog kept moving while it was read; retry")

    @property
    def watermark(self) -> int:
        """The highest ``_rhei_seq`` committed (0 when nothing is)."""
        with self._lock:
            return self._segments[-1].end if self._segments else self._stored

    @property
    def stored_watermark(self) -> int:
        """The watermark of the part already flushed into the table itself."""
        return self._stored

    @property
    def cursor(self) -> str | None:
        """The polling cursor committed with the newest events (sidecar mode)."""
        with self._lock:
            for segment in reversed(self._segments):
                if segment.cursor is not None:
                    return segment.cursor
            return self._table_cursor()

    def _table_cursor(self) -> str | None:
        # Read from the table's commit history only when asked: readers never need it, and
        # on S3 it costs a request per commit looked at.
        if isinstance(self._stored_cursor, _Unknown):
            self._stored_cursor = self.store.last_commit_metadata(CURSOR_KEY) if self._stored else None
        return self._stored_cursor

    def last_commit_at(self) -> float | None:
        """When this feed last took a commit (a hot-path segment or a Delta commit), as its store records it.

        Epoch seconds, or ``None`` when nothing was committed or the store keeps no times.
        """
        times = [self.store.last_commit_at()] if self.store.exists() else []
        with self._lock:
            times.extend(segment.written_at for segment in self._segments)
        known = [t for t in times if t is not None]
        return max(known) if known else None

    @property
    def tail_segments(self) -> int:
        return len(self._segments)

    @property
    def tail_rows(self) -> int:
        return self._tail_rows

    def tail_age(self, now: float | None = None) -> float:
        """Seconds the oldest event not yet in the Delta table has waited in the tail (0 when it is empty).

        Engines that read the Delta tables directly see nothing of the tail:
        this is how far behind the lake they are.
        """
        since = self._tail_since
        if since is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - since)

    # -- commits ---------------------------------------------------------
    def commit(
        self,
        events: pa.Table,
        *,
        watermark: int | None = None,
        cursor: str | None = None,
        expected: int | None = None,
    ) -> int:
        """Commit ``events`` (sorted by ``_rhei_seq``) and the new watermark, exactly once.

        Events at or below the committed watermark are dropped first. Returns the
        number of events committed; 0 when everything was already there.

        ``expected`` makes the commit conditional on the watermark still being
        that value (CommitConflictError otherwise, nothing committed): polling
        numbers its events itself, so events numbered against a watermark that
        another writer has since moved must not be partly dropped.
        """
        if watermark is None:
            if events.num_rows == 0:
                return 0
            watermark = int(events.column(SEQ)[-1].as_py())
        for attempt in range(_COMMIT_ATTEMPTS):
            with self._lock:
                current = self.watermark
                if expected is not None and current != expected:
                    raise CommitConflictError(
                        f"{self.store.uri}: the watermark moved from {expected} to {current} "
                        "(another process syncs this table)"
                    )
                if watermark <= current:
                    return 0
                fresh = _after(events, current)
                try:
                    faults.point("changelog.before_commit")
                    if self.tail is not None:
                        segment = Segment(current, watermark, fresh, cursor, time.time())
                        self.tail.write(segment)
                        self._segments.append(segment)
                        self._tail_rows += fresh.num_rows
                        if self._tail_since is None:
                            self._tail_since = segment.written_at
                    else:
                        self.store.append(
                            conform(fresh, self.store.schema(), self.store.uri),
                            txn=AppTransaction(SYNCED_APP_ID, watermark, expected=current),
                            metadata={CURSOR_KEY: cursor} if cursor is not None else None,
                        )
                        self._stored = watermark
                        if cursor is not None:
                            self._stored_cursor = cursor
                except CommitConflictError:
                    if attempt == _COMMIT_ATTEMPTS - 1:
                        raise
                    self.load()
                    continue
                faults.point("changelog.after_commit")
                self.generation += 1
                break
        return fresh.num_rows

    def commit_stream(self, reader: pa.RecordBatchReader, *, watermark: int) -> None:
        """Commit a large stream (an initial snapshot) straight into the table, in one commit.

        Requires an empty tail; the stream's events must all be above the watermark.
        """
        self.flush()
        with self._store_lock, self._lock:
            before = self.watermark
            if watermark <= before:
                return
            reader = conform_reader(reader, self.store.schema(), self.store.uri)
            try:
                self.store.append(reader, txn=AppTransaction(SYNCED_APP_ID, watermark, expected=self._stored))
            except CommitConflictError:
                if not self._landed(watermark):
                    raise
            self._stored = watermark
            self.generation += 1
            self._bridge(before, watermark)

    def _bridge(self, start: int, end: int) -> None:
        """After a commit straight into the table: an empty segment from ``start`` to ``end`` for readers.

        A reader following the tail looks for the segment extending the
        watermark it holds, and looks at the table only when one arrives (see
        :meth:`poll`); this one sends it there. It lies below the table's
        watermark, so writers never read it and the next discard deletes it.
        Best effort: without it (a crash just before), readers see the commit
        at their next look at the table.
        """
        if self.tail is None:
            return
        try:
            self.tail.write(Segment(start, end, self.store.schema().empty_table(), None, time.time()))
        except CommitConflictError:  # a bridge from an earlier attempt of this same commit
            pass

    @property
    def needs_flush(self) -> bool:
        """Whether the tail should be folded into the table now.

        It has grown past the size thresholds, or its oldest event has waited
        ``flush_interval`` seconds (outside readers then see it within that
        bound, even on a table that receives nothing more).
        """
        if not self._segments:
            return False
        if len(self._segments) >= self.flush_segments or self._tail_rows >= self.flush_rows:
            return True
        return self.flush_interval is not None and self.tail_age() >= self.flush_interval

    def flush(self) -> int:
        """Fold the tail into the table in one commit; returns the rows moved.

        Commits go on while the (slow) Delta append runs: they only extend the
        tail. Readers wait for it (``_store_lock``), so they never see the folded
        rows twice or not at all. Another writer (a compaction job) may flush the
        same segments or rewrite the table concurrently; then the commit is
        refused, the stored watermark and chain re-read, and the rest retried.
        """
        if self.tail is None:
            return 0
        with self._store_lock:
            for attempt in range(_FLUSH_ATTEMPTS):
                with self._lock:
                    if not self._segments:
                        return 0
                    segments = list(self._segments)
                    stored = self._stored
                    cursor = next((seg.cursor for seg in reversed(segments) if seg.cursor is not None), None)
                    if cursor is None:
                        cursor = self._table_cursor()
                tip = segments[-1].end
                schema = self.store.schema()
                rows = _after(pa.concat_tables([conform(seg.rows, schema, self.store.uri) for seg in segments]), stored)
                faults.point("flush.before_commit")
                try:
                    self.store.append(
                        rows,
                        txn=AppTransaction(SYNCED_APP_ID, tip, expected=stored),
                        metadata={CURSOR_KEY: cursor} if cursor is not None else None,
                    )
                    break
                except CommitConflictError:
                    if self._landed(tip):
                        break
                    if attempt == _FLUSH_ATTEMPTS - 1:
                        raise
                    time.sleep(random.uniform(0.005, 0.03) * (attempt + 1))  # let the other writer finish
                    self.load()
            with self._lock:
                if tip > self._stored:
                    self._stored = tip
                    self._stored_cursor = cursor
                self._segments = [seg for seg in self._segments if seg.start >= self._stored]
                self._tail_rows = sum(seg.rows.num_rows for seg in self._segments)
                self._tail_since = _oldest(self._segments, loaded_at=time.time())
                self.generation += 1
        faults.point("flush.after_commit_before_discard")
        self._discard_after_grace(tip)
        return rows.num_rows

    def _discard_after_grace(self, flushed: int) -> None:
        """Delete the segments of flushes older than the grace period (this one included if it is 0)."""
        with self._lock:
            self._flushed.append((time.monotonic(), flushed))
        self.discard_flushed_segments()

    def _landed(self, watermark: int) -> bool:
        """After a commit conflict: whether the table holds ``watermark`` all the same.

        Either another writer committed the same events, or the conflict is our
        own commit: on S3 a commit whose reply was lost is retried, the retry
        finds the log entry the first attempt wrote, and delta-rs reports the
        commit carrying our own app transaction as a concurrent one.
        """
        self.store.refresh()
        return (self.store.app_version(SYNCED_APP_ID) or 0) >= watermark

    def discard_flushed_segments(self) -> int:
        """Delete segment files already in the table once the grace has passed; returns how many.

        They are left by a flush (this process's or another's) or by a crash
        between a flush and its cleanup. A segment is deleted only when this
        process has known it flushed for the grace period (since its flush, or
        since a load of this object read the table), so readers following the
        chain still find it.
        """
        if self.tail is None:
            return 0
        now = time.monotonic()
        with self._lock:
            known = [watermark for when, watermark in self._flushed if now - when >= self.discard_grace]
            if not known:
                return 0
            below = max(known)
            self._flushed = [(when, watermark) for when, watermark in self._flushed if watermark > below]
        return self.tail.discard(below=below)

    # -- reads -----------------------------------------------------------
    def tail_table(self, schema: pa.Schema) -> pa.Table:
        """The committed events not yet in the table's loaded snapshot."""
        with self._lock:
            if not self._segments:
                return schema.empty_table()
            # The snapshot may be newer than this object's view of it (another process
            # flushed, and something reloaded the table since): it holds exactly the
            # events up to its own watermark, so the tail adds only those after it.
            in_table = self.store.app_version(SYNCED_APP_ID) or 0
            return _after(pa.concat_tables([conform(s.rows, schema, self.store.uri) for s in self._segments]), in_table)

    def to_arrow(self) -> pa.Table:
        """Every event in the change feed (table plus tail), in ``_rhei_seq`` order."""
        with self._store_lock, self._lock:
            stored = self.store.to_arrow()
            tail = self.tail_table(stored.schema)
        table = pa.concat_tables([stored, tail]) if tail.num_rows else stored
        return table.sort_by(SEQ)

    def read_after(self, feed: FeedSnapshot, seq: int, *, max_bytes: int) -> pa.Table | None:
        """The events after ``seq`` of what ``feed`` registered, in ``_rhei_seq`` order, read without a scan.

        The table's files holding any are each fetched whole in one request
        (:meth:`TableStore.rows_above`), the rest comes from ``feed``'s tail in
        memory. ``None`` when the store reads no cheaper than a scan, or its
        loaded snapshot is no longer the one ``feed`` registered.
        """
        if feed.tail is None:
            return None
        read = self.store.rows_above(SEQ, seq, max_bytes=max_bytes)
        if read is None or read[0] != feed.version:
            return None
        stored = conform(read[1], feed.tail.schema, self.store.uri)
        tail = _after(feed.tail, max(seq, feed.stored))
        return (pa.concat_tables([stored, tail]) if tail.num_rows else stored).sort_by(SEQ)

    def feed_key(self) -> tuple[int, int, int]:
        """``(version, stored, watermark)`` that :meth:`register` would record now (no I/O)."""
        with self._lock:
            in_table = self.store.app_version(SYNCED_APP_ID) or 0
            return self.store.version(), in_table, max(self.watermark, in_table)

    def register(self, ctx: SessionContext, name: str, *, previous: FeedSnapshot | None = None) -> FeedSnapshot:
        """Register the change feed in ``ctx`` as ``name`` (table ∪ tail); returns what was registered.

        With ``previous`` (what an earlier call registered in the same ``ctx``),
        only the parts that moved since are registered again, and nothing is
        when nothing moved.
        """
        with self._store_lock, self._lock:
            version = self.store.version()
            in_table = self.store.app_version(SYNCED_APP_ID) or 0
            same_table = previous is not None and (previous.version, previous.stored) == (version, in_table)
            if self.tail is None:
                if not same_table:
                    self.store.register(ctx, name)
                    previous = FeedSnapshot(version, in_table, in_table, None)
                assert previous is not None
                return previous
            if same_table and previous is not None and previous.watermark == max(self.watermark, in_table):
                return previous
            stored_name = f"{name}__stored"
            if not same_table:
                self.store.register(ctx, stored_name)
            tail = self.tail_table(self.store.schema())
            tail_name = f"{name}__tail"
            register_arrow(ctx, tail_name, tail)
            snapshot = FeedSnapshot(version, in_table, max(self.watermark, in_table), tail)
        cols = ", ".join(quote_ident(c) for c in tail.schema.names)
        view = ctx.sql(
            f"SELECT {cols} FROM {quote_ident(stored_name)} UNION ALL SELECT {cols} FROM {quote_ident(tail_name)}"
        )
        if ctx.table_exist(name):
            ctx.deregister_table(name)
        ctx.register_view(name, view)
        return snapshot


@dataclass(frozen=True)
class FeedSnapshot:
    """What :meth:`Changelog.register` registered: the table's version and watermark, the events past it.

    ``tail`` holds the committed events after ``stored`` up to ``watermark``,
    in ``_rhei_seq`` order (``None`` on tiers without a tail).
    """

    version: int
    stored: int
    watermark: int
    tail: pa.Table | None

    def events_after(self, seq: int) -> pa.Table | None:
        """The events after ``seq`` if this snapshot holds them all in memory, else ``None``."""
        if self.tail is None or seq < self.stored:
            return None
        return _after(self.tail, seq)


def register_arrow(ctx: SessionContext, name: str, table: pa.Table) -> None:
    """Register ``table`` (held in memory) in ``ctx`` as ``name``, replacing any table of that name."""
    if ctx.table_exist(name):
        ctx.deregister_table(name)
    ctx.register_record_batches(name, [table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]])


def _clocks() -> tuple[float, float]:
    """Now on the monotonic clock and on the wall clock.

    The monotonic clock stands still while the machine sleeps (on Linux and
    macOS), the wall clock may be set back: an interval is as long as the
    longer of the two says (:func:`_elapsed`), so it is never taken for
    shorter than it was.
    """
    return time.monotonic(), time.time()


def _elapsed(since: tuple[float, float] | None) -> float:
    """Seconds since ``since`` (a :func:`_clocks` reading; infinite for ``None``), the longer of the clocks' counts."""
    if since is None:
        return float("inf")
    monotonic, wall = _clocks()
    return max(monotonic - since[0], wall - since[1])


def _oldest(segments: list[Segment], *, loaded_at: float) -> float | None:
    """When the first of ``segments`` was committed (``loaded_at`` for a segment that does not say)."""
    if not segments:
        return None
    written = segments[0].written_at
    return written if written is not None else loaded_at


def _after(events: pa.Table, watermark: int) -> pa.Table:
    """The events with ``_rhei_seq > watermark`` (no copy when all are newer)."""
    if events.num_rows == 0:
        return events
    seq = events.column(SEQ)
    if seq[0].as_py() > watermark:
        return events
    return events.filter(pc.greater(seq, watermark))


def conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order; columns it lacks read as NULL.

    After schema evolution a table's Delta schema is the union of every column
    it ever had, while rows carry the columns of their time.
    """
    if table.schema.names == schema.names:
        return table if table.schema == schema else table.cast(schema)
    extra = [name for name in table.schema.names if name not in schema.names]
    if extra:
        raise StorageError(f"{where}: rows carry columns {extra} that the table does not have")
    names = set(table.schema.names)
    arrays = [
        table.column(f.name).cast(f.type) if f.name in names else pa.nulls(table.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def conform_reader(reader: pa.RecordBatchReader, schema: pa.Schema, where: str) -> pa.RecordBatchReader:
    """:func:`conform` for a stream of batches."""
    if reader.schema == schema:
        return reader

    def batches():
        for batch in reader:
            yield from conform(pa.Table.from_batches([batch]), schema, where).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())
