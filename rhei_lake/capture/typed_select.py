"""Typed SELECTs for the columnar reader, and their conversion to declared Arrow types.

ADBC infers a column's Arrow type from the first batch, widens mixed storage
classes inside a batch (an INTEGER column holding ``'abc'`` comes back as
strings) and fails across batches. Two read modes make it exact:

* **fast**: the stored values as they are, led by a *witness* row of typed
  non-NULL values so inference is right even for columns that start NULL. A
  column whose SQLite affinity already guarantees its storage class (INTEGER
  → integers, REAL → reals) needs no check in SQL: a misfit shows up as a wrong
  Arrow type or an error, and the read is *diagnosed*. (A TEXT column may hold a
  blob, which ADBC reads past the first batch as a string of its bytes: checked.)
  Other columns carry a SQL check that stops the read with an error naming
  :data:`MISFIT_MARKER` (:func:`is_misfit_error`) at the first value that may
  not fit. In the column's own expression, not a trailing report column: on a
  narrow table ADBC spends about as long on one more column as on the rest of
  the row's SQL (1M rows of ``id, name, amount, qty``: ~0.46 s of CPU with the
  report column, ~0.35 s with the checks inline, ~0.33 s with none).
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
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake._shared.identifiers import quote_literal
from rhei_lake.capture.sqlite_schema import column_of, quote_ident
from rhei_lake.capture.triggers import TS_MICROS
from rhei_lake.capture.types import (
    NUMBER_PATTERN,
    InvalidText,
    ValueMismatch,
    column_affinity,
    decode_text,
    key_misfit,
    real_text,
    timestamp_micros,
    to_arrow,
)
from rhei_lake.catalog import TIMESTAMP_TYPE, TableSpec


_MAX_EXACT = 9007199254740992
_MIN_US = -62_135_596_800_000_000
_MAX_US = 253_402_300_799_999_999
_NAIVE = r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?$"
_AWARE = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"
_RAW_TYPES = {
    "int": pa.int64(),
    "bool": pa.int64(),
    "real": pa.float64(),
    "text": pa.string(),
    "date": pa.string(),
    "blob": pa.binary(),
}


class NeedsDiagnosis(Exception):
    """A fast read saw a value that may not fit: rerun strictly to find it."""


MISFIT_MARKER = "rhei_lake misfit"
# An invalid JSON path fails the statement with an error quoting it ("bad JSON path:
# 'rhei_lake misfit'"); SQLite evaluates it only in the CASE branch taken, so only at a misfit.
_STOP_AT_MISFIT = f"json_extract('{{}}', '{MISFIT_MARKER}')"


def is_misfit_error(exc: BaseException) -> bool:
    """Whether a reader error means a fast typed read met a value that may not fit its declared type.

    Either the read's own check stopped it, or ADBC met another storage class in a
    later batch than the one it typed the column by.
    """
    text = str(exc)
    return MISFIT_MARKER in text or "type mismatch" in text.lower()


def _kind(dtype: pa.DataType, affinity: str | None) -> str:
    if pa.types.is_int64(dtype):
        return "int"
    if pa.types.is_float64(dtype):
        return "real"
    if pa.types.is_string(dtype):
        # Under any affinity but TEXT a text column may also hold numbers, kept as their text.
        return "text" if affinity in ("TEXT", None) else "split"
    if pa.types.is_binary(dtype):
        return "blob"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_date32(dtype):
        return "date"
    if pa.types.is_timestamp(dtype) or pa.types.is_decimal(dtype):
        return "split"
    raise ValueError(f"no typed read for {dtype}")


def _guaranteed(affinity: str | None, kind: str) -> bool:
    """Whether the affinity alone keeps misfits visible to ADBC's typing (no SQL check needed)."""
    # Not TEXT: past the first batch ADBC reads a BLOB in a string column as its bytes, silently.
    return (kind, affinity) in (("int", "INTEGER"), ("real", "REAL"))


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


# Storage classes by comparison, not typeof(): SQLite orders NULL < numbers < text < blobs, and a
# comparison is a VDBE opcode where typeof() is a function call and NOT IN a list lookup (1M narrow
# rows: checking one TEXT column cost the reader ~0.07 s of CPU with typeof(), ~0.02 s so). The
# unary + takes the column's affinity off (a TEXT one would turn a stored number into text before
# comparing); COLLATE BINARY keeps a declared collation (maybe one only the application
# registers) from deciding a comparison with the empty text.
_NUMBER = "+{x} < '' COLLATE BINARY"  # an integer or a real
_BLOB = "+{x} >= x'' COLLATE BINARY"
_NOT_BLOB = "+{x} < x'' COLLATE BINARY"  # a number or text


