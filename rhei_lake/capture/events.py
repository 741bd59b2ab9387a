"""Build Arrow change events from source rows, with the declared schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from rhei_lake.capture.types import ValueMismatch, describe_value, to_arrow
from rhei_lake.catalog import TIMESTAMP_TYPE, TableSpec
from rhei_lake.errors import TypeMismatchError


def convert_columns(
    spec: TableSpec,
    columns: Sequence[Sequence[Any]],
    seqs: Sequence[int] | None = None,
) -> list[pa.Array]:
    """Convert source value columns (in ``spec`` order) to Arrow arrays.

    Raises :class:`TypeMismatchError` naming table, column, primary key and
    sequence of the first value that does not fit its declared type, or of a
    NULL in a primary-key column.
    """
    arrays = []
    for index, column in enumerate(spec.columns):
        values = columns[index]
        try:
            array = to_arrow(values if isinstance(values, list) else list(values), column.arrow_type)
        except ValueMismatch as bad:
            raise _mismatch(spec, columns, bad.index, column.name, seqs, f"{describe_value(bad.value)}: {bad.reason}, "
                            f"but the column is declared {column.declared_type or column.arrow_type}") from None
        if array.null_count and column.name in spec.primary_key:
            row = array.is_null().to_pylist().index(True)
            raise _mismatch(spec, columns, row, column.name, seqs, "primary-key value is NULL")
        arrays.append(array)
    return arrays


def _mismatch(
    spec: TableSpec,
    columns: Sequence[Sequence[Any]],
    row: int,
    column: str,
    seqs: Sequence[int] | None,
    detail: str,
) -> TypeMismatchError:
    names = spec.column_names
    key = {k: columns[names.index(k)][row] for k in spec.primary_key}
    seq = seqs[row] if seqs is not None else None
    where = f" (event {seq})" if seq is not None else ""
    key_text = ", ".join(f"{k}={v!r}" for k, v in key.items())
    return TypeMismatchError(
        f"table {spec.name!r}, column {column!r}, row {key_text}{where}: {detail}. "
        + (
            "Nothing from this event on was synced. Correct the captured event with "
            f"lake.repair_event({spec.name!r}, {seq}, {{{column!r}: value}}) (and the row in the source), "
            "or change the column's declared type, then sync again"
            if seq is not None
            else "Nothing was synced; fix the value in the source (or the column's declared type) and sync again"
        ),
        table=spec.name,
        column=column,
        primary_key=key,
        seq=seq,
    )


def events_from_log_rows(spec: TableSpec, rows: Sequence[tuple]) -> pa.Table:
    """Change events from ``_rhei_cdc_log`` rows ``(seq, tbl, op, ts, c0, ...)`` of one table."""
    transposed = list(zip(*rows))
    seqs = transposed[0]
    width = len(spec.columns)
    user = convert_columns(spec, transposed[4 : 4 + width], seqs)
    return _assemble(
        spec,
        user,
        pa.array(seqs, pa.int64()),
        pa.array(transposed[2], pa.string()),
        pa.array(transposed[3], pa.int64()).cast(TIMESTAMP_TYPE),
    )


def events_from_rows(
    spec: TableSpec, rows: Sequence[tuple], *, first_seq: int, op: str, ts_micros: int
) -> pa.Table:
    """Change events for plain table rows (a snapshot): consecutive sequences from ``first_seq``."""
    n = len(rows)
    seqs = range(first_seq, first_seq + n)
    columns = list(zip(*rows)) if rows else [[] for _ in spec.columns]
    user = convert_columns(spec, columns, seqs)
    return _assemble(
        spec,
        user,
        pa.array(seqs, pa.int64()),
        pa.array([op] * n, pa.string()),
        pa.array([ts_micros] * n, pa.int64()).cast(TIMESTAMP_TYPE),
    )


def _assemble(spec: TableSpec, user: list[pa.Array], seq: pa.Array, op: pa.Array, ts: pa.Array) -> pa.Table:
    return pa.Table.from_arrays([*user, seq, op, ts], schema=spec.changes_schema)
