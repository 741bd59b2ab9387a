"""What the lake already holds for a polled table: each key's last event.

Polling sees rows, not changes; turning a row into an event needs the lake's
view of its key (absent, live or deleted; since when; with which values).
:meth:`LakeState.last_events` answers that for one bounded batch of keys (a
hash join of the batch against the change feed, so only the key columns of
the feed are scanned in full); :meth:`LakeState.live_rows` streams every live
key in key order for hard-delete detection, in a session whose sorts spill to
disk instead of holding every key in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import OP, OP_DELETE, SEQ, TS, TableSpec
from rhei_lake.errors import StorageError
from rhei_lake.query.engine import normalize_types
from rhei_lake.storage.changelog import Changelog

_FEED = "__rhei_feed"
_KEYS = "__rhei_keys"
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


class LakeState:
    """Read-side questions about one polled table's change feed."""

    def __init__(self, spec: TableSpec, changelog: Changelog) -> None:
        self.spec = spec
        self.changelog = changelog

    def _context(self, *, spill: bool = False):
        from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext

        if spill:
            runtime = RuntimeEnvBuilder().with_disk_manager_os().with_fair_spill_pool(SORT_MEMORY_BYTES)
            ctx = SessionContext(SessionConfig(), runtime)
        else:
            ctx = SessionContext()
        self.changelog.register(ctx, _FEED)
        return ctx

    def _last_per_key(self, source: str) -> str:
        pk = ", ".join(q(k) for k in self.spec.primary_key)
        return (
            f"SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {pk} ORDER BY {q(SEQ)} DESC) AS __rn "
            f"FROM ({source})) WHERE __rn = 1"
        )

    def last_events(self, keys: pa.Table) -> dict[tuple[Any, ...], LastEvent]:
        """The last event of each key in ``keys`` (a table of the key columns) that the lake knows."""
        if keys.num_rows == 0:
            return {}
        ctx = self._context()
        ctx.register_record_batches(_KEYS, [keys.to_batches()])
        on = " AND ".join(f"f.{q(k)} = k.{q(k)}" for k in self.spec.primary_key)
        joined = f"SELECT f.* FROM {q(_FEED)} f JOIN {q(_KEYS)} k ON {on}"
        try:
            result = normalize_types(ctx.sql(self._last_per_key(joined)).to_arrow_table())
        except Exception as exc:
            raise StorageError(f"table {self.spec.name!r}: could not read its last events: {exc}") from exc
        names = self.spec.column_names
        rows = list(zip(*(result.column(c).to_pylist() for c in names))) if result.num_rows else []
        ops = result.column(OP).to_pylist()
        stamps = result.column(TS).cast(pa.int64()).to_pylist()
        key_index = [names.index(k) for k in self.spec.primary_key]
        return {
            tuple(row[i] for i in key_index): LastEvent(op, ts, row) for row, op, ts in zip(rows, ops, stamps)
        }

    def live_rows(self) -> Iterator[pa.RecordBatch]:
        """Every live key's last row (user columns + ``_rhei_ts``), in key order, streamed."""
        ctx = self._context(spill=True)
        cols = ", ".join(q(c) for c in (*self.spec.column_names, TS))
        order = ", ".join(q(k) for k in self.spec.primary_key)
        sql = (
            f"SELECT {cols} FROM ({self._last_per_key(f'SELECT * FROM {q(_FEED)}')}) "
            f"WHERE {q(OP)} <> '{OP_DELETE}' ORDER BY {order}"
        )
        try:
            stream = ctx.sql(sql).execute_stream()
        except Exception as exc:
            raise StorageError(f"table {self.spec.name!r}: could not scan its live keys: {exc}") from exc
        for batch in stream:
            arrow = batch.to_pyarrow()
            if arrow.num_rows:
                yield normalize_types(pa.Table.from_batches([arrow])).to_batches()[0]
