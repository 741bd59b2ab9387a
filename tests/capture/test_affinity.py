"""Declared types against what SQLite really stores (item 7) and keys that stay distinct (item 5).

Every value goes through a real SQLite column first, so the tests see what
affinity made of it ('42' in a JSON column is the integer 42). The expected
lake value of each stored value is written out here from the rules in the
README, independently of the converter.
"""

from __future__ import annotations

import os
import re
import sqlite3
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import rhei_lake
from rhei_lake.capture.events import convert_columns
from rhei_lake.capture.reader_process import ReaderProcess, fast_reader_available
from rhei_lake.capture.sqlite_schema import read_table_spec
from rhei_lake.capture.typed_select import NeedsDiagnosis, after_witness, convert, is_misfit_error, snapshot_sql
from rhei_lake.capture.types import (
    ValueMismatch,
    arrow_type_for,
    canonical_stored,
    decode_text,
    key_misfit,
    same_stored,
    sqlite_affinity,
    to_arrow,
    written_value,
)
from rhei_lake.errors import SourceError, TypeMismatchError
from tests.support.sqlite_values import (
    ANY_VALUE,
    KEY_SPELLINGS,
    RawText,
    param,
    placeholder,
    probe_connection,
    store_one,
)

# One declared type (or more) for every row of the table in rhei_lake.capture.types.
DECLARED = [
    "BOOLEAN",
    "BOOL",
    "DATETIME",
    "TIMESTAMP",
    "TIMESTAMPTZ",
    "TIMESTAMP WITH TIME ZONE",
    "DATE",
    "TIME",
    "DECIMAL(10,2)",
    "NUMERIC(5)",
    "NUMERIC(38,10)",
    "DECIMAL(3,3)",
    "INTEGER",
    "BIGINT",
    "UNSIGNED BIG INT",
    "FLOATING POINT",
    "TEXT",
    "VARCHAR(20)",
    "CLOB",
    "NCHAR(5)",
    "JSON",
    "JSONB",
    "UUID",
    "BLOB",
    "BYTEA",
    "REAL",
    "DOUBLE PRECISION",
    "FLOAT",
    "NUMERIC",
    "DECIMAL",
    "MONEY",
    "STRING",
]

