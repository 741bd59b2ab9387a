"""The diff that turns the lake's rows into SQLite's: one event per key that differs, values compared by bits."""

from __future__ import annotations

import struct

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from rhei_lake.catalog import OP, Column, TableSpec
from rhei_lake.sync.row_diff import diff_rows

SPEC = TableSpec(
    "t",
    (
        Column("k", "INTEGER", pa.int64()),
        Column("s", "TEXT", pa.string()),
        Column("f", "REAL", pa.float64()),
        Column("b", "BLOB", pa.binary()),
    ),
    ("k",),
)

values = st.tuples(
    st.none() | st.text(max_size=3),
    st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0]),
    st.none() | st.binary(max_size=2),
)
tables = st.dictionaries(st.integers(0, 30), values, max_size=25)


def _table(rows: dict[int, tuple]) -> pa.Table:
    keys = sorted(rows)
    columns = [keys, *([rows[k][i] for k in keys] for i in range(3))]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, SPEC.schema)], schema=SPEC.schema)


def _bits(row: tuple) -> tuple:
    return tuple(struct.pack("<d", v) if isinstance(v, float) else v for v in row)


@settings(max_examples=150, deadline=None)
@given(lake=tables, source=tables)
def test_applying_the_diff_to_the_lake_gives_the_source_with_one_event_per_differing_key(lake, source):
    events = diff_rows(SPEC, _table(lake), _table(source))
    applied = dict(lake)
    ops = {}
    for event in events.to_pylist():
        key = event["k"]
        assert key not in ops, "two events for one key"
        ops[key] = event[OP]
        row = (event["s"], event["f"], event["b"])
        if event[OP] == "D":
            assert key in lake and key not in source and _bits(row) == _bits(lake[key])  # the lake's last image
            del applied[key]
        else:
            assert (event[OP] == "I") == (key not in lake)
            applied[key] = row
    assert {k: _bits(v) for k, v in applied.items()} == {k: _bits(v) for k, v in source.items()}
    unchanged = [k for k in source if k in lake and _bits(source[k]) == _bits(lake[k])]
    assert not [k for k in unchanged if k in ops], "an unchanged row got an event"


def test_a_lake_without_a_column_reads_null_there():
    lake = _table({1: ("a", None, None)}).drop_columns(["b"])
    events = diff_rows(SPEC, lake, _table({1: ("a", None, b"x"), 2: (None, None, None)}))
    assert events.to_pylist() == [
        {"k": 1, "s": "a", "f": None, "b": b"x", OP: "U"},
        {"k": 2, "s": None, "f": None, "b": None, OP: "I"},
    ]
