"""The hot-path tail of a changelog: a chain of Arrow IPC segment files.

A Delta commit costs 5-45 ms (more as files accumulate); one conditional create
of a small file costs a fraction of a millisecond locally and one PUT on S3. So
on durable tiers each sync writes one segment, and segments are later folded
("flushed") into the Delta changelog in one commit.

Exactly once, by construction:

* A segment's name is the watermark it extends: ``<start>.arrow`` holds the
  events ``start < _rhei_seq <= end`` and records ``end`` in its metadata.
* It is created with put-if-absent, so of two writers extending the same
  watermark exactly one succeeds (the other gets CommitConflictError).
* The committed watermark is the end of the chain that starts at the Delta
  table's app-transaction version: follow ``start -> end`` from there. Segments
  below that version were already flushed and are only garbage.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.ipc as ipc

from rhei_lake.errors import CorruptStorageError
from rhei_lake.storage.blobs import BlobStore

_END_KEY = b"rhei.end"
_CURSOR_KEY = b"rhei.cursor"
_FORMAT_KEY = b"rhei.segment_format"
_WRITTEN_KEY = b"rhei.written_at"  # wall-clock microseconds of the commit: how long its events wait outside Delta
_FORMAT = b"1"
_SUFFIX = ".arrow"
_WIDTH = 20
_FETCH_THREADS = 16


@dataclass(frozen=True)
class Segment:
    """One committed hot-path batch: events after ``start`` up to ``end``."""

    start: int
    end: int
    rows: pa.Table
    cursor: str | None = None
    written_at: float | None = None  # wall-clock seconds of its commit (None: unknown, an older segment)


def segment_name(start: int) -> str:
    return f"{start:0{_WIDTH}d}{_SUFFIX}"


def encode_segment(segment: Segment) -> bytes:
    meta = {_END_KEY: str(segment.end).encode(), _FORMAT_KEY: _FORMAT}
    if segment.cursor is not None:
        meta[_CURSOR_KEY] = segment.cursor.encode()
    if segment.written_at is not None:
        meta[_WRITTEN_KEY] = str(int(segment.written_at * 1_000_000)).encode()
    table = segment.rows.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_segment(start: int, data: bytes, where: str) -> Segment:
    try:
        table = ipc.open_file(pa.py_buffer(data)).read_all()
        meta = table.schema.metadata or {}
        end = int(meta[_END_KEY])
    except (pa.ArrowInvalid, KeyError, ValueError) as exc:
        raise CorruptStorageError(f"{where}: not a rhei_lake segment ({exc})") from exc
    if end < start:
        raise CorruptStorageError(f"{where}: segment ends at {end}, before its start {start}")
    cursor = meta.get(_CURSOR_KEY)
    written = meta.get(_WRITTEN_KEY)
    written_at = int(written) / 1_000_000 if written and written.isdigit() else None
    return Segment(start, end, table.replace_schema_metadata(None), cursor.decode() if cursor else None, written_at)


class SegmentTail:
    """The segment chain of one table, below ``prefix`` of a blob store."""

    def __init__(self, blobs: BlobStore, prefix: str) -> None:
        self.blobs = blobs
        self.prefix = prefix.rstrip("/") + "/"
        self._lock = threading.Lock()

    def _key(self, start: int) -> str:
        return self.prefix + segment_name(start)

    def write(self, segment: Segment) -> None:
        """Commit ``segment``; CommitConflictError if its start was already extended."""
        self.blobs.put_if_absent(self._key(segment.start), encode_segment(segment))

    def starts(self) -> list[int]:
        """The start watermark of every segment file present, sorted."""
        out = []
        for info in self.blobs.list(self.prefix):
            name = info.key[len(self.prefix) :]
            if "/" in name or not name.endswith(_SUFFIX):
                continue
            stem = name[: -len(_SUFFIX)]
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def read(self, start: int) -> Segment | None:
        """The segment extending watermark ``start``, or ``None`` if there is none (one request)."""
        key = self._key(start)
        data = self.blobs.get(key)
        if data is None:
            return None
        segment = decode_segment(start, data, key)
        if segment.end == start:
            raise CorruptStorageError(f"{key}: segment does not advance the watermark")
        return segment

    def load_chain(self, base: int) -> list[Segment]:
        """The committed segments after watermark ``base``, in order.

        One listing, then every segment past ``base`` fetched concurrently
        (each once): the cost of a long tail is one round trip, not one each.
        """
        starts = [start for start in self.starts() if start >= base]
        if not starts:
            return []
        with ThreadPoolExecutor(max_workers=min(_FETCH_THREADS, len(starts))) as pool:
            fetched = dict(zip(starts, pool.map(self.read, starts), strict=True))
        chain: list[Segment] = []
        current = base
        while (segment := fetched.get(current)) is not None:  # a missing one was flushed and deleted meanwhile
            chain.append(segment)
            current = segment.end
        return chain

    def discard(self, below: int) -> int:
        """Delete segment files whose events are all at or below ``below``; returns how many."""
        with self._lock:
            doomed = [self._key(s) for s in self.starts() if s < below]
            self.blobs.delete(doomed)
            return len(doomed)
