"""What the lake already holds for a polled table: each key's last event.

Polling sees rows, not changes; turning a row into an event needs the lake's
view of its key (absent, live or deleted; since when; with which values).
:meth:`LakeState.last_events` answers that for one bounded batch of keys (a
hash join of the batch against the lake's events, so only their key columns
are scanned in full); :meth:`LakeState.live_rows` streams every live key in key
order for hard-delete detection, in a session whose sorts spill to disk instead
of holding every key in memory.

The lake's events are the change feed *and* the table compaction folds it into:
compaction expires folded events from the feed (``changelog_retention``, which
counts from ``_rhei_ts``: the source's ``updated_at``, often long past), so a
key may be known only by its versions in ``history`` (temporal mode: the newest
version, live while open, deleted at its ``valid_to`` when closed) or its row in
``current`` (mirror mode: live; a deleted key has no row there). The feed's
snapshot is taken first and the folded table is refreshed after it: the fold
commits before it expires anything, so every event is in one or the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rhei_lake._shared.arrow_types import normalize_types
from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import OP, OP_DELETE, OP_INSERT, SEQ, TIMESTAMP_TYPE, TS, VALID_FROM, VALID_TO, TableSpec
from rhei_lake.errors import raise_storage
from rhei_lake.storage.base import TableStore
from rhei_lake.storage.changelog import Changelog

_FEED = "__rhei_feed"
_FOLDED = "__rhei_folded"
_KEYS = "__rhei_keys"
_RANK = "__rhei_rank"  # at one _rhei_seq, the folded table's word wins: it has seen the events after it
_TS_TYPE = 'Timestamp(Microsecond, Some("UTC"))'
SORT_MEMORY_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class LastEvent:
    """The newest event the lake holds for one key."""

    op: str
    ts: int  # UTC micros
    row: tuple[Any, ...]  # user column values, spec order

    @property
    def live(self) -> bool:
        return self.op != OP_DELETE


def key_tuples(table: pa.Table | pa.RecordBatch, key: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """The primary-key values of every row, as Python tuples."""
    columns = [table.column(k).to_pylist() for k in key]
    return list(zip(*columns))


@dataclass(frozen=True)
class FoldedTable:
    """Where compaction folds a table's events: ``history`` (temporal) or ``current`` (mirror),
    and how a ``current`` row's time is read (from its ``updated_at``: it carries no other)."""

    store: TableStore
    temporal: bool
    row_time: Callable[[Any], int]  # a lake ``updated_at`` value -> UTC micros
    updated_at: str


