"""Typed SELECTs for the columnar reader, and their conversion to declared Arrow types.

ADBC infers a column's Arrow type from the first batch, widens mixed storage
classes inside a batch (an INTEGER column holding ``'abc'`` comes back as
strings) and fails across batches. Two read modes make it exact:

* **fast**: the stored values as they are, led by a *witness* row of typed
  non-NULL values so inference is right even for columns that start NULL. A
  column whose SQLite affinity already guarantees its storage class (INTEGER
  → integers, REAL → reals, TEXT → text or a blob) needs no check in SQL: a
  misfit shows up as a wrong Arrow type or an error, and the read is *diagnosed*.
  Other columns carry a SQL check, reported in one trailing column (absent
  when no column needs one).
* **strict** (the diagnosis, only after a fast read saw something wrong): one
  storage class per output column (``CAST``/``CASE typeof``) and, per row, the
  first column whose value does not fit, with ``typeof`` and ``quote`` of it.

The witness is the first row of the stream: it is the left arm of a ``UNION
ALL``, which SQLite emits before the right one (and, under the log read's
``ORDER BY seq``, its sequence number -1 sorts first). It has no marker column:
every column ADBC reads costs about as much as a column of user data.

Conversion has the same semantics as :func:`rhei_lake.capture.types.to_arrow`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.capture.triggers import TS_MICROS
from rhei_lake.capture.types import ValueMismatch, timestamp_micros, to_arrow
from rhei_lake.catalog import TIMESTAMP_TYPE, Column, TableSpec

LOG_WHERE = "WHERE tbl = ? AND seq > ? AND seq <= ? AND op <> 'S' ORDER BY 1"

_MAX_EXACT = 9007199254740992
_MIN_US = -62_135_596_800_000_000
_MAX_US = 253_402_300_799_999_999
_NAIVE = r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?$"
_AWARE = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"
_RAW_TYPES = {"int": pa.int64(), "bool": pa.int64(), "real": pa.float64(), "text": pa.string(),
              "date": pa.string(), "blob": pa.binary()}


class NeedsDiagnosis(Exception):
    """A fast read saw a value that may not fit: rerun strictly to find it."""


def sqlite_affinity(declared: str) -> str:
    """SQLite's column affinity for a declared type (its five rules, in order)."""
    upper = (declared or "").upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _kind(dtype: pa.DataType) -> str:
    if pa.types.is_int64(dtype):
        return "int"
    if pa.types.is_float64(dtype):
        return "real"
    if pa.types.is_string(dtype):
        return "text"
    if pa.types.is_binary(dtype):
        return "blob"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_date32(dtype):
        return "date"
    if pa.types.is_timestamp(dtype) or pa.types.is_decimal(dtype):
        return "split"
    raise ValueError(f"no typed read for {dtype}")


def _guaranteed(column: Column, kind: str) -> bool:
    """Whether the affinity alone keeps misfits visible to ADBC's typing (no SQL check needed)."""
    affinity = sqlite_affinity(column.declared_type)
    return (kind, affinity) in (("int", "INTEGER"), ("real", "REAL"), ("text", "TEXT"))


_WITNESS = {"int": "0", "bool": "0", "real": "0.0", "text": "''", "date": "''", "blob": "x''"}


def _parts(x: str, kind: str, strict: bool) -> list[tuple[str, str]]:
    """(expression, witness) of each output column reading stored value ``x``."""
    if kind == "split":
        return [
            (f"CASE WHEN typeof({x}) = 'integer' THEN {x} END", "0"),
            (f"CASE WHEN typeof({x}) = 'real' THEN {x} END", "0.0"),
            (f"CASE WHEN typeof({x}) = 'text' THEN {x} END", "''"),
        ]
    if not strict:
        return [(x, _WITNESS[kind])]
    if kind in ("int", "bool"):
        return [(f"CAST({x} AS INTEGER)", "0")]
    if kind == "real":
        return [(f"CAST({x} AS REAL)", "0.0")]
    if kind in ("text", "date"):
        return [(f"CASE WHEN typeof({x}) = 'text' THEN {x} END", "''")]
    return [(f"CASE WHEN typeof({x}) = 'blob' THEN {x} END", "x''")]


def _misfit(x: str, kind: str, key: bool) -> str:
    """SQL that is true when stored value ``x`` does not fit its declared kind."""
    check = {
        "int": f"typeof({x}) NOT IN ('integer', 'null')",
        "real": f"typeof({x}) NOT IN ('real', 'integer', 'null') OR (typeof({x}) = 'integer' "
        f"AND ({x} > {_MAX_EXACT} OR {x} < -{_MAX_EXACT}))",
        "text": f"typeof({x}) NOT IN ('text', 'null')",
        "blob": f"typeof({x}) NOT IN ('blob', 'null')",
        "bool": f"typeof({x}) NOT IN ('integer', 'null') OR {x} NOT IN (0, 1)",
        "date": f"typeof({x}) NOT IN ('text', 'null') OR (typeof({x}) = 'text' AND length({x}) <> 10)",
        "split": f"typeof({x}) = 'blob'",
    }[kind]
    return f"({check}) OR {x} IS NULL" if key else check


