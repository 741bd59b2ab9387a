"""Declared types map to Arrow types; values convert exactly or are reported."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from rhei_lake.capture.types import ValueMismatch, arrow_type_for, to_arrow
from rhei_lake.errors import SchemaError


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("INTEGER", pa.int64()),
        ("bigint", pa.int64()),
        ("UNSIGNED BIG INT", pa.int64()),
        ("REAL", pa.float64()),
        ("DOUBLE PRECISION", pa.float64()),
        ("FLOAT", pa.float64()),
        ("TEXT", pa.string()),
        ("VARCHAR(255)", pa.string()),
        ("NCHAR(5)", pa.string()),
        ("CLOB", pa.string()),
        ("JSON", pa.string()),
        ("UUID", pa.string()),
        ("BLOB", pa.binary()),
        ("BOOLEAN", pa.bool_()),
        ("bool", pa.bool_()),
        ("DATE", pa.date32()),
        ("DATETIME", pa.timestamp("us", tz="UTC")),
        ("TIMESTAMP", pa.timestamp("us", tz="UTC")),
        ("timestamp with time zone", pa.timestamp("us", tz="UTC")),
        ("TIME", pa.string()),
        ("DECIMAL(10,2)", pa.decimal128(10, 2)),
        ("NUMERIC(5)", pa.decimal128(5, 0)),
        ("NUMERIC", pa.float64()),
        ("MONEY", pa.float64()),
    ],
)
def test_declared_type_mapping(declared, expected):
    assert arrow_type_for(declared) == expected


def test_untyped_and_bad_decimal_columns_are_refused():
    with pytest.raises(SchemaError, match="declares no type"):
        arrow_type_for("", table="t", column="c")
    with pytest.raises(SchemaError, match="precision"):
        arrow_type_for("DECIMAL(50, 2)")


def test_exact_conversions():
    assert to_arrow([1, None, -(2**63)], pa.int64()).to_pylist() == [1, None, -(2**63)]
    doubles = [0.1 + 0.2, 1e-310, -0.0, float("inf"), 3]
    assert to_arrow(doubles, pa.float64()).to_pylist() == [0.1 + 0.2, 1e-310, -0.0, float("inf"), 3.0]
    assert to_arrow(["a", None, "漢"], pa.string()).to_pylist() == ["a", None, "漢"]
    assert to_arrow([b"\x00\xff", None], pa.binary()).to_pylist() == [b"\x00\xff", None]
    assert to_arrow([0, 1, None], pa.bool_()).to_pylist() == [False, True, None]
    assert to_arrow(["2026-11-23"], pa.date32()).to_pylist() == [date(2026, 11, 23)]
    assert to_arrow([1.5, "2.25", 3], pa.decimal128(6, 2)).to_pylist() == [
        Decimal("1.50"),
        Decimal("2.25"),
        Decimal("3.00"),
    ]
    ts = to_arrow(
        ["2026-11-23 10:00:00", "2026-11-23T10:00:00.5Z", "2026-11-23T12:00:00+02:00", 0, 1.25, None],
        pa.timestamp("us", tz="UTC"),
    ).to_pylist()
    assert ts == [
        datetime(2026, 11, 23, 10, tzinfo=UTC),
        datetime(2026, 11, 23, 10, 0, 0, 500000, tzinfo=UTC),
        datetime(2026, 11, 23, 10, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 0, 1, 250000, tzinfo=UTC),
        None,
    ]


@pytest.mark.parametrize(
    ("values", "dtype", "index"),
    [
        ([1, 2.5], pa.int64(), 1),  # pyarrow alone would truncate 2.5 to 2
        ([1, "abc"], pa.int64(), 1),
        ([b"x"], pa.int64(), 0),
        ([1.0, "1.5"], pa.float64(), 1),
        ([2**53 + 1], pa.float64(), 0),
        (["a", b"5"], pa.string(), 1),
        (["a", b"\xff"], pa.string(), 1),
        ([b"a", "text"], pa.binary(), 1),
        ([0, 2], pa.bool_(), 1),
        (["yes"], pa.bool_(), 0),
        (["2026-11-23 10:00"], pa.date32(), 0),
        (["soon"], pa.timestamp("us", tz="UTC"), 0),
        ([1e300], pa.timestamp("us", tz="UTC"), 0),
        (["12.345"], pa.decimal128(5, 2), 0),
        ([float("inf")], pa.decimal128(5, 2), 0),
    ],
)
def test_mismatches_name_the_first_bad_value(values, dtype, index):
    with pytest.raises(ValueMismatch) as info:
        to_arrow(values, dtype)
    assert info.value.index == index
