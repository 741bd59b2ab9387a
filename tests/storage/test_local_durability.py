"""Local commits made durable (:mod:`rhei_lake.storage.local_durability`): a long streamed write flushes
its data files while it writes them, and its commit is still fsynced whole before it is reported; an
error the disk reports fails it."""

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

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names descriptors through /proc")


def _path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _recording_writebacks(monkeypatch, started: list[str], *, before=None) -> None:
    """Record the path of every early flush (after calling ``before(fd)``), and still flush."""
    real = local_durability._flush_data

    def recording(fd: int) -> None:
        if before is not None:
            before(fd)
        started.append(_path(fd))
        real(fd)

    monkeypatch.setattr(local_durability, "_flush_data", recording)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_early_writeback_flushes_new_files_as_they_grow_and_only_those(tmp_path, monkeypatch):
    started: list[str] = []
    _recording_writebacks(monkeypatch, started)
    before = tmp_path / "part-old.parquet"
    before.write_bytes(b"x" * 4096)
    growing, gone = tmp_path / "part-new.parquet#1", tmp_path / "part-gone.parquet"
    fds = _open_fds()
    with EarlyWriteback(str(tmp_path), interval=0.01) as writeback:
        gone.write_bytes(b"y")
        (tmp_path / "subdir").mkdir()  # not a file: passed over
        with growing.open("wb") as out:
            for _ in range(5):
                out.write(b"z" * 65536)
                out.flush()
                time.sleep(0.05)
        with before.open("ab") as out:  # a file of the table before the write: not this write's
            out.write(b"x")
        time.sleep(0.05)
        gone.unlink()  # removed under it: passed over, never raised
        time.sleep(0.05)
        assert str(growing) in started, "a growing file was not flushed while it was written"
        assert started.count(str(growing)) >= 2, "the file's later growth was not flushed"
        assert writeback._thread is not None and writeback._thread.is_alive()
    assert str(before) not in started, "a file there before the write was flushed"
    assert str(tmp_path / "subdir") not in started
    assert not any(t.name == "rhei-early-writeback" for t in threading.enumerate()), "its thread outlived it"
    assert _open_fds() == fds, "file descriptors left open"


def test_a_flush_error_is_raised_when_the_write_ends_unless_the_write_raised_its_own(tmp_path, monkeypatch):
    """Linux reports a failed writeback (EIO, ENOSPC) once, to the first sync that asks: taken here, it
    would never reach the commit's fsync, so it is the write's error; the thread stops at it."""
    tried: list[int] = []

    def failing(fd: int) -> None:
        tried.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local_durability, "_flush_data", failing)
    fds = _open_fds()
    with pytest.raises(OSError, match="Input/output error"):
        with EarlyWriteback(str(tmp_path), interval=0.01):
            for n in range(3):
                (tmp_path / f"part-{n}.parquet").write_bytes(b"z" * 4096)
                time.sleep(0.05)
    assert len(tried) == 1, "it flushed on after an error"
    assert _open_fds() == fds
    with pytest.raises(ValueError, match="the write's own"):  # the write's own error is the one raised
        with EarlyWriteback(str(tmp_path), interval=0.01) as writeback:
            (tmp_path / "part-9.parquet").write_bytes(b"z" * 4096)
            time.sleep(0.1)
            assert writeback.error is not None
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


def test_a_streamed_append_flushes_its_data_files_before_the_commit_and_fsyncs_them_after(tmp_path, monkeypatch):
    """delta-rs writes a stream's data files one by one (~100 MB each): each reaches the disk while
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
    assert {path.split("#")[0] for path in flushed_before_commit} & set(data_files), "none flushed before the commit"
    fsynced = {path for call, path in calls if call == "fsync"}
    assert set(data_files) <= fsynced, "the commit's data files were not fsynced after the write"
    assert commit in fsynced
    ids = store.to_arrow().column("id").to_pylist()
    assert sorted(ids) == list(range(BATCHES * BATCH_ROWS))


def test_a_flush_error_during_a_streamed_append_fails_the_append(tmp_path, monkeypatch):
    """Seen on ext2 over a loop device that ran out of space for a moment, when this error was swallowed:
    the append returned, and its data file read back damaged."""
    store = open_storage(parse_storage_url(str(tmp_path / "lake"), {})).table_store("t", "changes")
    store.create(SCHEMA, properties={})

    def failing(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # reported here, and never again

    monkeypatch.setattr(local_durability, "_flush_data", failing)
    with pytest.raises(StorageError, match="no space left"):
        store.append(pa.RecordBatchReader.from_batches(SCHEMA, _batches()), txn=AppTransaction("w", 1))
    assert not any(t.name == "rhei-early-writeback" for t in threading.enumerate())