_SCALE = int(os.environ.get("RHEI_HYPOTHESIS_SCALE", "1"))  # more examples for a long run
REFUSED = object()
_WIDE = Context(prec=80)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_STAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[T ]([0-9]{2}:[0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?",
    re.ASCII,
)
_NUMBER = re.compile(r"\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOW, _HIGH = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def expected(dtype: pa.DataType, value: Any) -> Any:
    """The lake value the README's rules give a stored value, or REFUSED."""
    kind = type(value)
    if value is None:
        return None
    if pa.types.is_string(dtype):
        if kind is int:
            return str(value)
        if kind is float:
            return repr(value) if abs(value) != float("inf") else ("9.0e+999" if value > 0 else "-9.0e+999")
        return value if kind is str else REFUSED
    if pa.types.is_int64(dtype):
        return value if kind is int else REFUSED
    if pa.types.is_float64(dtype):
        if kind is float or (kind is int and abs(value) <= 2**53):
            return float(value)
        return REFUSED
    if pa.types.is_boolean(dtype):
        return bool(value) if kind is int and value in (0, 1) else REFUSED
    if pa.types.is_binary(dtype):
        return value if kind is bytes else REFUSED
    if pa.types.is_date32(dtype):
        if kind is str and _DATE.fullmatch(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                return REFUSED
        return REFUSED
    if pa.types.is_decimal(dtype):
        return _expected_decimal(dtype, value)
    return _expected_instant(value)


def _expected_decimal(dtype: pa.DataType, value: Any) -> Any:
    if type(value) is int:
        number = Decimal(value)
    elif type(value) is float and abs(value) != float("inf"):
        number = Decimal(repr(value))
    elif type(value) is str and _NUMBER.fullmatch(value):
        number = Decimal(value.strip())
    else:
        return REFUSED
    if abs(number) >= Decimal(10) ** (dtype.precision - dtype.scale):
        return REFUSED
    step = Decimal(1).scaleb(-dtype.scale)
    if number != number.quantize(step, rounding="ROUND_DOWN", context=_WIDE):
        return REFUSED
    return number.quantize(step, context=_WIDE)


def _expected_instant(value: Any) -> Any:
    kind = type(value)
    if kind is str and _NUMBER.fullmatch(value):
        text = value.strip()
        value = int(text) if re.fullmatch(r"[+-]?[0-9]+", text) and abs(int(text)) < 2**63 else float(text)
        if type(value) is float and value.is_integer() and -(2.0**63) < value < 2.0**63:
            value = int(value)
        kind = type(value)
    if kind is int:
        try:
            instant = _EPOCH + timedelta(seconds=value)
        except OverflowError:
            return REFUSED
    elif kind is float:
        if value != value or abs(value) == float("inf") or abs(value) > 1e12:
            return REFUSED
        try:
            instant = _EPOCH + timedelta(microseconds=round(value * 1_000_000))
        except OverflowError:
            return REFUSED
    elif kind is str:
        match = _STAMP.fullmatch(value)
        if match is None:
            return REFUSED
        fraction = match.group(4) or ""
        if fraction[6:].strip("0"):
            return REFUSED
        if len(fraction) > 6:
            value = value.replace("." + fraction, "." + fraction[:6])
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return REFUSED
        instant = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    else:
        return REFUSED
    return instant if _LOW <= instant <= _HIGH else REFUSED


def _convert(dtype: pa.DataType, value: Any) -> Any:
    try:
        return to_arrow([value], dtype)[0].as_py()
    except ValueMismatch:
        return REFUSED


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a.hex() == b.hex()
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("declared", DECLARED)
@settings(max_examples=150 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=ANY_VALUE)
@example(value="42")
@example(value="12345678901234567890123")
@example(value=b"\x00")
@example(value=RawText(b"\xff"))
def test_every_declared_type_holds_what_sqlite_stores_or_refuses_it(declared, value):
    """Item 7: each stored value converts to its documented lake value (which round-trips), or is refused."""
    conn = probe_connection(declared)
    storage, stored = store_one(conn, value)
    dtype = arrow_type_for(declared)
    affinity = sqlite_affinity(declared)
    lake = _convert(dtype, stored)
    want = expected(dtype, stored)
    assert (lake is REFUSED) == (want is REFUSED), (storage, stored, lake, want)
    if lake is REFUSED or stored is None:
        return
    assert _same(lake, want), (storage, stored, lake, want)
    back = canonical_stored(lake, dtype, affinity)
    if pa.types.is_timestamp(dtype):
        assert _expected_instant(back) == lake  # the canonical text names the same instant
    else:
        assert same_stored(back, stored), (stored, lake, back)  # written back, SQLite holds the same value
        assert key_misfit([stored], to_arrow([stored], dtype), dtype, affinity) is None
    # canonical_stored models SQLite's affinity: check it against SQLite itself
    unset = written_value(lake, dtype, affinity)
    again = store_one(conn, unset)[1]
    if isinstance(again, float) and isinstance(back, float) and not same_stored(again, back):
        # SQLite's own text-to-REAL parser is not always correctly rounded (a few ulps at extreme exponents)
        (sqlite_parse,) = conn.execute("SELECT CAST(? AS REAL)", (unset,)).fetchone()
        assert same_stored(again, sqlite_parse) and float(unset) == back
    else:
        assert same_stored(again, back), (unset, again, back)


def test_a_json_column_holds_numbers_as_their_text():
    """Item 7's report: '42' in a JSON column is stored as 42, and the lake shows "42"."""
    conn = probe_connection("JSON")
    assert store_one(conn, "42") == ("integer", 42)
    assert to_arrow([store_one(conn, "42")[1]], pa.string()).to_pylist() == ["42"]
    uuid_like = store_one(conn, "12345678901234567890123")  # SQLite keeps it as a REAL, losing digits
    assert uuid_like == ("real", 1.2345678901234568e22)
    assert to_arrow([uuid_like[1]], pa.string()).to_pylist() == ["1.2345678901234568e+22"]


# -- item 5 ------------------------------------------------------------------

# Key columns: declared types, and declared types read as another type with types=.
KEY_COLUMNS = [
    ("DATETIME", None),
    ("TIMESTAMP", None),
    ("DATE", None),
    ("DECIMAL(10,2)", None),
    ("NUMERIC(38,4)", None),
    ("JSON", None),
    ("UUID", None),
    ("TEXT", None),
    ("NUMERIC", None),
    ("REAL", None),
    ("INTEGER", None),
    ("INT", None),
    ("BOOLEAN", None),
    ("BLOB", None),
    ("TEXT", "DECIMAL(10,2)"),
    ("TEXT", "TIMESTAMP"),
    ("TEXT", "REAL"),
    ("", "TEXT"),
    ("", "REAL"),
    ("", "TIMESTAMP"),
    ("", "DECIMAL(12,4)"),
    ("JSON", "TEXT"),
    ("INTEGER", "TEXT"),
    ("VARCHAR(9)", "DATE"),
]


def _key_table(declared: str, override: str | None, values: list[Any]):
    conn = probe_connection("TEXT")
    conn.execute(f"CREATE TABLE t (k {declared} PRIMARY KEY, n INTEGER)")
    for n, value in enumerate(values):
        if value is not None:
            try:
                conn.execute(f"INSERT OR IGNORE INTO t VALUES ({placeholder(value)}, ?)", (param(value), n))
            except sqlite3.IntegrityError:
                pass  # not an integer, in an INTEGER PRIMARY KEY (the rowid)
    spec = read_table_spec(conn, "t", types={"k": override} if override else None)
    rows = conn.execute("SELECT k, n FROM t").fetchall()
    return conn, spec, rows


def _lake_keys(array: pa.Array) -> list[Any]:
    return [v.hex() if isinstance(v, float) else v for v in array.to_pylist()]


@pytest.mark.parametrize(("declared", "override"), KEY_COLUMNS)
@settings(max_examples=120 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=KEY_SPELLINGS)
def test_distinct_sqlite_keys_stay_distinct_in_the_lake_or_are_refused(declared, override, values):
    """Item 5: two rows SQLite keeps apart never become one lake row."""
    _, spec, rows = _key_table(declared, override, values)
    if not rows:
        return
    try:
        keys = convert_columns(spec, list(zip(*rows)), origin="snapshot")[0]
    except TypeMismatchError as exc:
        assert exc.table == "t" and exc.column in ("k", "n")
        return
    assert len(set(_lake_keys(keys))) == len(rows), (rows, keys)


@pytest.mark.parametrize(
    ("declared", "spellings", "canonical"),
    [
        ("DATETIME", ["2026-01-01 10:00:00", "2026-01-01T10:00:00"], "2026-01-01 10:00:00"),
        ("TIMESTAMP", ["2026-01-01 10:00:00+00:00", "2026-01-01 10:00:00Z"], "2026-01-01 10:00:00"),
        ("TIMESTAMP", [1_767_261_600, "2026-01-01 10:00:00"], "2026-01-01 10:00:00"),
        ("DATETIME", ["2026-01-01 10:00:00.500", "2026-01-01 10:00:00.500000"], "2026-01-01 10:00:00.500000"),
    ],
)
def test_two_spellings_of_one_key_are_refused_naming_the_canonical_one(declared, spellings, canonical):
    _, spec, rows = _key_table(declared, None, spellings)
    assert len(rows) == 2  # SQLite keeps them apart
    with pytest.raises(TypeMismatchError) as info:
        convert_columns(spec, list(zip(*rows)), origin="snapshot")
    assert info.value.column == "k"
    assert repr(canonical) in str(info.value)
    only_canonical = [(canonical, 1)]
    assert convert_columns(spec, list(zip(*only_canonical)), origin="snapshot")[0].to_pylist()


# -- the columnar reader says the same as the row path ------------------------------


@pytest.fixture(scope="module")
def columnar(tmp_path_factory):
    if not fast_reader_available():
        pytest.skip("adbc-driver-sqlite is not installed")
    path = tmp_path_factory.mktemp("columnar") / "t.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.text_factory = decode_text
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    with ReaderProcess(str(path), readonly=True) as reader:
        yield conn, reader
    conn.close()


def _drain(stream) -> None:
    """Read a stream to its end (the reader serves one statement at a time), whatever it says."""
    try:
        for _ in stream:
            pass
    except SourceError:
        pass


def _columnar_arrays(reader: ReaderProcess, spec, batch_rows: int) -> list[pa.Array] | None:
    """The typed reader's arrays of the whole table, or ``None`` when it reports a misfit."""
    for strict in (False, True):
        sql, typed = snapshot_sql(spec, strict=strict)
        parts: list[list[pa.Array]] = []
        try:
            stream = reader.query(sql, batch_rows=batch_rows)  # a fast read may stop at its first batch
        except SourceError as exc:
            assert not strict and is_misfit_error(exc), exc
            continue
        try:
            for raw in after_witness(stream):
                arrays, misfit = convert(typed, raw)
                if misfit is not None:
                    assert strict
                    return None
                parts.append(arrays)
        except (NeedsDiagnosis, SourceError) as exc:
            assert not strict, exc
            continue
        finally:
            _drain(stream)
        if not parts:
            return [pa.array([], c.arrow_type) for c in spec.columns]
        return [pa.concat_arrays([p[i] for p in parts]) for i in range(len(spec.columns))]
    raise AssertionError("the strict read found nothing the fast read stopped at")


def _bits(array: pa.Array) -> list[Any]:
    return [v.hex() if isinstance(v, float) else v for v in array.to_pylist()]


@settings(
    max_examples=60 * _SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    column=st.sampled_from(KEY_COLUMNS + [(d, None) for d in DECLARED]),
    key_values=KEY_SPELLINGS,
    values=st.lists(ANY_VALUE, min_size=1, max_size=6),
    batch_rows=st.sampled_from([1, 2, 64]),
)
def test_the_columnar_reader_converts_and_refuses_as_the_row_path_does(
    columnar, column, key_values, values, batch_rows
):
    """Snapshots and CDC log reads of big tables go through typed SELECTs: same values, same refusals."""
    conn, reader = columnar
    declared, override = column
    conn.execute("DROP TABLE t")
    conn.execute(f"CREATE TABLE t (k {declared} PRIMARY KEY, v {declared})")
    for value, other in zip(key_values, values * len(key_values), strict=False):
        try:
            conn.execute(
                f"INSERT OR IGNORE INTO t VALUES ({placeholder(value)}, {placeholder(other)})",
                (param(value), param(other)),
            )
        except sqlite3.IntegrityError:
            pass
    types = {"k": override, "v": override} if override else None
    spec = read_table_spec(conn, "t", types=types)
    rows = conn.execute("SELECT k, v FROM t").fetchall()
    try:
        expected_arrays = convert_columns(spec, list(zip(*rows)) if rows else [[], []], origin="snapshot")
    except TypeMismatchError:
        expected_arrays = None
    got = _columnar_arrays(reader, spec, batch_rows)
    if expected_arrays is None or got is None:
        assert got is None and expected_arrays is None, (rows, got, expected_arrays)
        return
    assert len(set(_bits(got[0]))) == len(rows)  # distinct SQLite keys stay distinct
    # storage order may differ from the sqlite3 read: compare as sets of rows
    want = sorted(zip(*(_bits(a) for a in expected_arrays)), key=repr)
    have = sorted(zip(*(_bits(a) for a in got)), key=repr)
    assert have == want


@pytest.mark.parametrize("columnar_min_rows", [0, 1])
def test_numbers_in_json_and_uuid_columns_sync_as_their_text(tmp_path, columnar_min_rows):
    """Item 7 end to end: what stalled every table (a JSON '42' stored as 42) mirrors, in snapshots and events."""
    db = tmp_path / "app.db"
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("CREATE TABLE docs (id UUID PRIMARY KEY, body JSON, at DATETIME)")
    app.executemany(
        "INSERT INTO docs VALUES (?, ?, ?)",
        [
            ("123", "42", "2026-01-01 10:00:00"),
            ("a-b", '{"k": 1}', 1_767_261_600),
            ("4.5", "0.30000000000000004", None),
        ],
    )
    with rhei_lake.open(oltp_path=str(db), storage="memory://", columnar_min_rows=columnar_min_rows) as lake:
        lake.register_table("docs")
        app.execute("INSERT INTO docs VALUES ('12345678901234567890123', '-7', '2026-01-01T10:00:00Z')")
        app.execute("UPDATE docs SET body = '1e400' WHERE id = 'a-b'")  # SQLite stores +infinity
        lake.sync_now()
        assert lake.query("SELECT id, body, CAST(at AS BIGINT) AS at FROM docs ORDER BY body").to_pylist() == [
            {"id": "1.2345678901234568e+22", "body": "-7", "at": 1_767_261_600_000_000},
            {"id": "4.5", "body": "0.30000000000000004", "at": None},
            {"id": "123", "body": "42", "at": 1_767_261_600_000_000},
            {"id": "a-b", "body": "9.0e+999", "at": 1_767_261_600_000_000},
        ]
    assert app.execute("SELECT typeof(id), typeof(body) FROM docs WHERE body = 42").fetchone() == ("integer", "integer")