def _misfit(x: str, kind: str, *, null_key: bool, canonical_key: str | None) -> str:
    """SQL that is true when stored value ``x`` does not fit its declared kind.

    ``null_key``: a NULL misfits too. ``canonical_key``: the column is a key of
    this affinity, and a value that is not its lake value's canonical form
    (:func:`~rhei_lake.capture.types.key_misfit`) misfits; checked here only
    where the read itself cannot tell (a REAL column's integers and reals).
    """
    check = {
        "int": f"typeof({x}) NOT IN ('integer', 'null')",
        "real": f"typeof({x}) NOT IN ('real', 'integer', 'null') OR (typeof({x}) = 'integer' "
        f"AND ({x} > {_MAX_EXACT} OR {x} < -{_MAX_EXACT}))",
        "text": f"{_NUMBER.format(x=x)} OR {_BLOB.format(x=x)}",
        "blob": _NOT_BLOB.format(x=x),
        "bool": f"typeof({x}) NOT IN ('integer', 'null') OR {x} NOT IN (0, 1)",
        "date": f"{_NUMBER.format(x=x)} OR {_BLOB.format(x=x)} OR length({x}) <> 10",
        "split": _BLOB.format(x=x),
    }[kind]
    if kind == "real" and canonical_key in ("NUMERIC", "INTEGER"):
        # SQLite stores a whole REAL there as an INTEGER: one that stayed REAL is another spelling
        check += f" OR (typeof({x}) = 'real' AND {x} = CAST({x} AS INTEGER) AND {x} > -9223372036854775808.0)"
    elif kind == "real" and canonical_key in ("TEXT", "BLOB"):
        check += f" OR typeof({x}) = 'integer'"
    return f"({check}) OR {x} IS NULL" if null_key else check


@dataclass(frozen=True)
class TypedSelect:
    """A typed read of a table's columns (stored values ``exprs``) after ``leading`` columns."""

    spec: TableSpec
    exprs: tuple[str, ...]
    leading: int
    strict: bool

    @cached_property
    def kinds(self) -> tuple[tuple[str, str | None], ...]:
        """``(kind, affinity)`` of each user column."""
        return tuple(
            (_kind(c.arrow_type, affinity), affinity)
            for c, affinity in ((c, column_affinity(self.spec, c)) for c in self.spec.columns)
        )

    @property
    def reports(self) -> bool:
        """Whether the read ends with a misfit-report column (strict reads only: a fast one stops at a misfit)."""
        return self.strict

    @property
    def checks(self) -> bool:
        """Whether the read checks a value in SQL (strict, or a column its affinity does not guard)."""
        return self.strict or not all(_guaranteed(affinity, kind) for kind, affinity in self.kinds)

    def _widths(self) -> list[int]:
        return [3 if kind == "split" else 1 for kind, _ in self.kinds]

    def select_list(self) -> tuple[list[str], list[str]]:
        """(row expressions, witness expressions) for the user columns and, strict, the misfit report."""
        exprs, witnesses, misfits = [], [], []
        for index, (column, x) in enumerate(zip(self.spec.columns, self.exprs, strict=True)):
            kind, affinity = self.kinds[index]
            key = column.name in self.spec.primary_key
            check = None
            if self.strict or not _guaranteed(affinity, kind):
                check = _misfit(x, kind, null_key=self.strict and key, canonical_key=affinity if key else None)
                misfits.append((index, check, x))
            for part, (expr, witness) in enumerate(_parts(x, kind, self.strict)):
                if check is not None and not self.strict and part == 0:
                    expr = f"CASE WHEN {check} THEN {_STOP_AT_MISFIT} ELSE {expr} END"
                exprs.append(expr)
                witnesses.append(witness)
        if self.reports:
            report = " ".join(
                f"WHEN {m} THEN '{i}:' || typeof({x}) || ':' || coalesce(quote({x}), 'NULL')" for i, m, x in misfits
            )
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
    table = quote_ident(spec.name)
    columns = tuple(column_of(spec.name, c.name) for c in spec.columns)
    typed = TypedSelect(spec, columns, leading=len(extra), strict=strict)
    exprs, witnesses = typed.select_list()
    extra_exprs = "".join(f"{expr}, " for expr, _ in extra)
    extra_witnesses = "".join(f"{witness}, " for _, witness in extra)
    sql = (
        f"SELECT {extra_witnesses}{', '.join(witnesses)} UNION ALL SELECT {extra_exprs}{', '.join(exprs)} FROM {table}"
    )
    return sql, typed


