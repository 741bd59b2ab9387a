"""Typed reads: the witness row costs no column, a fast read's misfit checks none (they stop the read)."""

from __future__ import annotations

import sqlite3

import pyarrow as pa
import pytest

from rhei_lake.capture.reader_process import ReaderProcess, fast_reader_available
from rhei_lake.capture.sqlite_schema import read_table_spec
from rhei_lake.capture.typed_select import _misfit, after_witness, convert, is_misfit_error, snapshot_sql
from rhei_lake.errors import SourceError


def _batch(*values: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(values, pa.int64())], names=["x"])


@pytest.mark.parametrize(
    "batches, expected",
    [
        ([_batch(0, 1, 2), _batch(3)], [[1, 2], [3]]),
        ([_batch(), _batch(0), _batch(1, 2)], [[1, 2]]),  # the witness alone in a batch, after an empty one
        ([_batch(0), _batch(0, 5)], [[0, 5]]),  # a row equal to the witness later on is data
        ([_batch(0)], []),
    ],
)
def test_after_witness_drops_exactly_the_first_row(batches, expected):
    assert [b.column(0).to_pylist() for b in after_witness(batches)] == expected


@pytest.mark.skipif(not fast_reader_available(), reason="adbc-driver-sqlite is not installed")
@pytest.mark.parametrize(
    "ddl, values, checks",
    [
        ("CREATE TABLE t (id INTEGER PRIMARY KEY, r REAL, q INTEGER)", (1.5, 2), False),
        # TEXT may hold a blob, which ADBC reads as a string past the first batch: checked in SQL
        ("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, r REAL, q INTEGER)", ("x", 1.5, 2), True),
        ("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, n NUMERIC)", ("x", 2.5), True),  # NUMERIC may hold text
        ("CREATE TABLE t (id INTEGER PRIMARY KEY, ts TIMESTAMP)", ("2026-01-01 10:00:00",), True),
    ],
)
def test_a_fast_read_returns_every_row_and_checks_only_where_needed(tmp_path, ddl, values, checks):
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(ddl)
    rows = [(i, *([None] * len(values))) for i in range(1, 6)]  # NULLs first: typing comes from the witness
    rows += [(i, *values) for i in range(6, 9)]
    conn.executemany(f"INSERT INTO t VALUES ({', '.join('?' * (1 + len(values)))})", rows)
    spec = read_table_spec(conn, "t")
    sql, typed = snapshot_sql(spec)
    assert typed.checks is checks
    assert not typed.reports  # no report column: a misfit stops a fast read
    assert ("json_extract" in sql) is checks
    with ReaderProcess(str(db), readonly=True) as reader:
        raws = list(after_witness(reader.query(sql, batch_rows=3)))
    assert all(raw.num_columns == sum(typed._widths()) for raw in raws)
    converted = pa.Table.from_batches([pa.record_batch(convert(typed, raw)[0], schema=spec.schema) for raw in raws])
    assert converted.column("id").to_pylist() == list(range(1, 9))
    others = converted.drop_columns(["id"])
    assert all(column.null_count == 5 and column[5].is_valid for column in others.columns)


@pytest.mark.skipif(not fast_reader_available(), reason="adbc-driver-sqlite is not installed")
@pytest.mark.parametrize("blob", [b"", b"abc", b"\xff\xfe"])
@pytest.mark.parametrize("at", [1, 3, 5])  # in the first batch (the witness's), past it, in the last one
def test_a_blob_in_a_text_column_stops_a_fast_read_instead_of_being_read_as_text(tmp_path, blob, at):
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, blob if i == at else f"v{i}") for i in range(1, 6)])
    sql, typed = snapshot_sql(read_table_spec(conn, "t"))
    read = []
    with ReaderProcess(str(db), readonly=True) as reader:
        with pytest.raises(SourceError) as raised:  # the strict read then names the value
            for raw in after_witness(reader.query(sql, batch_rows=2)):
                read += convert(typed, raw)[0][1].to_pylist()
        assert is_misfit_error(raised.value)
        # the reader serves the next statement (the strict read) in the same transaction
        assert reader.query("SELECT count(*) FROM t").read_all().column(0).to_pylist() == [5]
    assert all(isinstance(v, str) for v in read) and len(read) < at  # nothing at or past the blob came through


