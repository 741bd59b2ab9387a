"""Hard-delete detection: compare the source's keys with the lake's live keys.

Both sides are streamed in key order and merged, one bounded batch at a time
(the source sorts with its own index or sort; the lake's sort spills to disk),
so no side is ever held in memory whole:

* a live lake key the source no longer has was hard-deleted: a ``D`` event
  carrying the row's last known values. A hard delete leaves no time behind, so
  it is stamped on the source's own clock: the ``updated_at`` the table's
  cursor has reached, but always after the row's last version (which was seen
  alive, so must stay alive for a while; see
  :func:`~rhei_lake.sync.polled_events.undated_delete_micros`). A stamp from the
  sidecar's wall clock would make a row re-inserted by an application whose
  clock lags look like it went backwards;
* a source row at or before the cursor that the lake does not have, or has with
  another ``updated_at``, or has live while it is soft-deleted, changed without
  moving past the cursor (a transaction that committed late, or a soft delete
  that did not bump ``updated_at``): it is fetched and turned into events like
  any polled row (so a row going backwards still raises);
* rows after the cursor are left to the next poll.

Keys are compared as Python values, which is why both sides sort in byte
order (``COLLATE "C"`` / ``BINARY``); a stream out of that order stops the scan
with an error instead of producing wrong deletes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import pyarrow as pa

from rhei_lake.capture.polled_source import PolledSource
from rhei_lake.capture.events import ORIGIN_POLL, misfit_detail, type_mismatch
from rhei_lake.capture.types import ValueMismatch, column_affinity, key_misfit, to_arrow
from rhei_lake.catalog import TS
from rhei_lake.errors import SourceError
from rhei_lake.sync.lake_state import key_tuples
from rhei_lake.sync.polled_events import is_deleted, updated_at_micros

if TYPE_CHECKING:
    from rhei_lake.sync.polling_sync import PolledTableSync

log = logging.getLogger("rhei_lake.sync")


class _SourceKey(NamedTuple):
    """A source row's primary key, as a lake value and as the source returned it."""

    key: tuple[Any, ...]
    raw: tuple[Any, ...]
    ts: int | None  # None: unreadable, fetched and reported by the event builder
    deleted: bool
    after_cursor: bool


class _LakeKey(NamedTuple):
    """A live lake row's primary key, where the row is and its last ``updated_at``."""

    key: tuple[Any, ...]
    batch: pa.RecordBatch
    row: int
    ts: int


class _Keyed(Protocol):
    @property
    def key(self) -> tuple[Any, ...]: ...


_K = TypeVar("_K", bound=_Keyed)


def _source_keys(table: PolledTableSync, batches: Iterator[list[tuple[Any, ...]]]) -> Iterator[_SourceKey]:
    """One per source row, keys as lake values."""
    spec = table.plan.spec
    unit = table.plan.table.epoch_unit
    width = len(spec.primary_key)
    for rows in batches:
        columns = list(zip(*rows))
        keys = []
        for i, name in enumerate(spec.primary_key):
            values = list(columns[i])
            try:
                array = to_arrow(values, spec.column(name).arrow_type)
                bad_row = key_misfit(
                    values, array, spec.column(name).arrow_type, column_affinity(spec, spec.column(name))
                )
            except ValueMismatch as bad:
                bad_row = bad.index
            if bad_row is not None:  # the words and the way on of the event path
                key = dict(zip(spec.primary_key, rows[bad_row][:width], strict=True))
                detail, canonical = misfit_detail(spec, name, values[bad_row])
                raise type_mismatch(
                    spec, name, key, None, detail, ORIGIN_POLL, fits=values[bad_row], canonical=canonical
                )
            keys.append(array.to_pylist())
        for j, row in enumerate(rows):
            try:
                ts: int | None = updated_at_micros(row[width], unit)
            except (ValueError, OverflowError, TypeError):
                ts = None  # fetched and reported by the event builder
            yield _SourceKey(
                tuple(k[j] for k in keys), row[:width], ts, is_deleted(row[width + 1]), bool(row[width + 2])
            )


def _lake_keys(table: PolledTableSync) -> Iterator[_LakeKey]:
    """One per live lake key."""
    for batch in table.state.live_rows():
        stamps = batch.column(TS).cast(pa.int64()).to_pylist()
        for i, key in enumerate(key_tuples(batch, table.plan.spec.primary_key)):
            yield _LakeKey(key, batch, i, stamps[i])