class LakeState:
    """Read-side questions about one polled table's events, folded or not."""

    def __init__(self, spec: TableSpec, changelog: Changelog, folded: FoldedTable | None = None) -> None:
        self.spec = spec
        self.changelog = changelog
        self.folded = folded

    def _context(self, *, spill: bool = False) -> tuple[Any, str]:
        """A session with the lake's events registered, and the SQL of their union."""
        from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext

        if spill:
            runtime = RuntimeEnvBuilder().with_disk_manager_os().with_fair_spill_pool(SORT_MEMORY_BYTES)
            ctx = SessionContext(SessionConfig(), runtime)
        else:
            ctx = SessionContext()
        self.changelog.register(ctx, _FEED)  # first: see the module docstring
        cols = ", ".join(q(c) for c in self.spec.column_names)
        events = f"SELECT {cols}, {q(SEQ)}, {q(OP)}, {q(TS)}, 1 AS {q(_RANK)} FROM {q(_FEED)}"
        folded = self.folded
        if folded is None or not folded.store.exists():
            return ctx, events
        try:
            folded.store.refresh()
        except Exception as exc:
            raise_storage(exc, where=f"table {self.spec.name!r}: loading its folded table")
        folded.store.register(ctx, _FOLDED)
        if folded.temporal:
            op = f"CASE WHEN {q(VALID_TO)} IS NULL THEN '{OP_INSERT}' ELSE '{OP_DELETE}' END"
            ts = f"COALESCE({q(VALID_TO)}, {q(VALID_FROM)})"
        else:
            op, ts = f"'{OP_INSERT}'", f"arrow_cast(NULL, '{_TS_TYPE}')"
        rows = f"SELECT {cols}, {q(SEQ)}, {op} AS {q(OP)}, {ts} AS {q(TS)}, 0 AS {q(_RANK)} FROM {q(_FOLDED)}"
        return ctx, f"{events} UNION ALL {rows}"

    def _last_per_key(self, source: str) -> str:
        pk = ", ".join(q(k) for k in self.spec.primary_key)
        return (
            f"SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {pk} ORDER BY {q(SEQ)} DESC, {q(_RANK)}) "
            f"AS __rn FROM ({source})) WHERE __rn = 1"
        )

    def _timed(self, table: pa.Table) -> pa.Table:
        """``table`` with the time of each mirror-mode ``current`` row filled in from its ``updated_at``."""
        stamps = table.column(TS)
        if not stamps.null_count or self.folded is None:
            return table
        values = table.column(self.folded.updated_at).to_pylist()
        filled = [
            ts if ts is not None else self.folded.row_time(value)
            for ts, value in zip(stamps.cast(pa.int64()).to_pylist(), values, strict=True)
        ]
        index = table.schema.get_field_index(TS)
        return table.set_column(index, TS, pa.array(filled, pa.int64()).cast(TIMESTAMP_TYPE))

    def last_events(self, keys: pa.Table) -> dict[tuple[Any, ...], LastEvent]:
        """The last event of each key in ``keys`` (a table of the key columns) that the lake knows."""
        if keys.num_rows == 0:
            return {}
        ctx, events = self._context()
        ctx.register_record_batches(_KEYS, [keys.to_batches()])
        on = " AND ".join(f"f.{q(k)} = k.{q(k)}" for k in self.spec.primary_key)
        joined = f"SELECT f.* FROM ({events}) f JOIN {q(_KEYS)} k ON {on}"
        try:
            result = normalize_types(ctx.sql(self._last_per_key(joined)).to_arrow_table())
        except Exception as exc:  # the store (transient or not) or its files, never the SQL
            raise_storage(exc, where=f"table {self.spec.name!r}: reading its last events")
        result = self._timed(result)
        names = self.spec.column_names
        rows = list(zip(*(result.column(c).to_pylist() for c in names))) if result.num_rows else []
        ops = result.column(OP).to_pylist()
        stamps = result.column(TS).cast(pa.int64()).to_pylist()
        key_index = [names.index(k) for k in self.spec.primary_key]
        return {tuple(row[i] for i in key_index): LastEvent(op, ts, row) for row, op, ts in zip(rows, ops, stamps)}

    def live_rows(self) -> Iterator[pa.RecordBatch]:
        """Every live key's last row (user columns + ``_rhei_ts``), in key order, streamed."""
        ctx, events = self._context(spill=True)
        cols = ", ".join(q(c) for c in (*self.spec.column_names, TS))
        order = ", ".join(q(k) for k in self.spec.primary_key)
        sql = f"SELECT {cols} FROM ({self._last_per_key(events)}) WHERE {q(OP)} <> '{OP_DELETE}' ORDER BY {order}"
        where = f"table {self.spec.name!r}: scanning its live keys"
        try:
            stream = iter(ctx.sql(sql).execute_stream())
        except Exception as exc:
            raise_storage(exc, where=where)
        while True:
            try:  # each batch may read more files: the store can fail at any of them
                batch = next(stream, None)
            except Exception as exc:
                raise_storage(exc, where=where)
            if batch is None:
                return
            arrow = batch.to_pyarrow()
            if arrow.num_rows:
                yield self._timed(normalize_types(pa.Table.from_batches([arrow]))).to_batches()[0]
