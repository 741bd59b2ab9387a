"""Declared SQL types → Arrow types, and exact conversion of source values.

The Arrow type of a column comes from the type the source *declares*, never from
the data. The first matching rule wins (names are case-insensitive):

=============================================  =========================  ==========================================
declared type                                  Arrow type                 accepted stored values
=============================================  =========================  ==========================================
BOOL, BOOLEAN                                  bool                       integers 0 and 1
DATETIME, TIMESTAMP, TIMESTAMPTZ (contains)    timestamp[us, UTC]         ISO 8601 text (naive means UTC), or
                                                                          integer/real Unix epoch seconds
DATE                                           date32                     text ``YYYY-MM-DD``
TIME                                           string                     text, kept as stored
DECIMAL(p,s), NUMERIC(p,s) (p <= 38)           decimal128(p, s)           integers, reals, numeric text (no digits lost)
contains INT                                   int64                      integers
contains CHAR, CLOB, TEXT; JSON, UUID          string                     UTF-8 text
contains BLOB                                  binary                     blobs
contains REAL, FLOA, DOUB; NUMERIC, DECIMAL    float64                    reals, integers up to 2**53
anything else (SQLite's NUMERIC affinity)      float64                    reals, integers up to 2**53
(no declared type)                             -- refused: pass ``types={"col": "TEXT"}`` to register_table
=============================================  =========================  ==========================================

NULL is accepted everywhere except in primary-key columns. Anything else is a
:class:`~rhei_lake.errors.TypeMismatchError` naming table, column and key.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake.catalog import TIMESTAMP_TYPE, Column
from rhei_lake.errors import SchemaError

_DECIMAL = re.compile(r"^\s*(DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)\s*$", re.IGNORECASE)


def arrow_type_for(declared: str, *, table: str = "?", column: str = "?") -> pa.DataType:
    """The Arrow type for a declared SQL type (see the module table)."""
    text = (declared or "").strip()
    upper = text.upper()
    if not upper:
        raise SchemaError(
            f"table {table!r}: column {column!r} declares no type, so its Arrow type cannot be derived; "
            f"declare one in the table or pass types={{{column!r}: 'TEXT'}} to register_table"
        )
    base = upper.split("(")[0].strip()
    if base in ("BOOL", "BOOLEAN"):
        return pa.bool_()
    if "TIMESTAMP" in upper or "DATETIME" in upper:
        return TIMESTAMP_TYPE
    if base == "DATE":
        return pa.date32()
    if base == "TIME" or base.startswith("TIME WITHOUT") or base.startswith("TIME WITH"):
        return pa.string()
    match = _DECIMAL.match(upper)
    if match:
        precision, scale = int(match.group(2)), int(match.group(3) or 0)
        if not 1 <= precision <= 38 or scale > precision:
            raise SchemaError(
                f"table {table!r}: column {column!r} declares {text}; precision must be 1-38 and scale <= precision"
            )
        return pa.decimal128(precision, scale)
    if "INT" in upper:
        return pa.int64()
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")) or base in ("JSON", "JSONB", "UUID"):
        return pa.string()
    if "BLOB" in upper or base == "BYTEA":
        return pa.binary()
    return pa.float64()


def make_column(name: str, declared: str, *, table: str, not_null: bool = False) -> Column:
    return Column(name, declared or "", arrow_type_for(declared, table=table, column=name), nullable=not not_null)


class InvalidText(bytes):
    """A TEXT value whose bytes are not UTF-8 (SQLite stores whatever it is given).

    Kept as its raw bytes so that the one value is reported, by table, column
    and event, instead of the whole read failing on it.
    """

    def __repr__(self) -> str:
        return f"<TEXT that is not UTF-8: {bytes(self)!r}>"


def decode_text(raw: bytes) -> str | InvalidText:
    """SQLite ``text_factory``: UTF-8 text as ``str``, anything else as :class:`InvalidText`."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText(raw)


