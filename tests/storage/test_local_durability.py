"""Local commits made durable (:mod:`rhei_lake.storage.local_durability`): a long streamed write starts
writing its data files to disk while it writes them, and its commit is still fsynced whole before it is
reported, with any error the disk had."""

from __future__ import annotations

import errno
import os
import threading
import time

import pyarrow as pa
import pytest

from rhei_lake.errors import StorageError
from rhei_lake.storage import local_durability
from rhei_lake.storage.base import AppTransaction
from rhei_lake.storage.lake_storage import open_storage
from rhei_lake.storage.local_durability import LOG_DIR, EarlyWriteback
from rhei_lake.storage.location import parse_storage_url

pytestmark = pytest.mark.skipif(local_durability._start_writeback is None, reason="needs Linux's sync_file_range")


def _path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _recording_writebacks(monkeypatch, started: list[str], *, before=None) -> None:
    """Record the path of every writeback started (after calling ``before(fd)``), and still start it."""
    real = local_durability._start_writeback

    def recording(fd: int) -> None:
        if before is not None:
            before(fd)
        started.append(_path(fd))
        real(fd)

    monkeypatch.setattr(local_durability, "_start_writeback", recording)


def test_early_writeback_starts_writing_new_files_as_they_grow_and_only_those(tmp_path, monkeypatch):
    started: list[str] = []
    _recording_writebacks(monkeypatch, started)
    before = tmp_path / "part-old.parquet"
    before.write_bytes(b"x" * 4096)
    growing, gone = tmp_path / "part-new.parquet#1", tmp_path / "part-gone.parquet"
    with EarlyWriteback(str(tmp_path), interval=0.01) as writeback:
        gone.write_bytes(b"y")
        with growing.open("wb") as out:
            for _ in range(5):
                out.write(b"z" * 65536)
                out.flush()
                time.sleep(0.05)
        with before.open("ab") as out:  # a file of the table before the write: not this write's
            out.write(b"x")
        time.sleep(0.05)
        gone.unlink()  # removed under it: passed over, never raised
        assert str(growing) in started, "a growing file was not written back while it was written"
        assert started.count(str(growing)) >= 2, "the file's later growth was not written back"
        assert writeback._thread is not None and writeback._thread.is_alive()
    assert str(before) not in started, "a file there before the write was written back"
    assert not any(t.name == "rhei-early-writeback" for t in threading.enumerate()), "its thread outlived it"


def test_an_error_starting_a_writeback_fails_the_write_and_is_not_taken_from_the_fsync(tmp_path, monkeypatch):
    """sync_file_range waits for nothing and collects no error (a flush that took a failed writeback's
    error, reported once, would let the commit's fsync succeed over pages that never reached the disk);
    an error it returns itself ends the write with that error."""

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local_durability, "_start_writeback", failing)
    with pytest.raises(OSError, match="Input/output error"):
        with EarlyWriteback(str(tmp_path), interval=0.01):
            (tmp_path / "part-new.parquet").write_bytes(b"z" * 4096)
            time.sleep(0.1)
    with pytest.raises(ValueError, match="the write's own"):  # the write's own error is the one raised
        with EarlyWriteback(str(tmp_path / "again"), interval=0.01):
            raise ValueError("the write's own")


def test_early_writeback_of_a_missing_directory_does_nothing(tmp_path):
    with EarlyWriteback(str(tmp_path / "nope"), interval=0.01):
        time.sleep(0.05)


SCHEMA = pa.schema([("id", pa.int64()), ("body", pa.binary())])
BATCH_ROWS, VALUE_BYTES, BATCHES = 4096, 1024, 30  # 120 MiB that do not compress: delta-rs writes two files


def _batches():
    for n in range(BATCHES):
        data = pa.py_buffer(os.urandom(BATCH_ROWS * VALUE_BYTES))
        offsets = pa.array(range(0, (BATCH_ROWS + 1) * VALUE_BYTES, VALUE_BYTES), pa.int32()).buffers()[1]
        body = pa.Array.from_buffers(pa.binary(), BATCH_ROWS, [None, offsets, data])
        yield pa.record_batch([pa.array(range(n * BATCH_ROWS, (n + 1) * BATCH_ROWS), pa.int64()), body], schema=SCHEMA)


def test_a_streamed_append_writes_its_data_files_back_before_the_commit_and_fsyncs_them_after(tmp_path, monkeypatch):
    """delta-rs writes a stream's data files one by one (~100 MB each): each starts going to disk while
    the stream is still read (the commit's log entry does not exist yet), and the commit is fsynced
    whole after, as every local commit is."""
    calls: list[tuple[str, str]] = []
    store = open_storage(parse_storage_url(str(tmp_path / "lake"), {})).table_store("t", "changes")
    store.create(SCHEMA, properties={})
    commit = os.path.join(store.uri, LOG_DIR, "00000000000000000001.json")
    flushed_before_commit: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        calls.append(("fsync", _path(fd)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)

    def noting(fd: int) -> None:
        if not os.path.exists(commit):
            flushed_before_commit.append(_path(fd))

    _recording_writebacks(monkeypatch, [], before=noting)
    store.append(pa.RecordBatchReader.from_batches(SCHEMA, _batches()), txn=AppTransaction("w", 1))
    data_files = sorted(os.path.join(store.uri, name) for name in os.listdir(store.uri) if name.endswith(".parquet"))
    assert len(data_files) >= 2
    # under its final name, or under object_store's staging name (NAME#N) before the rename
    assert {path.split("#")[0] for path in flushed_before_commit} & set(data_files), "none written back early"
    fsynced = {path for call, path in calls if call == "fsync"}
    assert set(data_files) <= fsynced, "the commit's data files were not fsynced after the write"
    assert commit in fsynced
    ids = store.to_arrow().column("id").to_pylist()
    assert sorted(ids) == list(range(BATCHES * BATCH_ROWS))


def test_a_failed_writeback_start_during_a_streamed_append_fails_the_append(tmp_path, monkeypatch):
    """The disk's error reaches the caller as the storage error it is, and no thread is left behind."""
    store = open_storage(parse_storage_url(str(tmp_path / "lake"), {})).table_store("t", "changes")
    store.create(SCHEMA, properties={})

    def failing(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_durability, "_start_writeback", failing)
    with pytest.raises(StorageError):
        store.append(pa.RecordBatchReader.from_batches(SCHEMA, _batches()), txn=AppTransaction("w", 1))
    # delta-rs wrote the log entry before the error could be raised, as when the commit's own fsync fails:
    # the append is not reported durable, and the writer's retry finds its app transaction landed.
    assert not any(t.name == "rhei-early-writeback" for t in threading.enumerate())
