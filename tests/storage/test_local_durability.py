"""Local commits made durable (:mod:`rhei_lake.storage.local_durability`): a long streamed write flushes
its data files while it writes them, and its commit is still fsynced whole before it is reported."""

from __future__ import annotations

import os
import threading
import time

import pyarrow as pa
import pytest

from rhei_lake.storage.base import AppTransaction
from rhei_lake.storage.lake_storage import open_storage
from rhei_lake.storage.local_durability import LOG_DIR, EarlyWriteback
from rhei_lake.storage.location import parse_storage_url

pytestmark = pytest.mark.skipif(not hasattr(os, "fdatasync"), reason="needs fdatasync")


def _recording(monkeypatch, calls: list[tuple[str, str]], call: str) -> None:
    """Record (call, path) for every ``os.<call>``, and still make it."""
    real = getattr(os, call)

    def recording(fd: int) -> None:
        calls.append((call, os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, call, recording)


def test_early_writeback_flushes_files_that_grow_during_the_write_and_only_those(tmp_path, monkeypatch):
    calls: list[tuple[str, str]] = []
    _recording(monkeypatch, calls, "fdatasync")
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
        gone.unlink()  # removed under it: passed over, never raised
        synced_while_writing = [path for _, path in calls]
        assert str(growing) in synced_while_writing, "a growing file was not flushed while it was written"
        assert writeback._thread is not None and writeback._thread.is_alive()
    assert str(before) not in {path for _, path in calls}, "a file there before the write was flushed"
    assert not any(t.name == "rhei-early-writeback" for t in threading.enumerate()), "its thread outlived it"


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
    """delta-rs writes a stream's data files one by one (~100 MB each): each reaches the disk while the
    stream is still read (the commit's log entry does not exist yet), and the commit is fsynced whole
    after, as every local commit is."""
    calls: list[tuple[str, str]] = []
    store = open_storage(parse_storage_url(str(tmp_path / "lake"), {})).table_store("t", "changes")
    store.create(SCHEMA, properties={})
    commit = os.path.join(store.uri, LOG_DIR, "00000000000000000001.json")
    flushed_before_commit: list[str] = []
    _recording(monkeypatch, calls, "fsync")
    real_fdatasync = os.fdatasync

    def noting(fd: int) -> None:
        if not os.path.exists(commit):
            flushed_before_commit.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", noting)
    store.append(pa.RecordBatchReader.from_batches(SCHEMA, _batches()), txn=AppTransaction("w", 1))
    data_files = sorted(os.path.join(store.uri, name) for name in os.listdir(store.uri) if name.endswith(".parquet"))
    assert len(data_files) >= 2
    # flushed under its final name, or under object_store's staging name (NAME#N) before the rename
    assert {path.split("#")[0] for path in flushed_before_commit} & set(data_files), "none flushed before the commit"
    fsynced = {path for call, path in calls if call == "fsync"}
    assert set(data_files) <= fsynced, "the commit's data files were not fsynced after the write"
    assert commit in fsynced
    ids = store.to_arrow().column("id").to_pylist()
    assert sorted(ids) == list(range(BATCHES * BATCH_ROWS))
