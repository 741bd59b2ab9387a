"""Build Arrow change events from source rows, with the declared schema."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, time
from typing import Any
from uuid import UUID

import pyarrow as pa

from rhei_lake.capture.sqlite_schema import quote_ident, type_overrides
from rhei_lake.capture.types import (
    InvalidText,
    ValueMismatch,
    canonical_stored,
    column_affinity,
    describe_value,
    key_misfit,
    real_text,
    to_arrow,
)
from rhei_lake.catalog import TIMESTAMP_TYPE, TableSpec
from rhei_lake.errors import TypeMismatchError

_NO_VALUE = object()


ORIGIN_LOG = "log"
ORIGIN_SNAPSHOT = "snapshot"
ORIGIN_POLL = "poll"
_POLLED_SOURCES = ("sqlite-poll", "postgresql-poll")


def convert_columns(
    spec: TableSpec,
    columns: Sequence[Sequence[Any]],
    seqs: Sequence[int] | None = None,
    *,
    origin: str | None = None,
) -> list[pa.Array]:
    """Convert source value columns (in ``spec`` order) to Arrow arrays.

    Raises :class:`TypeMismatchError` naming table, column, primary key (and
    event) of the first value that does not fit its declared type, of a NULL in
    a primary-key column, or of a primary-key value that is not its lake
    value's canonical form (:func:`~rhei_lake.capture.types.key_misfit`). Its
    message says how to go on from where the rows came from: ``origin`` is
    ``"log"`` (CDC log events), ``"snapshot"`` (a registration's existing rows)
    or ``"poll"`` (a polled source); by default it follows ``spec.source``.
    """
    if origin is None:
        origin = ORIGIN_POLL if spec.source in _POLLED_SOURCES else ORIGIN_LOG
    arrays = []
    for index, column in enumerate(spec.columns):
        given = columns[index]
        values = given if isinstance(given, list) else list(given)
        try:
            array = to_arrow(values, column.arrow_type)
        except ValueMismatch as bad:
            detail = (
                f"{describe_value(bad.value)}: {bad.reason}, but the column is declared "
                f"{column.declared_type or column.arrow_type}"
            )
            raise mismatch_error(spec, columns, bad.index, column.name, seqs, detail, origin, fits=bad.value) from None
        if column.name in spec.primary_key:
            if array.null_count:
                row = array.is_null().to_pylist().index(True)
                raise mismatch_error(spec, columns, row, column.name, seqs, "primary-key value is NULL", origin)
            affinity = column_affinity(spec, column)
            row = key_misfit(values, array, column.arrow_type, affinity)
            if row is not None:
                canonical = canonical_stored(array[row].as_py(), column.arrow_type, affinity)
                raise mismatch_error(
                    spec,
                    columns,
                    row,
                    column.name,
                    seqs,
                    key_detail(values[row], canonical),
                    origin,
                    canonical=canonical,
                )
        arrays.append(array)
    return arrays


def misfit_detail(spec: TableSpec, column: str, value: Any) -> tuple[str, Any]:
    """Why stored ``value`` cannot be ``column``'s (as :func:`convert_columns` says it), and the canonical
    form a refused key must take (``_NO_VALUE`` if it is not a key's spelling that was refused)."""
    col = spec.column(column)
    if value is None:
        return "primary-key value is NULL", _NO_VALUE
    try:
        array = to_arrow([value], col.arrow_type)
    except ValueMismatch as bad:
        return (
            f"{describe_value(value)}: {bad.reason}, but the column is declared {col.declared_type or col.arrow_type}",
            _NO_VALUE,
        )
    canonical = canonical_stored(array[0].as_py(), col.arrow_type, column_affinity(spec, col))
    return key_detail(value, canonical), canonical


def key_detail(stored: Any, canonical: Any) -> str:
    """Why a primary-key value that is not in its canonical form is refused."""
    return (
        f"the primary-key value {describe_value(stored)} reads as the same lake value as "
        f"{describe_value(canonical)}, its canonical spelling; two spellings of one value would become one "
        "lake row, so keys are accepted only in the canonical spelling"
    )


def mismatch_error(
    spec: TableSpec,
    columns: Sequence[Sequence[Any]],
    row: int,
    column: str,
    seqs: Sequence[int] | None,
    detail: str,
    origin: str,
    *,
    fits: Any = None,
    canonical: Any = _NO_VALUE,
) -> TypeMismatchError:
    """The TypeMismatchError for the value at ``row`` of ``column`` (row images in ``columns``)."""
    names = spec.column_names
    key = {k: columns[names.index(k)][row] for k in spec.primary_key}
    seq = seqs[row] if seqs is not None else None
    return type_mismatch(spec, column, key, seq, detail, origin, fits=fits, canonical=canonical)


def type_mismatch(
    spec: TableSpec,
    column: str,
    key: dict[str, Any],
    seq: int | None,
    detail: str,
    origin: str,
    *,
    fits: Any = None,
    canonical: Any = _NO_VALUE,
) -> TypeMismatchError:
    """A TypeMismatchError whose message names the value and a way on that works from ``origin``.

    ``canonical`` is the form a refused key must take; ``fits`` the stored value
    that did not fit (for the type to suggest). Shared by the row and the
    columnar readers, so both say the same.
    """
    key_text = ", ".join(f"{k}={_short(repr(v))}" for k, v in key.items())
    where = f"table {spec.name!r}, column {column!r}, row {key_text}"
    if origin == ORIGIN_LOG and seq is not None:
        where += f" (event {seq})"
    advice = _advice(spec, column, key, seq, origin, fits, canonical)
    return TypeMismatchError(
        f"{where}: {detail}. {advice}",
        table=spec.name,
        column=column,
        primary_key=key,
        seq=seq if origin != ORIGIN_SNAPSHOT else None,
        canonical=None if canonical is _NO_VALUE else canonical,
    )


def _advice(
    spec: TableSpec, column: str, key: dict[str, Any], seq: int | None, origin: str, fits: Any, canonical: Any
) -> str:
    table = spec.name
    if canonical is not _NO_VALUE:
        fixed = sql_literal(canonical) if not isinstance(canonical, str) else repr(canonical)
        fix_row = f"store the key as {fixed} in the source ({_update_sql(spec, column, sql_literal(canonical), key)})"
    else:
        fixed = "<a value that fits>"
        fix_row = f"fix the value in the source ({_update_sql(spec, column, fixed, key)})"
    if origin == ORIGIN_LOG and seq is not None:
        repair = f"lake.repair_event({table!r}, {seq}, {{{column!r}: {fixed}}})"
        if canonical is not _NO_VALUE:  # the row first: a repaired key must be the key the row has in SQLite
            return (
                f"Nothing from this event on was synced. To go on, {fix_row} first, then correct the captured "
                f"event with {repair} and sync again (the fix logs a delete of the old spelling, which stops the "
                "same way and is corrected likewise)"
            )
        return (
            f"Nothing from this event on was synced. To go on, correct the captured event with "
            f"{repair} and {fix_row}, then sync again "
            "(a later event that carries the old value stops the same way and is corrected likewise)"
        )
    if origin == ORIGIN_SNAPSHOT:
        retype = ""
        suggested = _type_for(fits) if canonical is _NO_VALUE else "TEXT"
        if suggested is not None:
            retype = (
                f", or mirror the column as another type: lake.register_table({table!r}, "
                f"types={_retyped(spec, column, suggested)!r})"
            )
        return (
            f"The snapshot of {table!r} was not committed: the table stays registered, but is neither synced nor "
            f"queryable until one is. To go on, {fix_row} and call {_register_again(spec)} again, which "
            f"takes the snapshot anew{retype}"
        )
    return f"Nothing from this row on was synced. To go on, {fix_row} and sync again"


FREE_KEY = "<a key no other row holds>"
"""The placeholder a collision's way on names for the new key the application gives the row."""


def key_collision(spec: TableSpec, error: TypeMismatchError, *, database: str) -> TypeMismatchError:
    """``error`` (a key refused for its spelling) worded for a key another row holds in its canonical spelling.

    Storing the key canonically then fails on SQLite's UNIQUE constraint, and a
    correction to it would make the two rows one lake row. The ways on that work:
    the application gives the row a key of its own, or the column is mirrored as
    text, which only a table's first registration can choose.
    """
    table, column, key, seq = spec.name, error.column, dict(error.primary_key or {}), error.seq
    stored = key.get(column)
    key_text = ", ".join(f"{k}={_short(repr(v))}" for k, v in key.items())
    where = f"table {table!r}, column {column!r}, row {key_text}" + (f" (event {seq})" if seq is not None else "")
    held = " (or held when this change was made)" if seq is not None else ""
    detail = (
        f"the primary-key value {describe_value(stored)} reads as the same lake value as "
        f"{describe_value(error.canonical)}, which another row holds{held}; two rows would become one lake row, "
        f"so the key cannot be stored as {error.canonical!r} (SQLite's UNIQUE refuses it) nor the event corrected "
        "to it"
    )
    free = f"'{FREE_KEY}'" if isinstance(error.canonical, str) else FREE_KEY
    rekey = _update_sql(spec, column, free, key)
    if seq is not None:
        advice = (
            f"Nothing from this event on was synced. To go on, make the keys distinct in the application: give "
            f"this row a key no other row holds, in the canonical spelling ({rekey}), then correct the captured "
            f"event to that key with lake.repair_event({table!r}, {seq}, {{{column!r}: {free}}}) and sync "
            "again (the UPDATE logs a delete of the old spelling, which stops the same way and is corrected to the "
            "same key; if the application changed the row's key already, correct the event to the key it gave). "
            "Or keep every spelling by mirroring the column as text, which only a table's first registration can "
            f"choose: close this lake, detach the database from it (rhei_lake.detach_database({database!r})), open "
            f"a lake on a new storage location and call lake.register_table({table!r}, "
            f"types={_retyped(spec, column, 'TEXT')!r}); this lake stays readable with rhei_lake.open(storage=...)"
        )
    else:
        advice = (
            f"The snapshot of {table!r} was not committed: the table stays registered, but is neither synced nor "
            f"queryable until one is. To go on, make the keys distinct in the application ({rekey}) and call "
            f"{_register_again(spec)} again, which takes the snapshot anew, or mirror the column as text: "
            f"lake.register_table({table!r}, types={_retyped(spec, column, 'TEXT')!r})"
        )
    return TypeMismatchError(
        f"{where}: {detail}. {advice}", table=table, column=column, primary_key=key, seq=seq, canonical=error.canonical
    )


def _register_again(spec: TableSpec) -> str:
    """The ``register_table`` call that registers ``spec``'s table again as it was (with its ``types=``)."""
    types = type_overrides(spec)
    return f"lake.register_table({spec.name!r}" + (f", types={types!r})" if types else ")")


def _retyped(spec: TableSpec, column: str, declared: str) -> dict[str, str]:
    """The ``types=`` that mirrors ``column`` as ``declared`` and keeps the other columns' types as registered."""
    return {**type_overrides(spec), column: declared}


def _type_for(value: Any) -> str | None:
    """A declared type whose column accepts ``value`` (and numbers, which TEXT also accepts)."""
    if isinstance(value, InvalidText) or value is None:
        return None
    return {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB"}.get(type(value))


def _update_sql(spec: TableSpec, column: str, value_sql: str, key: dict[str, Any]) -> str:
    literals = {k: sql_literal(v) for k, v in key.items()}
    if any(len(text) > _LONG for text in literals.values()):  # the key is in the error's primary_key
        where = "<the key of this row>"
    else:
        # IS for a NULL key (legal in SQLite's non-INTEGER keys), which = never matches
        where = " AND ".join(
            f"{quote_ident(k)} {'IS' if key[k] is None else '='} {text}" for k, text in literals.items()
        )
    return f"UPDATE {quote_ident(spec.name)} SET {quote_ident(column)} = {value_sql} WHERE {where}"


_LONG = 200


def _short(text: str) -> str:
    return text if len(text) <= _LONG else text[: _LONG - 3] + "..."


def sql_literal(value: Any, *, postgres: bool = False) -> str:
    """``value`` as an SQL literal SQLite (or PostgreSQL) reads back as that value (in the fixes errors suggest).

    Dates, times and UUIDs (what a PostgreSQL source hands over) are quoted text,
    which both compare with a column of that type; blobs are SQLite's ``X'..'``,
    or ``'\\x..'::bytea`` with ``postgres``.
    """
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bytes):
        return f"'\\x{bytes(value).hex()}'::bytea" if postgres else f"X'{bytes(value).hex()}'"
    if isinstance(value, float):
        return real_text(value)
    if isinstance(value, (date, time, UUID)):
        return f"'{value}'"
    return str(value)


def events_from_log_rows(spec: TableSpec, rows: Sequence[tuple]) -> pa.Table:
    """Change events from ``_rhei_cdc_log`` rows ``(seq, tbl, op, ts, c0, ...)`` of one table."""
    transposed = list(zip(*rows))
    seqs = transposed[0]
    width = len(spec.columns)
    user = convert_columns(spec, transposed[4 : 4 + width], seqs, origin=ORIGIN_LOG)
    return _assemble(
        spec,
        user,
        pa.array(seqs, pa.int64()),
        pa.array(transposed[2], pa.string()),
        pa.array(transposed[3], pa.int64()).cast(TIMESTAMP_TYPE),
    )


def events_from_rows(spec: TableSpec, rows: Sequence[tuple], *, first_seq: int, op: str, ts_micros: int) -> pa.Table:
    """Change events for plain table rows (a snapshot): consecutive sequences from ``first_seq``."""
    n = len(rows)
    seqs = range(first_seq, first_seq + n)
    columns: list[Sequence[Any]] = list(zip(*rows)) if rows else [[] for _ in spec.columns]
    user = convert_columns(spec, columns, seqs, origin=ORIGIN_SNAPSHOT)
    return _assemble(
        spec,
        user,
        pa.array(seqs, pa.int64()),
        pa.array([op] * n, pa.string()),
        pa.array([ts_micros] * n, pa.int64()).cast(TIMESTAMP_TYPE),
    )


def _assemble(spec: TableSpec, user: list[pa.Array], seq: pa.Array, op: pa.Array, ts: pa.Array) -> pa.Table:
    return pa.Table.from_arrays([*user, seq, op, ts], schema=spec.changes_schema)
