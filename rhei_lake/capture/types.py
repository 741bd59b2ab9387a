"""Declared SQL types → Arrow types, and exact conversion of source values.

The Arrow type of a column comes from the type the source *declares*, never from
the data. The first matching rule wins (names are case-insensitive); the middle
column is SQLite's affinity for that declared type (its rules: contains ``INT``
→ INTEGER; else ``CHAR``/``CLOB``/``TEXT`` → TEXT; else ``BLOB`` or no type →
BLOB; else ``REAL``/``FLOA``/``DOUB`` → REAL; else NUMERIC), which decides what
SQLite actually stores: under NUMERIC and INTEGER affinity text that reads as a
number is stored as that number (``'42'`` as 42, ``'007'`` as 7, a 23-digit id
as a REAL), under TEXT affinity numbers are stored as text.

=========================================  ========  ==================  =============================================
declared type                              affinity  Arrow type          stored values accepted
=========================================  ========  ==================  =============================================
BOOL, BOOLEAN                              NUMERIC   bool                integers 0 and 1
contains DATETIME or TIMESTAMP             NUMERIC   timestamp[us, UTC]  date/time text in the forms SQLite's date
                                                                         functions read (naive means UTC); numbers,
                                                                         and text that reads as one, as Unix epoch
                                                                         seconds (a REAL rounded to the microsecond)
DATE                                       NUMERIC   date32              text ``YYYY-MM-DD``
TIME                                       NUMERIC   string              as for JSON
DECIMAL(p,s), NUMERIC(p,s) (p <= 38)       NUMERIC   decimal128(p, s)    integers, reals (their shortest decimal
                                                                         form), numeric text: when no digit is lost
contains INT                               INTEGER   int64               integers
contains CHAR, CLOB, TEXT                  TEXT      string              UTF-8 text
JSON, JSONB, UUID                          NUMERIC   string              UTF-8 text; an INTEGER as its decimal text,
                                                                         a REAL as its shortest round-trip text
contains BLOB; BYTEA                       BLOB      binary              blobs
contains REAL, FLOA, DOUB                  REAL      float64             reals
NUMERIC, DECIMAL, anything else            NUMERIC   float64             reals, integers up to 2**53
(no declared type)                         BLOB      -- refused: pass ``types={"col": "TEXT"}`` to register_table
=========================================  ========  ==================  =============================================

NULL is accepted everywhere except in primary-key columns. Anything else is a
:class:`~rhei_lake.errors.TypeMismatchError` naming table, column and key:
nothing is rounded, truncated or reinterpreted silently.

**Keys stay distinct.** Where two stored values convert to one lake value (two
spellings of one instant, ``'1.0'`` and ``'1.00'`` in a text column read as a
decimal, an integer and a text in an untyped column), a primary-key value is
accepted only in its *canonical* form: the value SQLite stores when the lake
value is written back (:func:`canonical_stored`; for a timestamp the text
``YYYY-MM-DD HH:MM:SS[.ffffff]``, UTC, as :meth:`~rhei_lake.Lake.restore_sqlite`
writes it). Two different SQLite keys therefore never become one lake row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake._shared.sqlite_db import InvalidText as InvalidText
from rhei_lake._shared.sqlite_db import decode_text as decode_text
from rhei_lake.catalog import TIMESTAMP_TYPE, Column, TableSpec
from rhei_lake.errors import SchemaError

AFFINITIES = ("INTEGER", "TEXT", "BLOB", "REAL", "NUMERIC")
_NUMERIC_AFFINITIES = ("INTEGER", "NUMERIC")


def sqlite_affinity(declared: str) -> str:
    """SQLite's column affinity for a declared type (its five rules, in order)."""
    upper = (declared or "").upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper.strip():
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def column_affinity(spec: TableSpec, column: Column) -> str | None:
    """The affinity SQLite stores ``column``'s values by; ``None`` for a typed source (PostgreSQL).

    With ``types=`` that is the affinity of the type the table itself declares.
    """
    if spec.source.startswith("postgresql"):
        return None
    return sqlite_affinity(column.source_type if column.source_type is not None else column.declared_type)


_DECIMAL = re.compile(r"^\s*(DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)\s*$", re.IGNORECASE)


