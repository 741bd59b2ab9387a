"""The reader child's hand-over of Arrow buffers, against SQLite itself (the oracle).

The child walks the arrays ADBC gives it through the C data interface and
writes their buffers; the parent rebuilds the batches from them. Every value
SQLite holds must come back as it is stored: floats by their bits, text and
blobs byte for byte, NULLs where they are, across batch boundaries and in
columns that hold no value at all.
"""

from __future__ import annotations

import math
import sqlite3
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rhei_lake.capture.reader_process import ReaderProcess, fast_reader_available

pytestmark = pytest.mark.skipif(not fast_reader_available(), reason="needs the ADBC SQLite driver")

_KINDS = {
    "int": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    # NaN is stored as NULL by SQLite: every other double, -0.0 and infinities included
    "real": st.floats(allow_nan=False),
    "text": st.text(st.characters(codec="utf-8"), max_size=40),
    "blob": st.binary(max_size=40),
}
_WITNESS = {"int": "0", "real": "0.0", "text": "''", "blob": "X''"}


@st.composite
def _tables(draw: st.DrawFn) -> tuple[list[str], list[tuple]]:
    kinds = draw(st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=5))
    nullable = [draw(st.booleans()) for _ in kinds]
    cells = [
        st.one_of(st.none(), _KINDS[kind]) if may_be_null else _KINDS[kind]
        for kind, may_be_null in zip(kinds, nullable, strict=True)
    ]
    rows = draw(st.lists(st.tuples(*cells), max_size=60))
    return kinds, rows


def _comparable(value: object) -> object:
    if isinstance(value, float):
        return ("real", struct.pack("<d", value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("blob", bytes(value))
    return value


def _reader_rows(reader: ReaderProcess, sql: str, batch_rows: int) -> list[tuple]:
    table = reader.query(sql, batch_rows=batch_rows).read_all()
    return [tuple(row) for row in zip(*(table.column(i).to_pylist() for i in range(table.num_columns)), strict=True)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=_tables(), batch_rows=st.integers(min_value=1, max_value=9))
def test_every_stored_value_comes_back_as_sqlite_holds_it(tmp_path_factory, table, batch_rows):
    kinds, rows = table
    path = tmp_path_factory.mktemp("handover") / "t.db"
    columns = [f'"c {i}"' for i in range(len(kinds))]  # no declared type: values stay as given
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE t (n INTEGER PRIMARY KEY, {', '.join(columns)})")
        marks = ", ".join("?" for _ in range(len(kinds) + 1))
        conn.executemany(f"INSERT INTO t VALUES ({marks})", [(n, *row) for n, row in enumerate(rows)])
        expected = [tuple(_comparable(v) for v in row) for row in conn.execute(f"SELECT {', '.join(columns)} FROM t")]
    # ADBC types a column by its first batch: a witness row of each column's kind leads, as in rhei_lake's reads.
    witness = ", ".join(_WITNESS[kind] for kind in kinds)
    sql = f"SELECT {witness} UNION ALL SELECT {', '.join(columns)} FROM t"
    with ReaderProcess(str(path)) as reader:
        got = _reader_rows(reader, sql, batch_rows)[1:]
    assert [tuple(_comparable(v) for v in row) for row in got] == expected


def test_a_column_with_no_value_and_an_empty_result(tmp_path):
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (a, b TEXT, c BLOB)")
        conn.executemany("INSERT INTO t VALUES (NULL, ?, ?)", [("", b""), ("x", b"\x00")])
    with ReaderProcess(str(path)) as reader:
        both = reader.query("SELECT a, b, c FROM t ORDER BY rowid", batch_rows=1).read_all()
        assert both.to_pylist() == [{"a": None, "b": "", "c": b""}, {"a": None, "b": "x", "c": b"\x00"}]
        none = reader.query("SELECT b, c FROM t WHERE 0").read_all()
        assert none.num_rows == 0 and none.column_names == ["b", "c"]


def test_buffers_arrive_aligned_for_readers_that_require_it(tmp_path):
    # Rust's Arrow (delta-rs) refuses int64 and double buffers that are not aligned to their width.
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (s TEXT, i INTEGER, r REAL)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [("x" * (n % 7), n, n / 3) for n in range(1000)])
    with ReaderProcess(str(path)) as reader:
        for batch in reader.batches("SELECT s, i, r FROM t", batch_rows=333):
            for column in batch.columns:
                for buffer in column.buffers():
                    assert buffer is None or buffer.address % 8 == 0
            assert math.isclose(sum(batch.column(2).to_pylist()), sum(v / 3 for v in batch.column(1).to_pylist()))
