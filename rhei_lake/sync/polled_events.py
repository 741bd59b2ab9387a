"""Turning polled rows into change events.

A polled row is the row's state now; the event it becomes depends on what the
lake holds for its key (:class:`~rhei_lake.sync.lake_state.LastEvent`):

=========================  ==================  =============================================
source row                 lake's last event   event
=========================  ==================  =============================================
live                       none, or ``D``      ``I``
live                       ``I``/``U``         ``U`` (nothing if same instant and same values)
soft-deleted               ``I``/``U``         ``D``
soft-deleted               none, or ``D``      nothing
=========================  ==================  =============================================

``_rhei_ts`` is the row's own ``updated_at`` (see :func:`updated_at_micros`),
except for a delete that left no time behind (a soft delete that did not move
``updated_at``, a hard delete): see :func:`undated_delete_micros`. A row whose ``updated_at`` is older than the lake's
last event for its key raises :class:`~rhei_lake.errors.NonMonotonicUpdateError`
(its history would run backwards); everything before it is still committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake._shared.identifiers import quote_ident
from rhei_lake.capture.events import convert_columns, sql_literal
from rhei_lake.capture.insert_columns import InsertColumns
from rhei_lake.capture.polled_table import PolledTable
from rhei_lake.capture.types import describe_value, timestamp_micros
from rhei_lake.catalog import OP_DELETE, OP_INSERT, OP_UPDATE, TIMESTAMP_TYPE, TableSpec, int_range
from rhei_lake.errors import NonMonotonicUpdateError, RheiError, TypeMismatchError
from rhei_lake.sync.lake_state import LastEvent, key_tuples
from rhei_lake.timeutil import from_micros

_UNIT_MICROS = {"s": 1_000_000, "ms": 1_000, "us": 1}
_MIN_US = -62_135_596_800_000_000
_MAX_US = 253_402_300_799_999_999

Lookup = Callable[[pa.Table], dict[tuple[Any, ...], LastEvent]]


def updated_at_micros(value: Any, unit: str = "s") -> int:
    """An ``updated_at`` value as UTC epoch microseconds.

    Integers, reals and exact decimals count ``unit`` since the Unix epoch; text
    is ISO 8601 (naive means UTC); a datetime with a zone is that instant, a
    naive one is UTC; a date is its midnight UTC. Raises ValueError otherwise.
    """
    if value is None:
        raise ValueError("updated_at is NULL; every polled row needs one")
    scale = _UNIT_MICROS[unit]
    if type(value) is int:
        micros = value * scale
    elif type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("updated_at is not a finite number")
        micros = round(value * scale)
    elif type(value) is Decimal:
        if not value.is_finite():
            raise ValueError("updated_at is not a finite number")
        micros = int((value * scale).to_integral_value())
    elif isinstance(value, bool):
        raise ValueError("updated_at is a boolean")
    else:
        micros = timestamp_micros(value)  # text, datetime, date
    if not _MIN_US <= micros <= _MAX_US:
        raise ValueError("updated_at is outside years 1-9999")
    return micros


def undated_delete_micros(clock: int, last: int) -> int:
    """When a delete that left no time behind is stamped: ``clock`` (the source time the
    table's cursor has reached), but always after ``last``, the version it ends.

    The row was seen alive at ``last``, so it was deleted later; a stamp equal to
    ``last`` would leave that version alive at no instant (``valid_from == valid_to``).
    """
    return max(clock, min(last + 1, _MAX_US))


def is_deleted(value: Any) -> bool:
    """A soft-delete column marks a row deleted when it is neither NULL nor false/0."""
    return value is not None and value is not False and value != 0


@dataclass
class PolledBatch:
    """The events built from a batch of rows, and how far they got."""

    events: pa.Table
    consumed: int  # rows (a prefix of the input) that are accounted for by ``events``
    error: RheiError | None = None


_ISO = r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,6})?"
_ISO_ZONED = _ISO + r"(Z|[+-]\d\d:\d\d)$"
_ISO_NAIVE = _ISO + r"$"


def vectorized_stamps(column: pa.ChunkedArray, unit: str) -> pa.ChunkedArray | None:
    """:func:`updated_at_micros` of a whole column at once (int64), for the common shapes;
    ``None`` means "use the per-value rules"."""
    if column.null_count:
        return None
    dtype = column.type
    try:
        if pa.types.is_timestamp(dtype) and unit == "s":  # converted by the declared-type rules already
            return column.cast(pa.int64())
        if pa.types.is_int64(dtype):
            micros = pc.multiply_checked(column, _UNIT_MICROS[unit])
            if len(micros) and (pc.min(micros).as_py() < _MIN_US or pc.max(micros).as_py() > _MAX_US):
                return None
            return micros
        if pa.types.is_string(dtype):
            if pc.all(pc.match_substring_regex(column, _ISO_ZONED)).as_py():
                return column.cast(TIMESTAMP_TYPE).cast(pa.int64())
            if pc.all(pc.match_substring_regex(column, _ISO_NAIVE)).as_py():
                return column.cast(pa.timestamp("us")).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return None


def iso(micros: int) -> str:
    return from_micros(micros).isoformat().replace("+00:00", "Z")


class EventBuilder:
    """Builds a polled table's change events from source rows."""

    def __init__(
        self,
        spec: TableSpec,
        table: PolledTable,
        *,
        relation: str | None = None,
        quote: Callable[[str], str] = quote_ident,
        literal: Callable[[Any], str] = sql_literal,
    ) -> None:
        self.spec = spec
        self.table = table
        self.relation = relation  # the table's name as the source's SQL spells it (None: from ``table``)
        self.quote = quote
        self.literal = literal
        names = spec.column_names
        self.updated_index = names.index(table.updated_at)
        self.deleted_index = names.index(table.deleted_at) if table.deleted_at else None
        self.key_index = [names.index(k) for k in spec.primary_key]
        self._first_sync_columns = InsertColumns()  # a first sync's _rhei_seq and _rhei_op, batch after batch

    def raw_key(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(row[i] for i in self.key_index)

    def _key_text(self, row: Sequence[Any]) -> str:
        return ", ".join(f"{k}={row[i]!r}" for k, i in zip(self.spec.primary_key, self.key_index))

    def _key_dict(self, row: Sequence[Any]) -> dict[str, Any]:
        return {k: row[i] for k, i in zip(self.spec.primary_key, self.key_index)}

    def _convert(self, rows: list[tuple], base: int) -> tuple[list[pa.Array], int, RheiError | None]:
        """Arrow columns of the longest clean prefix of ``rows``, its length, and the error that ended it."""
        error: RheiError | None = None
        while rows:
            seqs = range(base + 1, base + 1 + len(rows))
            try:
                return convert_columns(self.spec, list(zip(*rows)), seqs), len(rows), error
            except TypeMismatchError as exc:
                error = exc
                rows = rows[: (exc.seq or base + 1) - base - 1]
        return [], 0, error

    def _stamps(self, rows: list[tuple], converted: pa.Table | None) -> tuple[list[int], RheiError | None]:
        """Each row's updated_at in UTC micros, for the longest readable prefix, and the error that ended it."""
        fast = vectorized_stamps(converted.column(self.table.updated_at), self.table.epoch_unit) if converted else None
        if fast is not None:
            return fast.to_pylist(), None
        stamps = []
        for row in rows:
            value = row[self.updated_index]
            try:
                stamps.append(updated_at_micros(value, self.table.epoch_unit))
            except (ValueError, OverflowError, TypeError) as exc:
                return stamps, TypeMismatchError(
                    f"table {self.spec.name!r}, column {self.table.updated_at!r}, row {self._key_text(row)}: "
                    f"{describe_value(value)} cannot be read as the row's updated_at ({exc}). Nothing from this "
                    "row on was synced; fix the value in the source and sync again",
                    table=self.spec.name,
                    column=self.table.updated_at,
                    primary_key=self._key_dict(row),
                )
        return stamps, None

    def build(self, rows: list[tuple], base: int, lookup: Lookup | None, clock: int) -> PolledBatch:
        """Events for ``rows`` with ``_rhei_seq`` from ``base + 1``; ``lookup=None`` when the lake holds none of these keys."""
        arrays, usable, error = self._convert(rows, base)
        converted = pa.Table.from_arrays(arrays, schema=self.spec.schema) if usable else None
        stamps, stamp_error = self._stamps(rows[:usable], converted)
        if stamp_error is not None:
            error, usable = stamp_error, len(stamps)
            converted = converted.slice(0, usable) if converted is not None and usable else None
        if converted is None:
            return PolledBatch(self.spec.changes_schema.empty_table(), usable, error)
        if lookup is None:
            take, ops, times = self._inserts(rows, stamps, usable)
        else:
            take, ops, times, usable, backwards = self._classified(rows, converted, stamps, usable, lookup, clock)
            error = backwards or error
        if not take:
            return PolledBatch(self.spec.changes_schema.empty_table(), usable, error)
        chosen = converted if len(take) == converted.num_rows else converted.take(take)
        seqs = int_range(base + 1, len(take))
        events = pa.Table.from_arrays(
            [*chosen.columns, seqs, pa.array(ops, pa.string()), pa.array(times, pa.int64()).cast(TIMESTAMP_TYPE)],
            schema=self.spec.changes_schema,
        )
        return PolledBatch(events, usable, error)

    def first_events(self, columns: pa.Table, deleted: pa.Array | pa.ChunkedArray | None, base: int) -> pa.Table | None:
        """``I`` events (``_rhei_seq`` from ``base + 1``) for rows of a table the lake holds nothing of,
        built a column at a time; ``None`` when an ``updated_at`` needs the per-value rules (or their errors)."""
        stamps = vectorized_stamps(columns.column(self.table.updated_at), self.table.epoch_unit)
        if stamps is None:
            return None
        if deleted is not None and pc.any(deleted).as_py():
            live = pc.invert(deleted)
            columns, stamps = columns.filter(live), stamps.filter(live)
        n = columns.num_rows
        bookkeeping = self._first_sync_columns
        return pa.Table.from_arrays(
            [*columns.columns, bookkeeping.seq(base + 1, n), bookkeeping.ops(n), stamps.cast(TIMESTAMP_TYPE)],
            schema=self.spec.changes_schema,
        )

    def _inserts(self, rows: list[tuple], stamps: list[int], usable: int) -> tuple[list[int], list[str], list[int]]:
        """Keys the lake does not hold: every live row is an insert, soft-deleted rows are nothing."""
        if self.deleted_index is None:
            return list(range(usable)), [OP_INSERT] * usable, stamps
        take = [i for i in range(usable) if not is_deleted(rows[i][self.deleted_index])]
        return take, [OP_INSERT] * len(take), [stamps[i] for i in take]

    def _classified(
        self, rows: list[tuple], converted: pa.Table, stamps: list[int], usable: int, lookup: Lookup, clock: int
    ) -> tuple[list[int], list[str], list[int], int, RheiError | None]:
        last = lookup(converted.select(list(self.spec.primary_key)))
        keys = key_tuples(converted, self.spec.primary_key)
        values = list(zip(*(converted.column(c).to_pylist() for c in self.spec.column_names)))
        take: list[int] = []
        ops: list[str] = []
        times: list[int] = []
        for i in range(usable):
            row, ts = rows[i], stamps[i]
            deleted = self.deleted_index is not None and is_deleted(row[self.deleted_index])
            previous = last.get(keys[i])
            op, at = self._classify(deleted, ts, values[i], previous, clock)
            if op == "!":
                return take, ops, times, i, self._backwards(row, ts, previous)
            if op:
                take.append(i)
                ops.append(op)
                times.append(at)
        return take, ops, times, usable, None

    @staticmethod
    def _classify(
        deleted: bool, ts: int, values: tuple[Any, ...], previous: LastEvent | None, clock: int
    ) -> tuple[str, int]:
        """``(op, _rhei_ts)``; op ``""`` means no event, ``"!"`` means updated_at went backwards."""
        if previous is None or not previous.live:
            if deleted:
                return "", ts
            if previous is not None and ts < previous.ts:
                return "!", ts
            return OP_INSERT, ts
        if ts < previous.ts:
            return "!", ts
        if deleted:
            return OP_DELETE, ts if ts > previous.ts else undated_delete_micros(clock, previous.ts)
        if ts == previous.ts and values == previous.row:
            return "", ts
        return OP_UPDATE, ts

    def _backwards(self, row: tuple, ts: int, previous: LastEvent | None) -> NonMonotonicUpdateError:
        assert previous is not None
        key = self._key_text(row)
        where = " AND ".join(
            f"{self.quote(k)} {'IS' if row[i] is None else '='} {self.literal(row[i])}"
            for k, i in zip(self.spec.primary_key, self.key_index, strict=True)
        )
        source = self.relation
        if source is None:
            source = quote_ident(self.table.name)
            if self.table.source_schema:
                source = f"{quote_ident(self.table.source_schema)}.{source}"
        return NonMonotonicUpdateError(
            f"table {self.spec.name!r}, row {key}: {self.table.updated_at} went backwards: the lake already "
            f"holds a change of this row at {iso(previous.ts)}, the source now says {iso(ts)}. Its history would "
            "run backwards, so nothing from this row on was synced. Polling needs updated_at to grow on every "
            f"change: set it to the current time (UPDATE {source} SET {self.quote(self.table.updated_at)} = "
            f"<now> WHERE {where}) and sync again",
            table=self.spec.name,
            primary_key=self._key_dict(row),
        )

    def deletes(self, rows: pa.Table, base: int, clock: int) -> pa.Table:
        """``D`` events for live lake rows (user columns + ``_rhei_ts``) that vanished from the source,
        stamped by :func:`undated_delete_micros`."""
        from rhei_lake.catalog import TS

        last = rows.column(TS).cast(pa.int64()).to_pylist()
        n = rows.num_rows
        return pa.Table.from_arrays(
            [
                *(rows.column(c).cast(self.spec.column(c).arrow_type) for c in self.spec.column_names),
                int_range(base + 1, n),
                pa.array([OP_DELETE] * n, pa.string()),
                pa.array([undated_delete_micros(clock, t) for t in last], pa.int64()).cast(TIMESTAMP_TYPE),
            ],
            schema=self.spec.changes_schema,
        )