def arrow_type_for(declared: str, *, table: str = "?", column: str = "?") -> pa.DataType:
    """The Arrow type for a declared SQL type (see the module table)."""
    text = (declared or "").strip()
    upper = text.upper()
    if not upper:
        raise SchemaError(
            f"table {table!r}: column {column!r} declares no type, so its Arrow type cannot be derived; "
            f"declare one in the table or pass types={{{column!r}: 'TEXT'}} (to register_table, or to "
            "PolledTable for a polled table)"
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


def make_column(
    name: str, declared: str, *, table: str, not_null: bool = False, source_type: str | None = None
) -> Column:
    """A column of declared type ``declared``; ``source_type`` is the type the source declares when
    ``types=`` overrides it (SQLite stores the column's values by that type's affinity)."""
    return Column(
        name,
        declared or "",
        arrow_type_for(declared, table=table, column=name),
        nullable=not not_null,
        source_type=source_type,
    )


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
    kind = (
        "TEXT"
        if isinstance(value, InvalidText)
        else {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB"}.get(type(value), type(value).__name__)
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
        return _to_string(values)
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
    # Every value has an accepted Python type: Arrow refused an integer it cannot hold
    # exactly (beyond 2**53 beside reals in a double column, beyond 64 bits anywhere).
    as_real = float in ok
    low, high = (-(2**53), 2**53) if as_real else (-(2**63), 2**63 - 1)
    for i, v in enumerate(values):
        if type(v) is int and not low <= v <= high:
            return ValueMismatch(i, v, "integer too large to be stored exactly as a REAL" if as_real else reason)
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
    big = pc.or_(pc.greater(array, limit), pc.less(array, -limit))  # abs(-2**63) wraps around
    if pc.any(big).as_py():
        idx = pc.index(big, True).as_py()
        raise ValueMismatch(idx, values[idx], "integer too large to be stored exactly as a REAL")
    return array.cast(pa.float64())


# -- text -----------------------------------------------------------------

_INFINITY_TEXT = "9.0e+999"


def real_text(value: float) -> str:
    """A REAL as text: the shortest digits that read back as the same double.

    That is what an application reading the column sees (Python's ``str``, a
    JSON encoder, JavaScript's ``String``), and it loses nothing, unlike
    SQLite's own ``CAST(x AS TEXT)`` (15 significant digits). Infinities are
    ``±9.0e+999``, which SQLite, JSON parsers and ``float()`` read back as them.
    """
    if value != value:
        return "NaN"  # SQLite stores NaN as NULL; only another source can send one
    if value in (float("inf"), float("-inf")):
        return _INFINITY_TEXT if value > 0 else "-" + _INFINITY_TEXT
    return repr(value)


def _to_string(values: list[Any]) -> pa.Array:
    """Text as it is; a number (stored so by NUMERIC or INTEGER affinity) as its text."""
    rendered: list[Any] | None = None
    for i, v in enumerate(values):
        kind = type(v)
        if kind is str or v is None:
            continue
        if kind is int or kind is float:
            if rendered is None:
                rendered = list(values)
            rendered[i] = str(v) if kind is int else real_text(v)
            continue
        reason = "not valid UTF-8" if isinstance(v, InvalidText) else "expected TEXT (or a number, kept as its text)"
        raise ValueMismatch(i, v, reason)
    return pa.array(values if rendered is None else rendered, pa.string())


# SQLite's numeric literal, as its affinity reads text (ASCII digits, blanks around it allowed).
_BLANKS = " \t\n\v\f\r"
NUMBER_PATTERN = r"[ \t\n\v\f\r]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\n\v\f\r]*"
_NUMBER = re.compile(NUMBER_PATTERN, re.ASCII)
_INTEGER_LITERAL = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+[ \t\n\v\f\r]*", re.ASCII)
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def sqlite_number(text: str, affinity: str) -> int | float | str:
    """The value SQLite stores when ``text`` is written into a column of ``affinity`` (a numeric one).

    Text that reads as a number becomes an INTEGER (a real literal too when it
    is a whole number inside the 64-bit range) or a REAL; under REAL affinity
    always a REAL. Other text stays text.
    """
    if not _NUMBER.fullmatch(text):
        return text
    if _INTEGER_LITERAL.fullmatch(text):
        number = int(text.strip(_BLANKS))
        if _I64_MIN <= number <= _I64_MAX:
            return float(number) if affinity == "REAL" else number
    real = float(text.strip(_BLANKS))
    if affinity != "REAL" and real.is_integer() and -(2.0**63) < real < 2.0**63:
        return int(real)
    return real


# -- booleans and dates ---------------------------------------------------


def _to_bool(values: list[Any]) -> pa.Array:
    out: list[bool | None] = []
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


_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _to_date(values: list[Any]) -> pa.Array:
    out: list[date | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if type(v) is date:  # drivers with a date type (PostgreSQL)
            out.append(v)
            continue
        if type(v) is str and _DATE_TEXT.fullmatch(v):
            try:
                out.append(date.fromisoformat(v))
                continue
            except ValueError:
                pass
        raise ValueMismatch(i, v, "expected a date as text YYYY-MM-DD")
    return pa.array(out, pa.date32())


# -- timestamps -----------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_US = -62_135_596_800_000_000  # 0001-01-01
_MAX_US = 253_402_300_799_999_999  # 9999-12-31 23:59:59.999999

# The forms SQLite's date and time functions read: YYYY-MM-DD, then optionally
# [T ]HH:MM[:SS[.fraction]] and a zone Z or [+-]HH:MM.
_TIMESTAMP_TEXT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?",
    re.ASCII,
)


def parse_timestamp_text(text: str) -> datetime:
    """Date/time text to an aware UTC datetime (naive means UTC); ValueError if it is not one.

    Accepts the forms SQLite's date functions read (``YYYY-MM-DD``, then
    optionally ``[T ]HH:MM[:SS[.fraction]]`` and a zone ``Z`` or ``[+-]HH:MM``);
    digits of the fraction past the microsecond must be zeros, since a
    timestamp[us] cannot keep them.
    """
    match = _TIMESTAMP_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a date/time text (YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][Z|+HH:MM])")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    digits = fraction or ""
    if digits[6:].strip("0"):
        raise ValueError(f"{text!r} is finer than a microsecond")
    micro = int((digits[:6]).ljust(6, "0"))
    tz = UTC
    if zone and zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if minutes >= 60:
            raise ValueError(f"{text!r} has a zone offset with {minutes} minutes")
        offset = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-offset if zone[0] == "-" else offset)
    value = datetime(
        int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro, tzinfo=tz
    )
    return value.astimezone(UTC)


def timestamp_micros(value: Any) -> int:
    """A source timestamp value as UTC epoch microseconds; ValueError if it is not one.

    Text in the forms of :func:`parse_timestamp_text`; integers and reals, and
    text that reads as a number, count seconds since the Unix epoch (a REAL is
    rounded to the microsecond); a datetime is its instant (naive means UTC).
    """
    kind = type(value)
    if kind is str:
        if _NUMBER.fullmatch(value):  # as NUMERIC affinity would have stored it
            return timestamp_micros(sqlite_number(value, "NUMERIC"))
        return _datetime_micros(parse_timestamp_text(value))
    if kind is int:
        return value * 1_000_000
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return round(value * 1_000_000)
    if isinstance(value, datetime):
        return _datetime_micros(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return _datetime_micros(datetime(value.year, value.month, value.day, tzinfo=UTC))
    raise ValueError(f"unsupported timestamp value {kind.__name__}")


def _datetime_micros(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def timestamp_text(value: datetime | int) -> str:
    """The canonical text of an instant (a datetime or UTC epoch micros): ``YYYY-MM-DD HH:MM:SS[.ffffff]`` in UTC.

    What :meth:`~rhei_lake.Lake.restore_sqlite` writes, SQLite's ``datetime()``
    prints (to the second) and Python's ``sqlite3`` adapter stores for a naive
    datetime.
    """
    if isinstance(value, datetime):
        dt = value.astimezone(UTC) if value.tzinfo else value
    else:
        dt = _EPOCH + timedelta(microseconds=value)
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d} {dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    return text + (f".{dt.microsecond:06d}" if dt.microsecond else "")


def _to_timestamp(values: list[Any]) -> pa.Array:
    micros: list[int | None] = []
    for i, v in enumerate(values):
        if v is None:
            micros.append(None)
            continue
        try:
            us = timestamp_micros(v)
        except (ValueError, OverflowError, TypeError):
            raise ValueMismatch(i, v, "expected date/time text or Unix epoch seconds") from None
        if not _MIN_US <= us <= _MAX_US:
            raise ValueMismatch(i, v, "timestamp out of range (years 1-9999)")
        micros.append(us)
    return pa.array(micros, pa.int64()).cast(TIMESTAMP_TYPE)


# -- decimals -------------------------------------------------------------

_WIDE = Context(prec=80)  # room for any decimal128 (38 digits) and any REAL's shortest form


def decimal_of(value: Any) -> Decimal | None:
    """The exact decimal a stored value stands for (a REAL: its shortest form), or ``None``."""
    kind = type(value)
    if kind is Decimal:
        return value
    if kind is int:
        return Decimal(value)
    if kind is float:
        return Decimal(repr(value)) if value - value == 0 else None  # not inf or NaN
    if kind is str and _NUMBER.fullmatch(value):
        return Decimal(value.strip(_BLANKS))
    return None


def decimal_text(value: Decimal, scale: int) -> str:
    """A decimal as text with exactly ``scale`` digits after the point (``1.50`` for 1.5 at scale 2)."""
    return f"{value.quantize(Decimal(1).scaleb(-scale), context=_WIDE):f}"


def _to_decimal(values: list[Any], dtype: pa.DataType) -> pa.Array:
    step = Decimal(1).scaleb(-dtype.scale)
    limit = Decimal(10) ** (dtype.precision - dtype.scale)
    out: list[Decimal | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        d = decimal_of(v)
        if d is None or not d.is_finite():
            raise ValueMismatch(i, v, f"expected a number for {dtype}")
        # pyarrow rounds digits past the scale away (1e-311 becomes 0.00): check exactness here
        fitted = d.quantize(step, context=_WIDE) if abs(d) < limit else None
        if fitted is None or fitted != d:
            raise ValueMismatch(i, v, f"does not fit {dtype} without losing digits")
        out.append(fitted)
    return pa.array(out, dtype)


# -- distinct keys ----------------------------------------------------------


def canonical_stored(lake_value: Any, dtype: pa.DataType, affinity: str | None) -> Any:
    """The value SQLite stores when ``lake_value`` is written back into a column of ``affinity``.

    :func:`written_value` put through the column's affinity; ``affinity=None``
    (a typed source) keeps it as it is.
    """
    return _with_affinity(written_value(lake_value, dtype, affinity), affinity)


def written_value(lake_value: Any, dtype: pa.DataType, affinity: str | None) -> Any:
    """The lake value as an application writes it to SQLite: its own text or number.

    A timestamp as :func:`timestamp_text`, a date as ``YYYY-MM-DD``, a boolean
    as 0/1, a decimal as its text with the scale's digits (``1.50``), or as
    integer text when it is whole and the column's affinity reads numbers
    (``"…993.00"`` would be read as a REAL first, losing digits past 2**53);
    text that a numeric affinity stores as a REAL as that REAL, read exactly.
    """
    if isinstance(lake_value, bool):
        return int(lake_value)
    if isinstance(lake_value, datetime):
        return timestamp_text(lake_value)
    if isinstance(lake_value, date):
        return lake_value.isoformat()
    if isinstance(lake_value, Decimal):
        if affinity not in (None, "TEXT", "BLOB") and lake_value == lake_value.to_integral_value():
            return str(int(lake_value))
        return decimal_text(lake_value, dtype.scale if pa.types.is_decimal(dtype) else 0)
    if isinstance(lake_value, str) and affinity in ("NUMERIC", "INTEGER", "REAL"):
        # A REAL the lake keeps as text (its shortest exact spelling) goes back as the double
        # itself: SQLite's text-to-REAL conversion is not correctly rounded at extreme exponents.
        number = sqlite_number(lake_value, affinity)
        if isinstance(number, float):
            return number
    return lake_value


def _with_affinity(value: Any, affinity: str | None) -> Any:
    """What SQLite stores for ``value`` in a column of ``affinity`` (SQLite's storage rules)."""
    kind = type(value)
    if affinity is None or affinity == "BLOB":
        return value
    if affinity == "TEXT":
        if kind is int:
            return str(value)
        if kind is float:
            return real_text(value)  # SQLite would print 15 digits here; that value is the closest we can name
        return value
    if kind is str:
        return sqlite_number(value, affinity)
    if kind is int and (affinity == "REAL" or not _I64_MIN <= value <= _I64_MAX):
        return float(value)
    if kind is float and affinity != "REAL" and value.is_integer() and -(2.0**63) < value < 2.0**63:
        return int(value)
    return value


def same_stored(a: Any, b: Any) -> bool:
    """Whether two stored values are the same value of the same storage class (reals by their bits)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a.hex() == b.hex() or (a != a and b != b)
    return bool(a == b)


def _is_checked(dtype: pa.DataType, affinity: str | None) -> bool:
    """Whether a key of this type and affinity can have two stored spellings of one lake value."""
    if pa.types.is_int64(dtype) or pa.types.is_binary(dtype) or pa.types.is_boolean(dtype):
        return False
    if pa.types.is_date32(dtype):
        return False  # only text YYYY-MM-DD is accepted: one spelling per date
    if pa.types.is_string(dtype):
        return affinity not in (None, "TEXT")  # numbers become text; TEXT affinity stores none
    if pa.types.is_float64(dtype):
        return affinity is not None and affinity != "REAL"
    return True  # timestamps, decimals


def key_misfit(values: Sequence[Any], array: pa.Array, dtype: pa.DataType, affinity: str | None) -> int | None:
    """The index of the first key value that is not :func:`canonical_stored` of its lake value, or ``None``.

    ``array`` is ``values`` converted. Values of a typed source's own types
    (datetime, Decimal, ...) are canonical by construction.
    """
    if not _is_checked(dtype, affinity):
        return None
    lake = None
    for i, v in enumerate(values):
        kind = type(v)
        if kind is not str and kind is not int and kind is not float:
            continue
        if affinity is None and kind is not str:
            continue
        if lake is None:
            lake = array.to_pylist()
        if not same_stored(v, canonical_stored(lake[i], dtype, affinity)):
            return i
    return None