@dataclass(frozen=True)
class TypedSelect:
    """A typed read of a table's columns (stored values ``exprs``) after ``leading`` columns."""

    spec: TableSpec
    exprs: tuple[str, ...]
    leading: int
    strict: bool

    @property
    def reports(self) -> bool:
        """Whether the read ends with a misfit-report column (strict, or a column its affinity does not guard)."""
        return self.strict or not all(_guaranteed(c, _kind(c.arrow_type)) for c in self.spec.columns)

    def _widths(self) -> list[int]:
        return [3 if _kind(c.arrow_type) == "split" else 1 for c in self.spec.columns]

    def select_list(self) -> tuple[list[str], list[str]]:
        """(row expressions, witness expressions) for the user columns and the misfit report."""
        exprs, witnesses, misfits = [], [], []
        for index, (column, x) in enumerate(zip(self.spec.columns, self.exprs, strict=True)):
            kind = _kind(column.arrow_type)
            for expr, witness in _parts(x, kind, self.strict):
                exprs.append(expr)
                witnesses.append(witness)
            if self.strict or not _guaranteed(column, kind):
                misfits.append((index, _misfit(x, kind, self.strict and column.name in self.spec.primary_key), x))
        if self.strict:
            report = " ".join(
                f"WHEN {m} THEN '{i}:' || typeof({x}) || ':' || coalesce(quote({x}), 'NULL')" for i, m, x in misfits
            )
        else:
            report = " ".join(f"WHEN {m} THEN '{i}'" for i, m, _ in misfits)
        if self.reports:
            exprs.append(f"CASE {report} END")
            witnesses.append("''")
        return exprs, witnesses

    def raw_parts(self, batch: pa.RecordBatch, name: str) -> list[pa.Array]:
        """The raw output columns column ``name`` is read into (one, or three for a split read)."""
        pos = self.leading
        for column, width in zip(self.spec.columns, self._widths(), strict=True):
            if column.name == name:
                return [batch.column(pos + k) for k in range(width)]
            pos += width
        raise KeyError(name)

    def raw_value(self, batch: pa.RecordBatch, name: str, row: int) -> Any:
        """Column ``name``'s value at ``row`` of a raw batch, as stored (for error messages and cursors)."""
        values = [part[row].as_py() for part in self.raw_parts(batch, name)]
        return next((v for v in values if v is not None), None)


def snapshot_sql(
    spec: TableSpec, *, strict: bool = False, extra: Sequence[tuple[str, str]] = ()
) -> tuple[str, TypedSelect]:
    """A typed read of every row of ``spec``'s table.

    ``extra`` adds ``(expression, witness)`` columns before the user columns
    (say, a flag computed per row).
    """
    typed = TypedSelect(spec, tuple(quote_ident(c.name) for c in spec.columns), leading=len(extra), strict=strict)
    exprs, witnesses = typed.select_list()
    extra_exprs = "".join(f"{expr}, " for expr, _ in extra)
    extra_witnesses = "".join(f"{witness}, " for _, witness in extra)
    sql = (
        f"SELECT {extra_witnesses}{', '.join(witnesses)} UNION ALL "
        f"SELECT {extra_exprs}{', '.join(exprs)} FROM {quote_ident(spec.name)}"
    )
    return sql, typed


def log_sql(spec: TableSpec, log_table: str, *, strict: bool = False) -> tuple[str, TypedSelect]:
    """A typed read of ``spec``'s events in the CDC log (params: table, after, through)."""
    typed = TypedSelect(spec, tuple(f"c{i}" for i in range(len(spec.columns))), leading=3, strict=strict)
    exprs, witnesses = typed.select_list()
    sql = (
        f"SELECT -1, '', 0, {', '.join(witnesses)} UNION ALL "
        f"SELECT seq, op, {TS_MICROS}, {', '.join(exprs)} FROM {log_table} {LOG_WHERE}"
    )
    return sql, typed


@dataclass
class Misfit:
    """The first value of a batch that does not fit its declared type."""

    row: int
    column: str
    value: str
    storage: str