def test_only_a_misfit_stop_or_a_storage_class_change_reads_as_a_misfit():
    assert is_misfit_error(SourceError("t.db: IO: Failed to step query: bad JSON path: 'rhei_lake misfit'"))
    assert is_misfit_error(SourceError("t.db: Type mismatch in column 2 (ArrowInvalid)"))
    assert not is_misfit_error(SourceError("t.db: IO: Failed to step query: malformed JSON"))
    assert not is_misfit_error(SourceError("t.db: database disk image is malformed"))


# What each kind's check meant when it was spelled with typeof(): the oracle for the comparisons.
_BY_TYPEOF = {
    "text": "typeof(x) NOT IN ('text', 'null')",
    "blob": "typeof(x) NOT IN ('blob', 'null')",
    "date": "typeof(x) NOT IN ('text', 'null') OR (typeof(x) = 'text' AND length(x) <> 10)",
    "split": "typeof(x) = 'blob'",
}
_STORED = [None, 0, -7, 2**62, 0.0, -1.5, 1e300, "", "abc", "2026-01-01", "ABC", "\u00e9", b"", b"\x00", b"abc"]


@pytest.mark.parametrize("kind", sorted(_BY_TYPEOF))
@pytest.mark.parametrize("declared", ["TEXT", "TEXT COLLATE NOCASE", "NUMERIC", "INTEGER", "REAL", "BLOB", ""])
def test_a_check_by_comparison_finds_exactly_the_storage_classes_typeof_did(tmp_path, kind, declared):
    """Every storage class under every affinity, including a number in a TEXT column (the schema
    rewritten under stored values, as a virtual table would return one): a comparison the column's
    affinity or collation decided would let it through."""
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")  # no affinity: every value stays as given
    conn.executemany("INSERT INTO t (x) VALUES (?)", [(v,) for v in _STORED])
    conn.execute("PRAGMA writable_schema = ON")
    ddl = f"CREATE TABLE t (id INTEGER PRIMARY KEY, x {declared})"
    conn.execute("UPDATE sqlite_master SET sql = ? WHERE name = 't'", (ddl,))
    conn.close()
    conn = sqlite3.connect(db)
    if declared != "REAL":  # which reads a stored integer back as a real
        assert conn.execute("SELECT count(*) FROM t WHERE typeof(x) = 'integer'").fetchone()[0] == 3
    ours = _misfit('"x"', kind, null_key=False, canonical_key=None)
    got = conn.execute(f"SELECT id, coalesce({ours}, 0), coalesce({_BY_TYPEOF[kind]}, 0) FROM t ORDER BY id").fetchall()
    assert [(i, want) for i, _, want in got] == [(i, mine) for i, mine, _ in got]
    assert any(want for _, _, want in got) and not all(want for _, _, want in got)


@pytest.mark.skipif(not fast_reader_available(), reason="adbc-driver-sqlite is not installed")
def test_a_fast_read_of_text_under_a_collation_only_the_application_registers(tmp_path):
    """The reader process knows no collation the application registers: the checks must not need it."""
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.create_collation("app_order", lambda a, b: (a > b) - (a < b))
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT COLLATE app_order, d DATE COLLATE app_order)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, f"v{i}", "2026-01-0" + str(i)) for i in range(1, 6)])
    sql, typed = snapshot_sql(read_table_spec(conn, "t"))
    assert "json_extract" in sql
    with ReaderProcess(str(db), readonly=True) as reader:
        raws = list(after_witness(reader.query(sql, batch_rows=2)))
    assert [v for raw in raws for v in convert(typed, raw)[0][1].to_pylist()] == [f"v{i}" for i in range(1, 6)]