class ValueMismatch(Exception):
    """Raised by :func:`to_arrow` with the index of the first value that does not fit."""

    def __init__(self, index: int, value: Any, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.value = value
        self.reason = reason


def describe_value(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = "TEXT" if isinstance(value, InvalidText) else {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB"}.get(
        type(value), type(value).__name__
    )
    return f"{text} ({kind})"


def to_arrow(values: list[Any], dtype: pa.DataType) -> pa.Array:
    """Convert one column of source values to ``dtype`` exactly, or raise ValueMismatch."""
    if pa.types.is_int64(dtype):
        return _strict(values, dtype, (pa.int64(),))
    if pa.types.is_float64(dtype):
        array = _strict(values, None, (pa.float64(), pa.int64()))
        if pa.types.is_int64(array.type):
            return _int_to_float(array, values)
        return array
    if pa.types.is_string(dtype):
        return _strict(_only(values, str, "expected TEXT"), dtype, (pa.string(),))
    if pa.types.is_binary(dtype):
        return _strict(_only(values, bytes, "expected a BLOB"), dtype, (pa.binary(),))
    if pa.types.is_boolean(dtype):
        return _to_bool(values)
    if pa.types.is_timestamp(dtype):
        return _to_timestamp(values)
    if pa.types.is_date32(dtype):
        return _to_date(values)
    if pa.types.is_decimal(dtype):
        return _to_decimal(values, dtype)
    raise SchemaError(f"no converter for Arrow type {dtype}")


def _only(values: list[Any], kind: type, reason: str) -> list[Any]:
    """pyarrow silently turns str into binary and UTF-8 bytes into string: refuse both."""
    for i, v in enumerate(values):
        if v is not None and type(v) is not kind:
            raise ValueMismatch(i, v, "not valid UTF-8" if isinstance(v, InvalidText) and kind is str else reason)
    return values


def _first_bad(values: list[Any], ok: tuple[type, ...], reason: str) -> ValueMismatch:
    for i, v in enumerate(values):
        if v is not None and type(v) not in ok:
            return ValueMismatch(i, v, reason)
    return ValueMismatch(0, values[0] if values else None, reason)


_PY_FOR = {"int64": (int,), "double": (float, int), "string": (str,), "binary": (bytes,)}


def _strict(values: list[Any], dtype: pa.DataType | None, allowed: tuple[pa.DataType, ...]) -> pa.Array:
    """Infer the array's type from the values and accept it only if it is allowed."""
    wanted = str(allowed[0])
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        raise _first_bad(values, _PY_FOR.get(wanted, ()), f"expected {wanted}") from None
    if pa.types.is_null(array.type):
        return pa.nulls(len(values), allowed[0] if dtype is None else dtype)
    if array.type not in allowed:
        raise _first_bad(values, _PY_FOR.get(wanted, ()), f"expected {wanted}")
    return array if dtype is None or array.type == dtype else array.cast(dtype)


def _int_to_float(array: pa.Array, values: list[Any]) -> pa.Array:
    limit = 2**53
    big = pc.greater(pc.abs(array), limit)
    if pc.any(big).as_py():
        idx = pc.index(big, True).as_py()
        raise ValueMismatch(idx, values[idx], "integer too large to be stored exactly as a REAL")
    return array.cast(pa.float64())


def _to_bool(values: list[Any]) -> pa.Array:
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
        elif type(v) is int and v in (0, 1):
            out.append(bool(v))
        elif type(v) is bool:  # drivers with a boolean type (PostgreSQL)
            out.append(v)
        else:
            raise ValueMismatch(i, v, "expected 0 or 1 for a BOOLEAN")
    return pa.array(out, pa.bool_())


def _to_date(values: list[Any]) -> pa.Array:
    out: list[date | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if type(v) is date:  # drivers with a date type (PostgreSQL)
            out.append(v)
            continue
        if type(v) is str and len(v) == 10:
            try:
                out.append(date.fromisoformat(v))
                continue
            except ValueError:
                pass
        raise ValueMismatch(i, v, "expected a date as text YYYY-MM-DD")
    return pa.array(out, pa.date32())


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp_text(text: str) -> datetime:
    """ISO 8601 / SQLite datetime text to an aware UTC datetime (naive means UTC)."""
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def timestamp_micros(value: Any) -> int:
    """A source timestamp value (text, epoch seconds, datetime) as UTC epoch microseconds."""
    if type(value) is str:
        dt = parse_timestamp_text(value)
    elif type(value) is int:
        return value * 1_000_000
    elif type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return round(value * 1_000_000)
    elif isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day, tzinfo=UTC)
    else:
        raise ValueError(f"unsupported timestamp value {type(value).__name__}")
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_MIN_US = -62_135_596_800_000_000  # 0001-01-01
_MAX_US = 253_402_300_799_999_999  # 9999-12-31 23:59:59.999999


def _to_timestamp(values: list[Any]) -> pa.Array:
    micros: list[int | None] = []
    for i, v in enumerate(values):
        if v is None:
            micros.append(None)
            continue
        try:
            us = timestamp_micros(v)
        except (ValueError, OverflowError, TypeError):
            raise ValueMismatch(i, v, "expected an ISO 8601 timestamp or Unix epoch seconds") from None
        if not _MIN_US <= us <= _MAX_US:
            raise ValueMismatch(i, v, "timestamp out of range (years 1-9999)")
        micros.append(us)
    return pa.array(micros, pa.int64()).cast(TIMESTAMP_TYPE)


def _to_decimal(values: list[Any], dtype: pa.DataType) -> pa.Array:
    out: list[Decimal | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if type(v) not in (int, float, str, Decimal):
            raise ValueMismatch(i, v, f"expected a number for {dtype}")
        try:
            d = v if type(v) is Decimal else Decimal(v if type(v) is not float else repr(v))
        except InvalidOperation:
            raise ValueMismatch(i, v, f"expected a number for {dtype}") from None
        if not d.is_finite():
            raise ValueMismatch(i, v, f"{dtype} cannot hold {v!r}")
        out.append(d)
    try:
        return pa.array(out, dtype)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        for i, d in enumerate(out):
            try:
                pa.array([d], dtype)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise ValueMismatch(i, values[i], f"does not fit {dtype} without losing digits") from None
        raise ValueMismatch(0, values[0], str(exc)) from None