def log_sql(
    spec: TableSpec, log_table: str, after: int, through: int, *, strict: bool = False
) -> tuple[str, TypedSelect]:
    """A typed read of ``spec``'s events in the CDC log with sequence numbers in ``(after, through]``."""
    typed = TypedSelect(spec, tuple(f"c{i}" for i in range(len(spec.columns))), leading=3, strict=strict)
    exprs, witnesses = typed.select_list()
    where = f"WHERE tbl = {quote_literal(spec.name)} AND seq > {int(after)} AND seq <= {int(through)} AND op <> 'S'"
    sql = (
        f"SELECT -1, '', 0, {', '.join(witnesses)} UNION ALL "
        f"SELECT seq, op, {TS_MICROS}, {', '.join(exprs)} FROM {log_table} {where} ORDER BY 1"
    )
    return sql, typed


@dataclass
class Misfit:
    """The first value of a batch that does not fit its declared type (or, in a key, is not canonical)."""

    row: int
    column: str
    value: Any  # as stored


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
    (Its SQL checks stop the read itself: see :func:`is_misfit_error`.)
    """
    names = typed.spec.column_names
    report = batch.column(batch.num_columns - 1) if typed.reports else None
    if report is not None and report.null_count != len(report):
        row = pc.index(pc.is_valid(report), True).as_py()
        index, storage, quoted = report.cast(pa.binary())[row].as_py().split(b":", 2)  # text may not be UTF-8
        return [], Misfit(row, names[int(index)], unquote(storage.decode(), quoted))
    arrays: list[pa.Array] = []
    pos = typed.leading
    for column, (kind, affinity) in zip(typed.spec.columns, typed.kinds, strict=True):
        width = 3 if kind == "split" else 1
        parts = [batch.column(pos + k) for k in range(width)]
        pos += width
        try:
            array = _split(parts, column.arrow_type) if kind == "split" else _single(parts[0], kind, typed.strict)
        except ValueMismatch as bad:
            if not typed.strict:
                raise NeedsDiagnosis from None
            return [], Misfit(bad.index, column.name, bad.value)
        if column.name in typed.spec.primary_key:
            if array.null_count:
                if not typed.strict:
                    raise NeedsDiagnosis
                row = pc.index(pc.is_null(array), True).as_py()
                return [], Misfit(row, column.name, None)
            row = _key_misfit(parts, kind, array, column.arrow_type, affinity)
            if row is not None:
                if not typed.strict:
                    raise NeedsDiagnosis
                return [], Misfit(row, column.name, _merged_value(parts, row))
        arrays.append(array)
    return arrays, None


def unquote(storage: str, quoted: bytes) -> Any:
    """The stored value SQLite's ``quote()`` printed (a REAL's 20 digits read back as the same double)."""
    if storage == "null":
        return None
    if storage == "integer":
        return int(quoted)
    if storage == "real":
        return float(quoted)
    if storage == "blob":
        return bytes.fromhex(quoted[2:-1].decode())
    return decode_text(quoted[1:-1].replace(b"''", b"'"))


def _merged_value(parts: list[pa.Array], row: int) -> Any:
    return next((v for v in (part[row].as_py() for part in parts) if v is not None), None)


_TEXT_NUMBER = "^" + NUMBER_PATTERN + "$"


def _key_misfit(
    parts: list[pa.Array], kind: str, array: pa.Array, dtype: pa.DataType, affinity: str | None
) -> int | None:
    """:func:`~rhei_lake.capture.types.key_misfit` of a key column's raw parts, vectorised where it can be."""
    if kind != "split":
        return None  # single reads: checked in SQL where needed (see _misfit)
    ints, reals, texts = parts
    if pa.types.is_string(dtype) and affinity in ("NUMERIC", "INTEGER") and reals.null_count == len(reals):
        # integers are canonical here; text is, unless it reads as a number (SQLite would have stored that)
        numeric = pc.match_substring_regex(texts.cast(pa.string()), _TEXT_NUMBER)
        if not pc.any(numeric).as_py():
            return None
    elif pa.types.is_timestamp(dtype) and ints.null_count == len(ints) and reals.null_count == len(reals):
        if pc.all(pc.equal(texts.cast(pa.string()), _timestamp_texts(array))).as_py():
            return None
    return key_misfit(_merge_py(ints, reals, texts), array, dtype, affinity)


