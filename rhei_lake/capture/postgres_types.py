"""PostgreSQL declared types → Arrow types (the sidecar's mapping; SQLite's is in ``types.py``).

The Arrow type comes from the column's type in ``pg_catalog`` (a domain's base
type for a domain), never from the data:

==========================================  =========================  =======================================
PostgreSQL type                             Arrow type                 read as
==========================================  =========================  =======================================
boolean                                     bool                       bool
smallint, integer, bigint, oid              int64                      int
real, double precision                      float64                    float (a real is widened exactly)
numeric(p,s) with p <= 38, 0 <= s <= p      decimal128(p, s)           Decimal
numeric without precision, or p > 38        string                     its exact text (override with types=)
date                                        date32                     date
timestamp with time zone                    timestamp[us, UTC]         the instant
timestamp without time zone                 timestamp[us, UTC]         the wall time, taken as UTC
bytea                                       binary                     bytes
text, varchar, char(n), name, citext        string                     text (char(n) loses its padding)
anything else (uuid, json, jsonb, enums,    string                     its PostgreSQL text form (``col::text``)
interval, time, inet, arrays, ...)
==========================================  =========================  =======================================

``types={"col": "numeric(12,2)"}`` on the :class:`~rhei_lake.PolledTable`
overrides a column with the SQLite rules of ``types.py``.
"""

from __future__ import annotations

import pyarrow as pa

from rhei_lake.catalog import TIMESTAMP_TYPE

_VARHDRSZ = 4
_INTEGERS = ("int2", "int4", "int8", "oid")
_FLOATS = ("float4", "float8")


def numeric_precision_scale(typmod: int) -> tuple[int, int] | None:
    """``(precision, scale)`` of a ``numeric`` type modifier, ``None`` when unconstrained."""
    if typmod < _VARHDRSZ:
        return None
    value = typmod - _VARHDRSZ
    precision = (value >> 16) & 0xFFFF
    scale = value & 0x7FF
    if scale & 0x400:  # PostgreSQL 15 allows negative scales, stored as 11-bit two's complement
        scale -= 0x800
    return precision, scale


def pg_arrow_type(base_type: str, typmod: int) -> pa.DataType:
    """The Arrow type of a column whose (base) type is ``pg_type.typname = base_type``."""
    if base_type == "bool":
        return pa.bool_()
    if base_type in _INTEGERS:
        return pa.int64()
    if base_type in _FLOATS:
        return pa.float64()
    if base_type == "numeric":
        ps = numeric_precision_scale(typmod)
        if ps is not None and 1 <= ps[0] <= 38 and 0 <= ps[1] <= ps[0]:
            return pa.decimal128(*ps)
        return pa.string()
    if base_type == "date":
        return pa.date32()
    if base_type in ("timestamp", "timestamptz"):
        return TIMESTAMP_TYPE
    if base_type == "bytea":
        return pa.binary()
    return pa.string()


def select_expression(quoted_column: str, base_type: str, arrow_type: pa.DataType) -> str:
    """How a column is selected: string-typed columns as their text form, others natively.

    A ``real`` is widened to ``double precision`` on the server: its shortest
    text form ("0.1") would otherwise be parsed as a different double.
    """
    if pa.types.is_string(arrow_type):
        return f"{quoted_column}::text"
    if base_type == "float4" and pa.types.is_float64(arrow_type):
        return f"{quoted_column}::float8"
    return quoted_column