def _ordered(items: Iterator[_K], side: str, table: str) -> Iterator[_K]:
    previous = None
    for item in items:
        key = item.key
        try:
            if previous is not None and not key > previous:
                raise SourceError(
                    f"table {table!r}: {side} keys did not arrive in strictly increasing order ({previous!r} then "
                    f"{key!r}); hard-delete detection cannot run on this primary key type"
                )
        except TypeError:
            raise SourceError(f"table {table!r}: {side} keys of mixed types ({previous!r}, {key!r})") from None
        previous = key
        yield item


class _Emitter:
    """Collects deletes and late keys, committing each kind in bounded batches."""

    def __init__(self, table: PolledTableSync, source: PolledSource, batch_rows: int, clock: int) -> None:
        self.table = table
        self.clock = clock
        self.source = source
        self.batch_rows = batch_rows
        self.deletes: list[pa.Table] = []
        self.delete_rows = 0
        self._batch: pa.RecordBatch | None = None
        self._indices: list[int] = []
        self.late: list[tuple[Any, ...]] = []
        self.committed = 0
        self.hard_deletes = 0

    def delete(self, batch: pa.RecordBatch, index: int) -> None:
        if batch is not self._batch:
            self._take()
            self._batch = batch
        self._indices.append(index)
        self.delete_rows += 1
        if self.delete_rows >= self.batch_rows:
            self.flush_deletes()

    def _take(self) -> None:
        if self._batch is not None and self._indices:
            self.deletes.append(pa.Table.from_batches([self._batch.take(pa.array(self._indices, pa.int64()))]))
        self._indices = []

    def late_key(self, raw_key: tuple[Any, ...]) -> None:
        self.late.append(raw_key)
        if len(self.late) >= self.batch_rows:
            self.flush_late()

    def source_only(self, row: _SourceKey) -> None:
        """A source row the lake has no live key for."""
        if not row.after_cursor and not row.deleted:
            self.late_key(row.raw)  # a row the lake has never seen live

    def matched(self, row: _SourceKey, lake: _LakeKey) -> None:
        """A source row whose key is live in the lake."""
        if not row.after_cursor and (row.deleted or row.ts != lake.ts):
            self.late_key(row.raw)

    def flush_deletes(self) -> None:
        self._take()
        if not self.deletes:
            return
        rows = pa.concat_tables(self.deletes)
        self.deletes, self.delete_rows = [], 0
        changelog = self.table.changelog
        base = changelog.watermark
        events = self.table.builder.deletes(rows, base, self.clock)
        self.committed += self.table.commit(events, base=base, cursor=None)
        self.hard_deletes += events.num_rows

    def flush_late(self) -> None:
        if not self.late:
            return
        keys, self.late = self.late, []
        self.committed += self.table.catch_up(self.source, keys, self.clock)


def reconcile(table: PolledTableSync, source: PolledSource, batch_rows: int) -> int:
    """Compare the source's keys with the lake's and commit what differs; returns the events committed."""
    cursor = table.cursor()
    if cursor is None:
        return 0  # nothing polled yet: the first poll reads everything
    name = table.name
    emitter = _Emitter(table, source, batch_rows, table.clock(cursor))
    scan = source.scan_keys(table.plan, cursor, batch_rows)
    try:
        src = _ordered(_source_keys(table, scan), "source", name)
        lake = _ordered(_lake_keys(table), "lake", name)
        s = next(src, None)
        lk = next(lake, None)
        while s is not None and lk is not None:
            if s.key < lk.key:
                emitter.source_only(s)
                s = next(src, None)
            elif lk.key < s.key:
                emitter.delete(lk.batch, lk.row)
                lk = next(lake, None)
            else:
                emitter.matched(s, lk)
                s = next(src, None)
                lk = next(lake, None)
        while s is not None:
            emitter.source_only(s)
            s = next(src, None)
        while lk is not None:
            emitter.delete(lk.batch, lk.row)
            lk = next(lake, None)
        emitter.flush_deletes()
        emitter.flush_late()
    finally:
        close = getattr(scan, "close", None)
        if close is not None:
            close()
    if emitter.committed:
        log.info(
            "table %r: reconcile committed %d events (%d hard deletes)", name, emitter.committed, emitter.hard_deletes
        )
    return emitter.committed