def _timestamp_texts(array: pa.Array) -> pa.Array:
    """:func:`~rhei_lake.capture.types.timestamp_text` of each instant, in Arrow."""
    texts = pc.strftime(array, format="%Y-%m-%d %H:%M:%S")  # microseconds: always ".ffffff"
    return pc.if_else(pc.ends_with(texts, ".000000"), pc.utf8_slice_codeunits(texts, 0, 19), texts)


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
    if kind in ("text", "date"):
        _check_utf8(raw)
    if kind == "date":
        try:
            return raw.cast(pa.date32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return to_arrow(raw.to_pylist(), pa.date32())  # raises ValueMismatch at the bad row
    return raw


def _check_utf8(texts: pa.Array) -> None:
    """ADBC hands over SQLite text as it is stored, which need not be UTF-8: refuse such a value."""
    try:
        texts.validate(full=True)
    except pa.ArrowInvalid:
        for i, raw in enumerate(texts.cast(pa.binary()).to_pylist()):
            if raw is not None:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueMismatch(i, InvalidText(raw), "not valid UTF-8") from None
        raise


def _split(parts: list[pa.Array], dtype: pa.DataType) -> pa.Array:
    ints, reals, texts = parts
    _check_utf8(texts)
    if pa.types.is_decimal(dtype):
        return to_arrow(_merge_py(ints, reals, texts), dtype)
    if pa.types.is_string(dtype):
        return _split_text(ints, reals, texts)
    return _split_timestamps(ints, reals, texts)


def _split_timestamps(ints: pa.Array, reals: pa.Array, texts: pa.Array) -> pa.Array:
    """UTC micros of integer and real epoch seconds and of date/time text, as ``to_arrow`` reads them."""
    present, bad = [], []
    if ints.null_count != len(ints):
        ints = ints.cast(pa.int64())
        ok = pc.and_(pc.greater_equal(ints, _MIN_US // 1_000_000), pc.less_equal(ints, _MAX_US // 1_000_000))
        bad.append(pc.invert(pc.fill_null(ok, True)))
        present.append(pc.multiply(pc.if_else(ok, ints, None), 1_000_000))
    if reals.null_count != len(reals):
        scaled = pc.round(pc.multiply(reals.cast(pa.float64()), 1e6))  # as Python's round(r * 1e6): half to even
        ok = pc.and_(pc.greater(scaled, -9.2e18), pc.less(scaled, 9.2e18))  # false for inf; NaN is never stored
        bad.append(pc.invert(pc.fill_null(ok, True)))
        present.append(pc.if_else(ok, scaled, None).cast(pa.int64()))
    if texts.null_count != len(texts):
        micros, unreadable = _parse_texts(texts)
        bad.append(unreadable)
        present.append(micros)
    if not present:
        return pa.nulls(len(ints), TIMESTAMP_TYPE)
    combined = pc.coalesce(*present) if len(present) > 1 else present[0]
    out_of_range = pc.or_(pc.less(combined, _MIN_US), pc.greater(combined, _MAX_US))
    bad.append(pc.fill_null(out_of_range, False))
    any_bad = bad[0]
    for mask in bad[1:]:
        any_bad = pc.or_(any_bad, mask)
    if pc.any(any_bad).as_py():
        row = pc.index(any_bad, True).as_py()
        raise ValueMismatch(row, _merge_py(ints, reals, texts)[row], "expected date/time text or Unix epoch seconds")
    return combined.cast(TIMESTAMP_TYPE)


def _split_text(ints: pa.Array, reals: pa.Array, texts: pa.Array) -> pa.Array:
    """Text as stored; integers and reals as their text (:func:`~rhei_lake.capture.types.to_arrow`'s rules)."""
    present = [texts.cast(pa.string())] if texts.null_count != len(texts) else []
    if ints.null_count != len(ints):
        present.append(ints.cast(pa.int64()).cast(pa.string()))
    if reals.null_count != len(reals):
        present.append(pa.array([None if r is None else real_text(r) for r in reals.to_pylist()], pa.string()))
    if not present:
        return pa.nulls(len(ints), pa.string())
    return pc.coalesce(*present) if len(present) > 1 else present[0]


def _merge_py(ints: pa.Array, reals: pa.Array, texts: pa.Array) -> list[Any]:
    return [
        i if i is not None else r if r is not None else t
        for i, r, t in zip(ints.to_pylist(), reals.to_pylist(), texts.to_pylist(), strict=True)
    ]


def _parse_texts(texts: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Date/time text to UTC micros, and which texts are not readable (or out of range).

    The forms both parsers agree on are read in Arrow, the rest one by one by
    :func:`~rhei_lake.capture.types.timestamp_micros`.
    """
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
    unreadable = [False] * len(texts)
    if pc.any(rest).as_py():
        values = out.to_pylist()
        for i, (todo, text) in enumerate(zip(rest.to_pylist(), texts.to_pylist(), strict=True)):
            if todo:
                try:
                    micros = timestamp_micros(text)
                except (ValueError, OverflowError):
                    micros = None
                if micros is None or not _MIN_US <= micros <= _MAX_US:
                    unreadable[i] = True
                    micros = None
                values[i] = micros
        out = pa.array(values, pa.int64())
    return out, pa.array(unreadable, pa.bool_())
