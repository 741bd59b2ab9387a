"""SQLite's sort order over stored values, applied to raw Arrow batches of the typed reader.

SQLite sorts NULL first, then numbers (integers and reals compared by value),
then text (by its ``BINARY`` collation: the bytes of the UTF-8 encoding, which
is the order Python compares ``str`` in), then blobs (by bytes). A column
declared with another collation sorts text differently: callers must not use
this for such columns (see :func:`declares_collation`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake.capture.typed_select import TypedSelect

_TIE_VECTOR_LIMIT = 1_024  # more rows tied on updated_at than this: pick the greatest key in Arrow, if it can


def order_key(value: Any) -> tuple[int, Any]:
    """A Python sort key that orders stored values as SQLite's ``ORDER BY`` does."""
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, bytes(value))


def declares_collation(conn: sqlite3.Connection, table: str) -> bool:
    """Whether ``table``'s definition names any collation (then only SQLite itself can sort its text)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = ? COLLATE NOCASE", (table,)).fetchone()
    return row is None or row[0] is None or "COLLATE" in row[0].upper()


def _greatest(parts: Sequence[pa.Array]) -> Any:
    """The greatest value of one column's raw parts in SQLite's order (``None`` when all are NULL)."""
    best: Any = None
    for part in parts:
        if part.null_count == len(part) or pa.types.is_null(part.type):
            continue
        value = pc.max(part).as_py()
        if best is None or order_key(value) > order_key(best):
            best = value
    return best


def _equal(parts: Sequence[pa.Array], value: Any) -> pa.Array:
    """Per row: whether the column's stored value sorts equal to ``value``."""
    if value is None:  # NULL only where every part is NULL
        return pc.and_(*[pc.is_null(p) for p in parts]) if len(parts) > 1 else pc.is_null(parts[0])
    kind = order_key(value)[0]
    mask = pa.repeat(pa.scalar(False), len(parts[0]))
    for part in parts:
        dtype = part.type
        if kind == 1 and (pa.types.is_integer(dtype) or pa.types.is_floating(dtype)):
            hit = pc.equal(part.cast(pa.float64()) if isinstance(value, float) else part, value)
        elif (kind == 2 and pa.types.is_string(dtype)) or (kind == 3 and pa.types.is_binary(dtype)):
            hit = pc.equal(part, value)
        else:
            continue
        mask = pc.or_(mask, pc.fill_null(hit, False))
    return mask


def _merged(parts: Sequence[pa.Array]) -> list[Any]:
    """One stored value per row from a column's raw parts."""
    if len(parts) == 1:
        return parts[0].to_pylist()
    lists = [part.to_pylist() for part in parts]
    return [next((v for v in values if v is not None), None) for values in zip(*lists, strict=True)]


class GreatestRow:
    """The greatest ``(first column, *rest)`` of the rows seen so far, in SQLite's order, as stored values."""

    def __init__(self, typed: TypedSelect, columns: Sequence[str]) -> None:
        assert len(columns) >= 2, "updated_at and at least one key column"
        self.typed = typed
        self.columns = tuple(columns)
        self.values: tuple[Any, ...] | None = None

    def observe(self, raw: pa.RecordBatch) -> None:
        """Take the rows of one raw batch (after the witness row) into account."""
        if raw.num_rows == 0:
            return
        lead = self.typed.raw_parts(raw, self.columns[0])
        top = _greatest(lead)
        tied = pc.indices_nonzero(_equal(lead, top))
        rest = [[part.take(tied) for part in self.typed.raw_parts(raw, c)] for c in self.columns[1:]]
        single = rest[0][0] if len(rest) == 1 and len(rest[0]) == 1 else None
        if len(tied) > _TIE_VECTOR_LIMIT and single is not None and pa.types.is_integer(single.type):
            candidate = (top, pc.max(single).as_py())
        else:
            rows = zip(*(_merged(parts) for parts in rest), strict=True)
            candidate = (top, *max(rows, key=self._key))
        if self.values is None or self._key(candidate) > self._key(self.values):
            self.values = candidate

    @staticmethod
    def _key(row: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
        return tuple(order_key(v) for v in row)
