"""The reader child's walk over the C data interface, on arrays built here, and what the parent
does with a batch that does not hold together."""

from __future__ import annotations

import ctypes
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

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


def _counted_stream(count: int, *, fail_at: int | None = None) -> tuple[_Stream, list[int], list[int], list[object]]:
    """A driver stream of ``count`` arrays (lengths 0, 1, ...; a step error at ``fail_at``): the stream,
    the lengths of the arrays made, those of the arrays released, and what keeps the callbacks alive."""
    made: list[int] = []
    released: list[int] = []
    release_type = _Array._fields_[8][1]
    get_next_type = _Stream._fields_[1][1]
    last_error_type = _Stream._fields_[2][1]
    message = ctypes.create_string_buffer(b"disk I/O error")

    @release_type
    def release(array):
        released.append(array.contents.length)
        array.contents.release = release_type()

    @get_next_type
    def get_next(stream, array):
        if len(made) == fail_at:
            return 5
        if len(made) < count:
            array.contents.length = len(made)
            array.contents.release = release
            made.append(len(made))
        return 0  # no release callback: the end

    @last_error_type
    def last_error(stream):
        return ctypes.addressof(message)

    return (
        _Stream(get_next=get_next, get_last_error=last_error),
        made,
        released,
        [release, get_next, last_error, message],
    )


def _closed_within(generator, seconds: float = 10.0) -> bool:
    done = threading.Event()

    def close() -> None:
        generator.close()
        done.set()

    threading.Thread(target=close, daemon=True).start()
    return done.wait(seconds)


def test_the_read_ahead_hands_every_array_over_in_order():
    stream, made, released, _keep = _counted_stream(5)
    got = []
    for array, seconds in reader_child._read_ahead(stream):
        got.append(array.length)
        assert seconds >= 0
        reader_child._release(array)  # the consumer's part, as _query does after sending
    assert got == made == [0, 1, 2, 3, 4]
    assert released == made


def test_a_read_ahead_stopped_early_releases_what_it_made_and_ends_its_thread():
    stream, made, released, _keep = _counted_stream(50)
    arrays = reader_child._read_ahead(stream)
    first, _ = next(arrays)
    reader_child._release(first)
    time.sleep(0.1)  # the producer has made the next ones by now, and waits to hand one over
    assert _closed_within(arrays), "stopping the read-ahead waited forever"
    assert len(made) >= 2
    assert sorted(released) == made, "an array the read-ahead made was never released"


def test_a_step_error_reaches_the_consumer_after_the_arrays_before_it():
    stream, made, released, _keep = _counted_stream(5, fail_at=3)
    got = []
    with pytest.raises(AdbcFailure, match="disk I/O error"):
        for array, _ in reader_child._read_ahead(stream):
            got.append(array.length)
            reader_child._release(array)
    assert got == [0, 1, 2]
    assert released == [0, 1, 2]


def test_the_handover_waits_for_its_one_item_and_times_out_without_one():
    handover = reader_child._Handover()
    assert handover.take(0) == (False, None)
    assert handover.take(0.01) == (False, None)
    handover.put("a")
    second = threading.Thread(target=handover.put, args=("b",))
    second.start()
    second.join(0.1)
    assert second.is_alive(), "a second item was handed over before the first was taken"
    assert handover.take() == (True, "a")
    second.join(5)
    assert handover.take(5) == (True, "b")


def test_the_child_starts_without_threading_or_queue():
    """The parent waits for the child's start: ``threading`` and ``queue`` (through ``collections``
    and ``functools``) cost ~3.5 ms of it, and the child's module imports neither."""
    script = str(Path(reader_child.__file__))  # loaded as the child loads it: its folder not on sys.path
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('reader_child', {script!r}); "
        "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
        "print(sorted(m for m in ('threading', 'queue', 'typing') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-P", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
