"""The reader child's walk over the C data interface, on arrays built here, and what the parent
does with a batch that does not hold together."""

from __future__ import annotations

import ctypes
import sqlite3

import pyarrow as pa
import pytest

from rhei_lake.capture import reader_child, reader_process
from rhei_lake.capture.reader_child import AdbcFailure, _Array, _arrays, _buffers, _Stream
from rhei_lake.capture.reader_process import ReaderProcess, fast_reader_available, received_batch, sqlite_uri
from rhei_lake.errors import SourceError

needs_adbc = pytest.mark.skipif(not fast_reader_available(), reason="needs the ADBC SQLite driver")


def _string_column(offsets: list[int], data: bytes) -> tuple[_Array, list[object]]:
    """An Arrow utf8 array of ``len(offsets) - 1`` values as a C struct (and what keeps its memory)."""
    offs = (ctypes.c_int32 * len(offsets))(*offsets)
    body = ctypes.create_string_buffer(data, len(data))
    buffers = (ctypes.c_void_p * 3)(None, ctypes.addressof(offs), ctypes.addressof(body))
    column = _Array(length=len(offsets) - 1, null_count=0, offset=0, n_buffers=3, n_children=0, buffers=buffers)
    return column, [offs, body, buffers]


def test_a_string_column_sends_its_offsets_and_exactly_its_bytes():
    column, _keep = _string_column([0, 2, 2, 5], b"abxyz")
    assert [size for _, size in _buffers(column, "u", "c")] == [0, 16, 5]


def test_offsets_that_wrapped_past_2_gib_are_refused_before_anything_is_sent():
    # The driver's 32-bit offsets wrap without an error; the batch header must never announce a
    # negative size (the parent then waited for a body that never came).
    column, _keep = _string_column([0, 2_000_000_000, -2_094_967_296], b"")
    with pytest.raises(AdbcFailure, match="more than 2 GiB .* lower the lake's batch_size"):
        _buffers(column, "u", "payload")


def test_a_column_without_its_bytes_is_refused():
    column, _keep = _string_column([0, 3], b"abc")
    column.buffers[2] = None
    with pytest.raises(AdbcFailure, match="without its bytes"):
        _buffers(column, "z", "c")


def test_a_failed_step_releases_the_array_the_driver_started():
    released = []
    release_type = _Array._fields_[8][1]
    get_next_type = _Stream._fields_[1][1]
    last_error_type = _Stream._fields_[2][1]

    @release_type
    def release(array):
        released.append(True)
        array.contents.release = release_type()

    @get_next_type
    def get_next(stream, array):
        array.contents.release = release  # filled part-way, then the step failed
        return 5

    message = ctypes.create_string_buffer(b"disk I/O error")

    @last_error_type
    def last_error(stream):
        return ctypes.addressof(message)

    stream = _Stream(get_next=get_next, get_last_error=last_error)
    with pytest.raises(AdbcFailure, match="disk I/O error"):
        next(_arrays(stream))
    assert released == [True]


def test_offsets_out_of_order_within_the_bytes_are_refused_by_the_parent():
    # A wrap past 4 GiB comes back positive: only a full check of the offsets sees it.
    schema = pa.schema([pa.field("s", pa.string())])
    offsets = pa.array([0, 3, 1, 4], pa.int32()).buffers()[1].to_pybytes()
    body = pa.py_buffer(offsets + bytes(reader_child.ALIGN - 16) + b"abcd" + bytes(reader_child.ALIGN - 4))
    header = {"rows": 3, "columns": [[0, [0, 16, 4]]], "align": reader_child.ALIGN}
    with pytest.raises(pa.ArrowInvalid):
        received_batch(schema, header, body)


@needs_adbc
def test_a_batch_the_parent_cannot_rebuild_stops_the_child_and_is_a_source_error(tmp_path, monkeypatch):
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (a INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])

    def broken(*args: object) -> pa.RecordBatch:
        raise pa.ArrowInvalid("buffer too small")

    monkeypatch.setattr(reader_process, "received_batch", broken)
    for prefetch in (0, 2):  # a prefetching consumer too: its producer's error left the child mid-stream
        with ReaderProcess(str(path)) as reader:
            with pytest.raises(SourceError, match="does not hold together"):
                reader.query("SELECT a FROM t", batch_rows=3, prefetch=prefetch).read_all()
            assert reader._proc.wait(timeout=10) is not None  # stopped: the rest of its stream is unreadable


@needs_adbc
@pytest.mark.parametrize("name", ["a?b.db", "c#d.db", "e%41.db", "f g.db", "ü.db"])
def test_a_read_only_open_reads_the_file_its_path_names(tmp_path, name):
    path = tmp_path / name
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (a INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(7)])
    before = sorted(p.name for p in tmp_path.iterdir())
    with ReaderProcess(str(path), readonly=True) as reader:
        assert reader.query("SELECT count(*) FROM t").read_all().column(0)[0].as_py() == 7
    with pytest.raises(SourceError), ReaderProcess(str(tmp_path / ("missing-" + name)), readonly=True):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created, under any name


def test_uris_name_absolute_and_relative_paths():
    assert sqlite_uri("/data/a?b.db", readonly=True) == b"file:///data/a%3Fb.db?mode=ro"
    assert sqlite_uri("//srv/x.db", readonly=False) == b"file:////srv/x.db"
    assert sqlite_uri("rel/x.db", readonly=False) == b"file:rel/x.db"
    assert sqlite_uri(":memory:", readonly=False) == b":memory:"