def after_witness(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches of a typed read without its witness row (the stream's first row); empty ones skipped."""
    seen_witness = False
    for batch in batches:
        if not seen_witness and batch.num_rows:
            batch, seen_witness = batch.slice(1), True
        if batch.num_rows:
            yield batch


def convert(typed: TypedSelect, batch: pa.RecordBatch) -> tuple[list[pa.Array], Misfit | None]:
    """The declared-type arrays of ``batch`` (witness rows removed), or the first misfit.

    A fast read raises :class:`NeedsDiagnosis` instead of naming a misfit: rerun strictly.
    """
    names = typed.spec.column_names
    report = batch.column(batch.num_columns - 1) if typed.reports else None
    if report is not None and report.null_count != len(report):
        if not typed.strict:
            raise NeedsDiagnosis
        row = pc.index(pc.is_valid(report), True).as_py()
        index, storage, value = str(report[row].as_py()).split(":", 2)
        return [], Misfit(row, names[int(index)], value, storage)
    arrays: list[pa.Array] = []
    pos = typed.leading
    for column in typed.spec.columns:
        kind = _kind(column.arrow_type)
        try:
            if kind == "split":
                array = _split([batch.column(pos + k) for k in range(3)], column.arrow_type)
                pos += 3
            else:
                array = _single(batch.column(pos), kind, typed.strict)
                pos += 1
        except ValueMismatch as bad:
            if not typed.strict:
                raise NeedsDiagnosis from None
            return [], Misfit(bad.index, column.name, repr(bad.value), bad.reason)
        if array.null_count and column.name in typed.spec.primary_key:
            if not typed.strict:
                raise NeedsDiagnosis
            row = pc.index(pc.is_null(array), True).as_py()
            return [], Misfit(row, column.name, "NULL", "null")
        arrays.append(array)
    return arrays, None


def _single(raw: pa.Array, kind: str, strict: bool) -> pa.Array:
    expected = _RAW_TYPES[kind]
    if raw.type != expected:
        if not strict and kind == "real" and raw.type == pa.int64():
            raw = raw.cast(pa.float64())  # a NUMERIC column of integers; >2**53 is checked in SQL
        elif not strict or not pa.types.is_null(raw.type):
            raise ValueMismatch(0, None, f"read as {raw.type}")
        else:
            raw = pa.nulls(len(raw), expected)
    if kind == "bool":
        return raw.cast(pa.bool_())
    if kind == "date":
        try:
            return raw.cast(pa.date32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return to_arrow(raw.to_pylist(), pa.date32())  # raises ValueMismatch at the bad row
    return raw


def _split(parts: list[pa.Array], dtype: pa.DataType) -> pa.Array:
    ints, reals, texts = parts
    if pa.types.is_decimal(dtype):
        return to_arrow(_merge_py(ints, reals, texts), dtype)
    micros = [
        pc.multiply_checked(ints.cast(pa.int64()), 1_000_000) if ints.null_count != len(ints) else None,
        pc.round(pc.multiply(reals.cast(pa.float64()), 1e6)).cast(pa.int64()) if reals.null_count != len(reals) else None,
        _parse_texts(texts) if texts.null_count != len(texts) else None,
    ]
    present = [m for m in micros if m is not None]
    if not present:
        return pa.nulls(len(ints), TIMESTAMP_TYPE)
    combined = pc.coalesce(*present) if len(present) > 1 else present[0]
    out_of_range = pc.or_(pc.less(combined, _MIN_US), pc.greater(combined, _MAX_US))
    if pc.any(out_of_range).as_py():
        row = pc.index(out_of_range, True).as_py()
        raise ValueMismatch(row, _merge_py(ints, reals, texts)[row], "timestamp out of range (years 1-9999)")
    return combined.cast(TIMESTAMP_TYPE)


def _merge_py(ints: pa.Array, reals: pa.Array, texts: pa.Array) -> list[Any]:
    return [i if i is not None else r if r is not None else t
            for i, r, t in zip(ints.to_pylist(), reals.to_pylist(), texts.to_pylist(), strict=True)]


def _parse_texts(texts: pa.Array) -> pa.Array:
    """ISO 8601 text to UTC micros: the formats both parsers agree on vectorised, the rest one by one."""
    texts = texts.cast(pa.string())
    naive = pc.match_substring_regex(texts, _NAIVE)
    aware = pc.match_substring_regex(texts, _AWARE)
    out = pa.nulls(len(texts), pa.int64())
    try:
        if pc.any(naive).as_py():
            out = pc.coalesce(out, pc.if_else(naive, texts, None).cast(pa.timestamp("us")).cast(pa.int64()))
        if pc.any(aware).as_py():
            out = pc.coalesce(out, pc.if_else(aware, texts, None).cast(TIMESTAMP_TYPE).cast(pa.int64()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out = pa.nulls(len(texts), pa.int64())
        naive = aware = pa.array([False] * len(texts))
    rest = pc.and_(pc.is_valid(texts), pc.invert(pc.or_(naive, aware)))
    if pc.any(rest).as_py():
        values = out.to_pylist()
        for i, (todo, text) in enumerate(zip(rest.to_pylist(), texts.to_pylist(), strict=True)):
            if todo:
                try:
                    values[i] = timestamp_micros(text)
                except (ValueError, OverflowError):
                    raise ValueMismatch(i, text, "expected an ISO 8601 timestamp or Unix epoch seconds") from None
        out = pa.array(values, pa.int64())
    return out
