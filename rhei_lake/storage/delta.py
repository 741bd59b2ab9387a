"""The durable tiers: a Delta Lake table through deltalake (delta-rs), local or on S3.

One :class:`DeltaTableStore` per table keeps one open ``DeltaTable`` (appends to
a reused table are ~5x faster than through a URI), checks app-transaction
watermarks itself (delta-rs accepts a lower version silently) and translates
every native error into the rhei_lake hierarchy.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import unquote

import pyarrow as pa

from rhei_lake import faults
from rhei_lake._shared.identifiers import quote_ident
from rhei_lake.catalog import SEQ, TS
from rhei_lake.errors import (
    CommitConflictError,
    StorageError,
    TableNotFoundError,
    raise_storage,
    translate_storage_error,
)
from rhei_lake.storage.base import (
    AppTransaction,
    Layout,
    MaintenanceResult,
    Merge,
    MergeResult,
    PackedFiles,
    TableStats,
)
from rhei_lake.storage.local_durability import EarlyWriteback, newest_version, sync_commits
from rhei_lake.storage.delta_rewrite import DataFile, FileRewriter, check_rewritable, data_files, recorded
from rhei_lake.storage.merging import FILE_ID, MergeEvaluator
from rhei_lake.storage.plain_types import PLAIN_TYPES_KEY, ViewTypeScan, has_view_types

if TYPE_CHECKING:
    from datafusion import SessionContext
    from deltalake import DeltaTable

log = logging.getLogger("rhei_lake.storage")

# Retries for object-store calls delta-rs makes: fail in seconds, not minutes, and
# let the sync loop's backoff take over.
_DELTA_DEFAULT_OPTIONS = {"max_retries": "3", "retry_timeout": "20s", "timeout": "30s", "connect_timeout": "5s"}


# A streamed append (a snapshot, a first sync) writes row groups of about this much Arrow data.
# delta-rs holds a row group in memory until it is complete, 1M rows by default: for 1M rows of
# ~300-byte text or blobs the peak RSS of a snapshot was ~1 GB, ~0.6-0.8 GB with ~32 MiB groups,
# and the write's tail after its last batch (flushing that group) shrank from ~0.25-0.45 s to ~0.05 s.
# At 8 MiB the tail of 1M narrow rows (~140K rows a group, not ~560K) went from ~14 to ~7 ms, for
# 0.15% more bytes. Rows of 128 bytes or more now get the 64Ki-row floor (at 32 MiB: from 512):
# 1M rows of ~300-byte text went from ~104K-row groups to 64Ki, 0.26% more bytes.
STREAM_ROW_GROUP_BYTES = 8 << 20
_MIN_STREAM_ROW_GROUP_ROWS = 65_536
_MAX_ROW_GROUP_ROWS = 1 << 20  # delta-rs's default
# Rows of a stream's first batch sampled for each column's cardinality: a first look, then a
# wider one for the columns whose first look saw no repeats.
_FIRST_LOOK_ROWS = 4_096
_CARDINALITY_SAMPLE_ROWS = 32_768


@dataclass(frozen=True)
class StreamLayout:
    """How a streamed append's Parquet is laid out, chosen from its first batch."""

    row_group_rows: int
    plain_columns: tuple[str, ...] = ()  # written without dictionary encoding


def stream_row_group_rows(first: pa.RecordBatch) -> int:
    """Rows per row group for a stream whose first batch is ``first``: ~:data:`STREAM_ROW_GROUP_BYTES`
    of its rows, between 64Ki rows (a narrow table's groups stay big enough to compress and scan
    well) and delta-rs's default of 1Mi."""
    per_row = first.nbytes / first.num_rows if first.num_rows else 1
    rows = int(STREAM_ROW_GROUP_BYTES / max(per_row, 1))
    return max(_MIN_STREAM_ROW_GROUP_ROWS, min(_MAX_ROW_GROUP_ROWS, rows))


def unique_columns(first: pa.RecordBatch) -> tuple[str, ...]:
    """The columns of ``first`` whose values are (nearly) all distinct in its first 32Ki rows.

    A dictionary encoder hashes every value until its dictionary outgrows its
    page (1 MiB), then falls back to plain for the rest of the row group: on
    columns like these that work is lost. Written plain, 1M rows of wide text
    took ~0.8 of the encoder's time and ~2% fewer bytes. A column that repeats
    keeps its dictionary: 90% distinct in 32Ki rows takes ~150K distinct values
    or more, a dictionary past its page even of 8-byte values, where a key
    among 100K (86% distinct in that sample) still fits and halves its bytes.
    """
    import pyarrow.compute as pc

    if first.num_rows < 64:
        return ()
    unique = []
    for field in first.schema:
        kind = field.type
        if pa.types.is_boolean(kind) or not (
            pa.types.is_primitive(kind) or pa.types.is_string(kind) or pa.types.is_binary(kind)
        ):
            continue
        column = first.column(field.name)
        if all(
            pc.count_distinct(sample, mode="all").as_py() > 0.9 * len(sample)
            for sample in (column.slice(0, _FIRST_LOOK_ROWS), column.slice(0, _CARDINALITY_SAMPLE_ROWS))
        ):
            unique.append(field.name)
    return tuple(unique)


def _writer_properties(schema: pa.Schema, layout: Layout | None = None, stream: StreamLayout | None = None) -> Any:
    """Parquet settings for appended change events: ``_rhei_seq`` (and ``_rhei_ts``) delta-encoded.

    Sequence numbers rise by one from row to row: with the default dictionary
    encoding a million of them cost ~30 ms and 4 MB (the dictionary overflows,
    then plain); delta-encoded, ~13 ms and 27 KB. Every Parquet reader reads it.
    With a ``layout``, also its row groups (delta-rs's default is 1M rows a
    group); with a ``stream`` layout, its row groups and plain columns.
    Compressed with Snappy, as delta-rs's writer does by default: any
    ``WriterProperties`` that does not name a codec writes every column
    uncompressed (~1.7x the bytes of 1M narrow change rows, for ~0.03 s of CPU saved).
    """
    from deltalake import ColumnProperties, WriterProperties

    columns: dict[str, Any] = {}
    if stream is not None:
        plain = ColumnProperties(dictionary_enabled=False)
        columns = {name: plain for name in stream.plain_columns if name in schema.names}
    delta = ColumnProperties(dictionary_enabled=False, encoding="DELTA_BINARY_PACKED")
    columns.update({name: delta for name in (SEQ, TS) if name in schema.names})
    rows = layout.row_group_rows if layout is not None else stream.row_group_rows if stream is not None else None
    if rows is None and not columns:
        return None  # delta-rs's defaults
    return WriterProperties(max_row_group_size=rows, compression="SNAPPY", column_properties=columns or None)


def _laid_out_stream(reader: pa.RecordBatchReader) -> tuple[pa.RecordBatchReader, StreamLayout | None]:
    """``reader`` as it was, and the layout for its rows (``None``: it is empty)."""
    batches = iter(reader)
    for first in batches:
        if first.num_rows == 0:
            continue
        layout = StreamLayout(stream_row_group_rows(first), unique_columns(first))
        held = [first]  # handed on once, not kept for the rest of the write

        def again() -> Iterator[pa.RecordBatch]:
            yield held.pop()
            yield from batches

        return pa.RecordBatchReader.from_batches(reader.schema, again()), layout
    return pa.RecordBatchReader.from_batches(reader.schema, iter(())), None


class _StreamFailed(Exception):
    """The stream an append was writing raised: its own error, not the store's (delta-rs wraps it
    into an Arrow error whose text reads like a damaged file)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def preload() -> None:
    """Import deltalake now (~10-40 ms of CPU the first time), while waiting for something else (a
    reader process's start)."""
    import deltalake  # noqa: F401


class DeltaLog(Protocol):
    """Cheap looks into a Delta table's ``_delta_log/`` beside delta-rs: one stat or one request each."""

    def read(self, name: str) -> bytes | None:
        """The bytes of ``_delta_log/<name>``, or ``None`` if there is no such file."""
        ...

    def empty(self) -> bool:
        """Whether ``_delta_log/`` holds nothing (no table here)."""
        ...

    def delete_files(self, paths: list[str]) -> None:
        """Delete data files of the table (paths relative to its root), in as few requests as the store allows."""
        ...

    def read_data(self, path: str) -> bytes | None:
        """The bytes of a data file of the table (path relative to its root) in one request, ``None`` if missing."""
        ...


def commit_file(version: int) -> str:
    """The name of the log entry of commit ``version``."""
    return f"{version:020d}.json"


HISTORY_SEARCHED = 200
"""Commits looked at, newest first, for the last one carrying a metadata key."""


def commit_info(entry: bytes) -> dict[str, Any]:
    """The ``commitInfo`` action of a commit's log entry (``{}`` if it has none)."""
    for line in entry.splitlines():
        if b'"commitInfo"' in line:
            try:
                info = json.loads(line).get("commitInfo")
            except ValueError:
                return {}
            return info if isinstance(info, dict) else {}
    return {}


def commit_transactions(entry: bytes) -> dict[str, int]:
    """The app transactions (``txn`` actions) a commit's log entry records."""
    found = {}
    for line in entry.splitlines():
        if b'"txn"' not in line:
            continue
        action = json.loads(line).get("txn")
        if action is not None:
            found[str(action["appId"])] = int(action["version"])
    return found


CHECKPOINT_INTERVAL = 10
"""Commits between the checkpoints writers leave (``delta.checkpointInterval``; Delta's default is 100).

Opening a table reads its last checkpoint and the commits after it, so this
bounds what an open costs whatever the table's history (on S3 delta-rs reads
each of those commits two or three times).
"""


_NEXT_ENTRY_TRUSTED = 3600.0
"""Seconds a version known to be the newest lets a missing next log entry prove that it still is.

delta-rs deletes log entries only past the table's log retention (30 days by default), so
an entry written after that moment is still there."""

_ENTRIES_KEPT = 2 * CHECKPOINT_INTERVAL
"""Log entries a store keeps once read (the newest): its walks and polls ask for the same ones."""


class _Unseen:
    """No log entry looked at says (the answer is the checkpoint's, or older)."""


_UNSEEN = _Unseen()


class DeltaTableStore:
    """A :class:`~rhei_lake.storage.base.TableStore` backed by one Delta table.

    With ``log``, asking whether the table exists or moved costs one request
    (delta-rs itself reads ``_last_checkpoint`` and lists the log: two or more).
    """

    def __init__(
        self,
        uri: str,
        storage_options: Mapping[str, str] | None = None,
        *,
        remote: bool,
        log: DeltaLog | None = None,
    ) -> None:
        self.uri = uri
        self.remote = remote
        self._log = log
        self._options = dict(storage_options or {})
        if remote:
            for key, value in _DELTA_DEFAULT_OPTIONS.items():
                self._options.setdefault(key, value)
        self._dt: DeltaTable | None = None
        self.layout: Layout | None = None
        self._lock = threading.RLock()
        self._txns_at = -1  # the table version self._txns describes
        self._txns: dict[str, int | None] = {}
        self._dataset: tuple[int, Any] | None = None  # (version, the dataset register() scans at it)
        self._commit_at: tuple[int, float | None] | None = None  # (version, its commit time)
        self._entries: dict[int, bytes] = {}  # log entries read through self._log, by version
        self._newest_at = float("-inf")  # (monotonic) when the loaded version was last known to be the newest
        self._rewriter = FileRewriter(uri, self._options)
        self._view_types = ViewTypeScan(self._rewriter.filesystem)

    # -- loading ---------------------------------------------------------
    def _table(self) -> DeltaTable:
        if self._dt is None:
            from deltalake import DeltaTable

            with self._lock:
                if self._dt is None:
                    try:
                        self._dt = DeltaTable(self.uri, storage_options=self._options or None)
                        self._newest_at = time.monotonic()
                    except Exception as exc:
                        raise_storage(exc, where=self.uri)
        return self._dt

    def exists(self) -> bool:
        if self._dt is not None:
            return True
        if self._log is not None and self._log.empty():
            return False
        try:
            self._table()
            return True
        except TableNotFoundError:
            return False

    def _create(
        self, schema: pa.Schema, properties: Mapping[str, str], mode: Literal["error", "overwrite"]
    ) -> DeltaTable:
        from deltalake import DeltaTable

        return DeltaTable.create(
            self.uri,
            schema=schema,
            mode=mode,
            configuration={"delta.checkpointInterval": str(CHECKPOINT_INTERVAL), **properties},
            storage_options=self._options or None,
            raise_if_key_not_exists=False,
        )

    def create(self, schema: pa.Schema, *, properties: Mapping[str, str]) -> None:
        with self._lock:
            try:
                before = -1 if self.remote else newest_version(self.uri)
                self._dt = self._create(schema, properties, "error")
                if not self.remote:
                    self._sync(before)
            except StorageError:
                raise
            except Exception as exc:
                if "already exists" in str(exc).lower():
                    raise CommitConflictError(f"{self.uri}: table already exists") from exc
                raise_storage(exc, where=self.uri)

    def reset_empty(self, schema: pa.Schema, *, properties: Mapping[str, str]) -> None:
        if self._call(lambda dt: dt.file_uris()):
            raise StorageError(f"{self.uri}: the table holds rows; its schema cannot be replaced")
        with self._lock:
            self._dt = self._commit(lambda _dt: self._create(schema, properties, "overwrite"))

    def properties(self) -> dict[str, str]:
        return dict(self._call(lambda dt: dt.metadata().configuration))

    def set_properties(self, properties: Mapping[str, str]) -> None:
        self._commit(lambda dt: dt.alter.set_table_properties(dict(properties), raise_if_not_exists=False))

    def schema(self) -> pa.Schema:
        return self._call(lambda dt: pa.schema(dt.schema().to_arrow()))

    def add_columns(self, fields: list[pa.Field]) -> None:
        from deltalake.schema import Field

        def _add(dt: DeltaTable) -> None:
            dt.alter.add_columns([Field.from_arrow(f.with_nullable(True)) for f in fields])

        self._commit(_add)

    def version(self) -> int:
        return self._call(lambda dt: dt.version())

    def app_version(self, app_id: str) -> int | None:
        return self._call(lambda dt: self._app_version(dt, app_id))

    def _app_version(self, dt: DeltaTable, app_id: str) -> int | None:
        # delta-rs replays the log from storage on every call (~100 ms on S3), but a
        # snapshot's app transactions never change: cache them per table version.
        version = dt.version()
        if self._txns_at != version:
            self._txns_at, self._txns = version, {}
        if app_id not in self._txns:
            found = self._walk_transactions(version, app_id)
            self._txns[app_id] = dt.transaction_version(app_id) if isinstance(found, _Unseen) else found
        return self._txns[app_id]

    def _walk_transactions(self, version: int, app_id: str) -> int | None | _Unseen:
        """``app_id``'s version from the newest log entries that record it, read one at a time from ``version``
        down (delta-rs replays every commit since the checkpoint, each a request on S3, though its load has
        just read them); :data:`_UNSEEN` when none of the newest :data:`CHECKPOINT_INTERVAL` entries does."""
        if self._log is None:
            return _UNSEEN
        for at in range(version, max(-1, version - CHECKPOINT_INTERVAL), -1):
            entry = self._entry(at)
            if entry is None:  # cleaned up
                return _UNSEEN
            transactions = commit_transactions(entry)
            if app_id in transactions:
                return transactions[app_id]
            if at == 0:
                return None  # the whole log read: no such transaction
        return _UNSEEN

    def _entry(self, version: int) -> bytes | None:
        """The log entry of commit ``version`` (``None``: not there), kept once read: entries never change."""
        assert self._log is not None
        entry = self._entries.get(version)
        if entry is None:
            entry = self._log.read(commit_file(version))
            if entry is not None:
                self._entries[version] = entry
                while len(self._entries) > _ENTRIES_KEPT:
                    del self._entries[min(self._entries)]
        return entry

    def _committed(self, dt: DeltaTable, before: int, txn: AppTransaction | None) -> None:
        """After this object's own commit: keep the loaded snapshot and the app-version cache right."""
        after = dt.version()
        if after == before + 1:
            self._newest_at = time.monotonic()  # the entry after `before` was free: none newer existed
            if self._txns_at == before:
                self._txns_at = after
                if txn is not None:
                    self._txns[txn.app_id] = txn.version
        elif after > before + 1:
            # Other writers committed first and delta-rs placed this commit after theirs.
            # The snapshot it then holds has been seen to miss those commits' actions on
            # S3 (stale files listed, new ones missing: duplicated and lost rows on the
            # next read or rewrite). Load the table afresh instead of trusting it.
            self._reload()

    def _reload(self) -> None:
        from deltalake import DeltaTable

        self._dt = DeltaTable(self.uri, storage_options=self._options or None)
        self._newest_at = time.monotonic()

    def last_commit_metadata(self, key: str) -> str | None:
        def _find(dt: DeltaTable) -> str | None:
            if self._log is not None:
                return self._walk_commits(dt.version(), key)
            for commit in dt.history(HISTORY_SEARCHED):
                if key in commit:
                    return str(commit[key])
            return None

        return self._call(_find)

    def _walk_commits(self, version: int, key: str) -> str | None:
        """``key`` of the newest commit info that has it, reading one log entry at a time from ``version``
        down (delta-rs's ``history()`` reads every entry it returns first: one request each on S3)."""
        assert self._log is not None
        for at in range(version, max(-1, version - HISTORY_SEARCHED), -1):
            entry = self._entry(at)
            if entry is None:  # cleaned up: older ones are gone too
                return None
            info = commit_info(entry)
            if key in info:
                return str(info[key])
        return None

    def last_commit_at(self) -> float | None:
        # Kept per loaded version: a status polled every second asks again and again, and
        # on S3 each answer costs a request (a timeout's wait while the store is down).
        def _newest(dt: DeltaTable) -> float | None:
            version = dt.version()
            if self._commit_at is not None and self._commit_at[0] == version:
                return self._commit_at[1]
            commits = dt.history(1)
            stamp = commits[0].get("timestamp") if commits else None
            at = stamp / 1000 if isinstance(stamp, (int, float)) else None
            self._commit_at = (version, at)
            return at

        return self._call(_newest)

    def refresh(self) -> None:
        with self._lock:
            if self._dt is None:
                self._table()
                return
            if self._log is not None and time.monotonic() - self._newest_at < _NEXT_ENTRY_TRUSTED:
                # Versions are consecutive, and entries are cleaned up only weeks after they were written:
                # when the entry after a version known newest within the hour is not there, none newer is
                # (one request; delta-rs's update lists the log and reads _last_checkpoint again).
                self.poll()
                return
            try:
                self._dt.update_incremental()
                self._newest_at = time.monotonic()
            except Exception as exc:
                raise_storage(exc, where=self.uri)

    def poll(self) -> bool:
        with self._lock:
            if self._dt is None:
                return self.exists()
            before = self._dt.version()
            if self._log is None:
                self.refresh()
                return self._dt.version() != before
            try:
                entry = self._entry(before + 1)
                if entry is None:
                    return False
                self._dt.update_incremental()
                self._newest_at = time.monotonic()
                after = self._dt.version()
                # The app transactions move with the commits just read: no replay of the whole log.
                if self._txns_at == before:
                    for version in range(before + 1, after + 1):
                        if version > before + 1:
                            entry = self._entry(version)
                        if entry is None:  # cleaned up already: replay when next asked
                            self._txns_at, self._txns = -1, {}
                            break
                        for app_id, app_version in commit_transactions(entry).items():
                            if app_id in self._txns:
                                self._txns[app_id] = app_version
                    else:
                        self._txns_at = after
            except StorageError:
                raise
            except Exception as exc:
                raise_storage(exc, where=self.uri)
            return after != before

    def _call(self, fn: Any) -> Any:
        dt = self._table()
        with self._lock:
            try:
                return fn(dt)
            except _StreamFailed as failed:
                raise failed.error from None
            except Exception as exc:
                raise translate_storage_error(exc, where=self.uri) from exc

    def _commit(self, fn: Any) -> Any:
        """Run an operation that commits; locally, its commit is on disk (fsynced) when this returns."""
        if self.remote:
            return self._call(fn)
        with self._lock:
            before = newest_version(self.uri)
            result = self._call(fn)
            self._sync(before)
            return result

    def _sync(self, before: int) -> None:
        try:
            sync_commits(self.uri, after=before)
        except OSError as exc:
            raise_storage(exc, where=self.uri)

    # -- writes ----------------------------------------------------------
    def _check_txn(self, dt: DeltaTable, txn: AppTransaction | None) -> None:
        if txn is None:
            return
        # Checked against this object's snapshot; commits made since that snapshot
        # are caught by delta-rs, which refuses a commit whose app id a winning
        # concurrent commit also wrote.
        current = self._app_version(dt, txn.app_id)
        if current is not None and current >= txn.version:
            raise CommitConflictError(
                f"{self.uri}: {txn.app_id} is already at {current}, refusing to commit {txn.version}"
            )
        if txn.expected is not None and (current or 0) != txn.expected:
            raise CommitConflictError(
                f"{self.uri}: {txn.app_id} is at {current} but this writer expected {txn.expected}"
            )

    @staticmethod
    def _commit_properties(txn: AppTransaction | None, metadata: Mapping[str, str] | None, *, retries: int = 15) -> Any:
        from deltalake import CommitProperties, Transaction

        return CommitProperties(
            app_transactions=[Transaction(txn.app_id, txn.version)] if txn else None,
            custom_metadata=dict(metadata) if metadata else None,
            max_commit_retries=retries,
        )

    def append(
        self,
        data: pa.Table | pa.RecordBatchReader,
        *,
        txn: AppTransaction | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        from deltalake import write_deltalake

        if self.layout is not None:
            data = self.layout.sort(data.read_all() if isinstance(data, pa.RecordBatchReader) else data)

        def _append(dt: DeltaTable) -> None:
            self._check_txn(dt, txn)
            faults.point("delta.before_commit")
            before = dt.version()
            rows, stream = data, None
            raised: list[BaseException] = []
            try:
                if isinstance(rows, pa.RecordBatchReader):  # its first batch read only now that it will be written
                    rows, stream = _laid_out_stream(recorded(rows.schema, rows, raised))
                # A stream may be big: locally, its data goes to disk while it is written, not all at the commit.
                with EarlyWriteback(self.uri) if stream is not None and not self.remote else nullcontext():
                    write_deltalake(
                        dt,
                        rows,
                        mode="append",
                        commit_properties=self._commit_properties(txn, metadata),
                        writer_properties=_writer_properties(rows.schema, self.layout, stream),
                    )
            except Exception as exc:
                if raised:  # the stream's own error (a SourceError, an interrupt), whatever delta-rs made of it
                    raise _StreamFailed(raised[0]) from exc
                raise
            self._committed(dt, before, txn)

        self._commit(_append)

    def merge(
        self,
        source: pa.Table,
        merge: Merge,
        *,
        txn: AppTransaction | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> MergeResult:
        """Merge through :mod:`~rhei_lake.storage.delta_rewrite`, not delta-rs's MERGE (which writes view types).

        Only the data files holding a matched row are rewritten; the commit
        swaps them for the new files, adds the inserted rows and records
        ``txn``, and fails with CommitConflictError if anyone committed since
        the snapshot it read. With a :attr:`layout`, the rows written are sorted
        by key: one sorted run per group of files read, the last one with the
        inserted rows (a table under ``READ_GROUP_BYTES`` is one run).
        """
        layout = self.layout
        arrange = layout.sort if layout is not None else (lambda table: table)

        def _merge(dt: DeltaTable) -> MergeResult:
            self._check_txn(dt, txn)
            faults.point("delta.before_commit")
            check_rewritable(dt, self.uri)
            before = dt.version()
            schema = pa.schema(dt.schema().to_arrow())
            evaluator = MergeEvaluator(source, merge, schema)
            touched: list[DataFile] = []

            def merged() -> Iterator[pa.RecordBatch]:
                held = schema.empty_table()  # the last group's rows: sorted with the inserts
                for group in self._rewriter.groups(data_files(dt)):
                    parts = [
                        table.append_column(FILE_ID, pa.repeat(pa.scalar(i, pa.int64()), table.num_rows))
                        for i, (_, table) in enumerate(self._rewriter.read(group, schema))
                    ]
                    rows, hit = evaluator.apply(pa.concat_tables(parts))
                    touched.extend(group[i] for i in sorted(hit))
                    yield from arrange(held).to_batches()
                    held = rows
                yield from arrange(pa.concat_tables([held, evaluator.inserts()])).to_batches()

            adds = self._stage(dt, merged(), schema, writer_properties=_writer_properties(schema, layout))
            result = MergeResult(inserted=evaluator.inserted, updated=evaluator.updated, deleted=evaluator.deleted)
            if not adds and not touched and txn is None and not metadata:
                return result
            faults.point("delta.rewrite_before_commit")
            self._rewriter.commit(
                dt,
                adds,
                touched,
                commit_properties=lambda retries: self._commit_properties(txn, metadata, retries=retries),
            )
            self._committed(dt, before, txn)
            return result

        return self._commit(_merge)

    def delete(self, predicate: str, *, txn: AppTransaction | None = None) -> int:
        """Delete through a predicate overwrite with no new rows (delta-rs's DELETE writes view types).

        delta-rs removes every file holding a matching row and writes the rest
        of their rows back with the table's plain types, in one commit.
        """
        from deltalake import write_deltalake

        def _delete(dt: DeltaTable) -> int:
            self._check_txn(dt, txn)
            faults.point("delta.before_commit")
            before = dt.version()
            doomed = self._count(predicate)  # in the snapshot the overwrite starts from
            if not doomed and txn is None:
                return 0
            schema = pa.schema(dt.schema().to_arrow())
            write_deltalake(
                dt,
                schema.empty_table(),
                mode="overwrite",
                predicate=predicate,
                commit_properties=self._commit_properties(txn, None),
            )
            self._committed(dt, before, txn)
            return doomed

        return self._commit(_delete)

    def _count(self, predicate: str) -> int:
        from datafusion import SessionContext

        ctx = SessionContext()
        self.register(ctx, "t")
        try:
            return int(ctx.sql(f"SELECT count(*) AS n FROM t WHERE {predicate}").to_arrow_table().column(0)[0].as_py())
        except Exception as exc:
            raise_storage(exc, where=f"{self.uri}: counting rows where {predicate!r}")

    # -- reads -----------------------------------------------------------
    def to_arrow(self, *, filter: str | None = None, columns: list[str] | None = None) -> pa.Table:
        if not filter:
            return self._call(lambda dt: dt.to_pyarrow_table(columns=columns))
        from datafusion import SessionContext

        ctx = SessionContext()
        self.register(ctx, "t")
        cols = ", ".join(quote_ident(c) for c in columns) if columns else "*"
        try:
            return ctx.sql(f"SELECT {cols} FROM t WHERE {filter}").to_arrow_table()
        except Exception as exc:
            raise_storage(exc, where=f"{self.uri}: reading with filter {filter!r}")

    def register(self, ctx: SessionContext, name: str) -> None:
        dt = self._table()
        with self._lock:
            if ctx.table_exist(name):
                ctx.deregister_table(name)
            try:
                if (self.remote or self.layout is not None) and not getattr(ctx, "scans_delta", False):
                    # delta-rs issue 4623: DataFusion cannot scan S3 through the Delta
                    # table provider (no object store registered); the pyarrow dataset can.
                    # delta-rs's provider is offered no filter, so it reads every row group
                    # of a table laid out by key; the dataset is, and prunes row groups by
                    # their statistics. (DataFusion's own Parquet scan would too, but it reads
                    # a file a compaction has since vacuumed as empty: the dataset raises, and
                    # the query engine looks again.)
                    # A dataset of zero files plans as UnknownPartitioning(0), which
                    # DataFusion's sanity check rejects under a sort: use an empty batch.
                    dataset = self._scanned_dataset(dt)
                    if dataset is not None:
                        ctx.register_dataset(name, dataset)
                    else:
                        schema = pa.schema(dt.schema().to_arrow())
                        ctx.register_record_batches(name, [[pa.RecordBatch.from_pylist([], schema=schema)]])
                else:
                    ctx.register_table(name, dt)
            except Exception as exc:
                raise_storage(exc, where=self.uri)

    def _scanned_dataset(self, dt: DeltaTable) -> Any:
        """The dataset of the table's files at its loaded version (``None``: it has none), built once per version.

        A version's files never change, so every session (each ``as_of`` query has
        its own) shares one; a file vacuumed since still raises when scanned.
        """
        version = dt.version()
        if self._dataset is None or self._dataset[0] != version:
            dataset = None
            if dt.file_uris():
                dataset = _unpruned(dt.to_pyarrow_dataset())
                dataset = dataset if self.remote else _local(dataset, dt, self.uri)
            self._dataset = (version, dataset)
        return self._dataset[1]

    # -- maintenance -----------------------------------------------------
    def stats(self) -> TableStats:
        def _stats(dt: DeltaTable) -> TableStats:
            actions = pa.table(dt.get_add_actions(flatten=True))
            rows_col = "num_records" if "num_records" in actions.column_names else None
            size = sum(actions.column("size_bytes").to_pylist()) if actions.num_rows else 0
            rows = sum(v or 0 for v in actions.column(rows_col).to_pylist()) if rows_col and actions.num_rows else 0
            return TableStats(version=dt.version(), files=actions.num_rows, bytes=int(size), rows=int(rows))

        return self._call(_stats)

    def min_value(self, column: str) -> Any:
        import pyarrow.compute as pc

        def _min(dt: DeltaTable) -> Any:
            actions = pa.table(dt.get_add_actions(flatten=True))
            name = f"min.{column}"
            if actions.num_rows == 0 or name not in actions.column_names:
                return None
            values = actions.column(name)
            if values.null_count:  # a file without statistics for it (or only NULLs): unknown
                return None
            return pc.min(values).as_py()

        return self._call(_min)

    def optimize(self, *, target_size: int) -> MaintenanceResult:
        """Bin-pack small files, planned on the table's newest commit.

        delta-rs lets a rewrite that changes no data commit on top of another
        that removed the same files (delta-rs PR 3982): planned on an older
        snapshot, a bin-packing would put the rows of those files in the table
        twice. Concurrent appends are fine; concurrent rewrites are kept apart
        by the compaction lock, and each starts from the newest commit.
        """
        self.refresh()

        def _optimize(dt: DeltaTable) -> MaintenanceResult:
            before = dt.version()
            if self.layout is not None:
                result = self._pack_sorted(dt, target_size, self.layout)
            else:
                metrics = dt.optimize.compact(
                    target_size=target_size, commit_properties=self._commit_properties(None, None)
                )
                result = MaintenanceResult(
                    files_added=int(metrics.get("numFilesAdded", 0)),
                    files_removed=int(metrics.get("numFilesRemoved", 0)),
                )
            self._committed(dt, before, None)
            self._rewrite_view_typed()
            return result

        return self._commit(_optimize)

    def _pack_sorted(self, dt: DeltaTable, target_size: int, layout: Layout) -> MaintenanceResult:
        """Bin-pack as delta-rs does, but write each bin as one run sorted by ``layout``'s key.

        delta-rs concatenates the files of a bin: every seam between two sorted
        files becomes a row group spanning the whole key range, which every
        lookup by key then reads. One commit that changes no rows, with no
        retries (CommitConflictError if anyone committed since ``dt``'s snapshot).
        """
        small = [f for f in data_files(dt) if f.size < target_size]
        bins = [files for files in FileRewriter.groups(small, target_size) if len(files) > 1]
        if not bins:
            return MaintenanceResult()
        check_rewritable(dt, self.uri)
        schema = pa.schema(dt.schema().to_arrow())
        adds = []
        for files in bins:
            rows = layout.sort(pa.concat_tables([table for _, table in self._rewriter.read(files, schema)]))
            adds += self._stage(dt, rows.to_batches(), schema, writer_properties=_writer_properties(schema, layout))
        removed = [f for files in bins for f in files]
        self._swap_files(dt, adds, removed)
        return MaintenanceResult(files_added=len(adds), files_removed=len(removed))

    @property
    def _fetch(self) -> Callable[[str], bytes | None] | None:
        """On S3, a file of the table in one GET through the blob store (delta-rs's file handler asks for its
        size first); ``None`` where reading through the file handler costs no request."""
        return self._log.read_data if self.remote and self._log is not None else None

    def _stage(self, dt: DeltaTable, batches: Iterable[pa.RecordBatch], schema: pa.Schema, **kw: Any) -> list[Any]:
        """:meth:`FileRewriter.stage`, noting the files written as plain-typed when ``schema`` is (no read to check)."""
        adds = self._rewriter.stage(dt, batches, schema, fetch=self._fetch, **kw)
        if not has_view_types(schema):
            self._view_types.known_plain(add.path for add in adds)
        return adds

    def _swap_files(self, dt: DeltaTable, adds: list[Any], removed: list[DataFile]) -> None:
        """One commit swapping ``removed`` for ``adds`` with the rows unchanged (a bin-pack)."""
        self._rewriter.commit(
            dt,
            adds,
            removed,
            data_change=False,
            commit_properties=lambda retries: self._commit_properties(None, None, retries=retries),
        )

    def pack_small_files(
        self, *, target_size: int, order_by: str, above: int, max_bytes: int, before_commit: Callable[[], None]
    ) -> PackedFiles | None:
        """See :meth:`TableStore.pack_small_files`: planned on the loaded snapshot, each file read in one request."""
        import pyarrow.compute as pc

        def _pack(dt: DeltaTable) -> PackedFiles | None:
            small = _small_files_above(dt, target_size, order_by, above, max_bytes)
            if len(small) < 2:
                return None
            check_rewritable(dt, self.uri)
            before = dt.version()
            schema = pa.schema(dt.schema().to_arrow())
            rows = pa.concat_tables(self._rewriter.read_whole(small, schema, fetch=self._fetch)).sort_by(order_by)
            adds = self._stage(dt, rows.to_batches(), schema, writer_properties=_writer_properties(schema))
            before_commit()
            self._swap_files(dt, adds, small)
            self._committed(dt, before, None)
            return PackedFiles(before + 1, rows.filter(pc.greater(rows.column(order_by), above)))

        return self._commit(_pack)

    def rows_above(self, column: str, above: int, *, max_bytes: int) -> tuple[int, pa.Table] | None:
        """See :meth:`TableStore.rows_above`: on S3, one GET a file through the blob store.

        A scan through delta-rs's file handler reads a small file's footer (the
        whole file) and then its columns again: two requests a file, one after
        the other. Locally a read costs no request, and the scan is kept.
        """
        import pyarrow.compute as pc

        log = self._log
        if not self.remote or log is None:
            return None

        def _plan(dt: DeltaTable) -> tuple[int, pa.Schema, list[DataFile] | None]:
            return dt.version(), pa.schema(dt.schema().to_arrow()), _files_above(dt, column, above)

        # A version's files never change: read outside the lock, so polls and commits need not wait for it.
        version, schema, files = self._call(_plan)
        if files is None or sum(f.size for f in files) > max_bytes:
            return None

        def fetch(path: str) -> bytes:
            data = log.read_data(path)
            if data is None:
                raise _FileGone(path)
            return data

        try:
            tables = self._rewriter.read_whole(files, schema, fetch=fetch)
        except _FileGone:
            return None
        except StorageError:
            raise
        except Exception as exc:
            raise translate_storage_error(exc, where=self.uri) from exc
        rows = pa.concat_tables(tables) if tables else schema.empty_table()
        return version, rows.filter(pc.greater(rows.column(column), above))

    def _rewrite_view_typed(self) -> None:
        """Rewrite with plain types the files that carry view types (:mod:`~rhei_lake.storage.plain_types`).

        One commit that changes no rows, made only when there are such files.
        A failure is logged, not raised: the compaction before it is committed,
        and the next ``optimize`` tries again.
        """
        try:
            self._rewrite_view_typed_files()
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning(
                "%s: files with view types stay until the next compaction: %s",
                self.uri,
                translate_storage_error(exc, where=self.uri),
            )
            self._reload()

    def _rewrite_view_typed_files(self) -> None:
        dt = self._table()  # _committed may have loaded the table afresh
        files = {f.path: f for f in data_files(dt)}
        doomed = [
            files[p] for p in self._view_types.view_typed(((f.path, f.size) for f in files.values()), fetch=self._fetch)
        ]
        if not doomed:
            return
        check_rewritable(dt, self.uri)
        before = dt.version()
        schema = pa.schema(dt.schema().to_arrow())
        batches = (b for _, table in self._rewriter.read(doomed, schema) for b in table.to_batches())
        adds = self._stage(dt, batches, schema)
        self._rewriter.commit(
            dt,
            adds,
            doomed,
            data_change=False,
            commit_properties=lambda retries: self._commit_properties(
                None, {PLAIN_TYPES_KEY: str(len(doomed))}, retries=retries
            ),
        )
        self._committed(dt, before, None)
        log.info("%s: rewrote %d files written with view types", self.uri, len(doomed))

    def vacuum(self, *, retention: timedelta, dry_run: bool = False) -> MaintenanceResult:
        """Delete unreferenced files older than ``retention``.

        Delta counts retention in whole hours, so a retention that is not a whole
        number of hours is rounded up (a file is never deleted younger than asked).
        Under one hour only files that a commit removed are considered; from one
        hour on, also files no commit ever referenced (left by a writer that
        crashed before committing): a writer in flight for less than the retention
        is never disturbed.
        """
        seconds = retention.total_seconds()
        hours = math.ceil(seconds / 3600)
        full = seconds >= 3600

        def _run(dt: DeltaTable, dry: bool) -> list[str]:
            paths = dt.vacuum(retention_hours=hours, dry_run=dry, enforce_retention_duration=False, full=full)
            return [self._relative(p) for p in paths]

        def _vacuum(dt: DeltaTable) -> MaintenanceResult:
            candidates = _run(dt, True)
            if not candidates:
                return MaintenanceResult()
            # Files removed in commits stay listed as candidates after a vacuum
            # deleted them (until their tombstones expire): count only real files.
            sizes = self._file_sizes()
            present = [p for p in candidates if p in sizes]
            if not present:
                return MaintenanceResult()
            if dry_run:
                removed = present
            elif self.remote and self._log is not None:
                # The files the dry run chose, in one batch: delta-rs's own run would read the log
                # again to choose the same files (a dozen requests and more on S3) and commit twice.
                # Locally a look costs nothing, and delta-rs's run is kept (its commits, its timing).
                self._log.delete_files(present)
                removed = present
            else:
                removed = [p for p in _run(dt, False) if p in sizes]
            return MaintenanceResult(
                files_removed=len(removed),
                bytes_removed=sum(sizes[p] for p in removed),
                removed_paths=removed,
            )

        return self._call(_vacuum)

    def _relative(self, path: str) -> str:
        root = self.uri.rstrip("/") + "/"
        if path.startswith(root):
            return path[len(root) :]
        if path.startswith("file://") and path[len("file://") :].startswith(root):
            return path[len("file://") + len(root) :]
        return path

    def _file_sizes(self) -> dict[str, int]:
        """Size of every data file below the table's root, by path relative to it."""
        import pyarrow.fs as pafs
        from deltalake.fs import DeltaStorageHandler

        fs = pafs.PyFileSystem(DeltaStorageHandler(self.uri, self._options or None))
        infos = fs.get_file_info(pafs.FileSelector("", recursive=True))
        return {
            info.path.lstrip("/"): int(info.size)
            for info in infos
            if info.type == pafs.FileType.File and not info.path.lstrip("/").startswith("_delta_log/")
        }

    def checkpoint(self) -> None:
        self._commit(lambda dt: dt.create_checkpoint())


class _FileGone(Exception):
    """A data file the snapshot names is not in the store (vacuumed since)."""


def _files_with_max(dt: DeltaTable, column: str) -> list[tuple[DataFile, Any]] | None:
    """Each file of ``dt``'s snapshot with its ``add`` action's maximum of ``column`` (``None`` for an empty
    file); ``None`` when the statistics do not say for a file holding rows."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    names = actions.column_names
    if actions.num_rows == 0:
        return []
    if f"max.{column}" not in names:
        return None
    counts = actions.column("num_records").to_pylist() if "num_records" in names else [None] * actions.num_rows
    files = []
    for path, size, rows, high in zip(
        actions.column("path").to_pylist(),
        actions.column("size_bytes").to_pylist(),
        counts,
        actions.column(f"max.{column}").to_pylist(),
        strict=True,
    ):
        if high is None and rows != 0:
            return None
        files.append((DataFile(path, int(size), rows), high))
    return files


def _files_above(dt: DeltaTable, column: str, above: int) -> list[DataFile] | None:
    """The files of ``dt``'s snapshot holding a row with ``column > above``, by their statistics (``None``: unknown)."""
    files = _files_with_max(dt, column)
    if files is None:
        return None
    return [f for f, high in files if high is not None and high > above]


def _small_files_above(dt: DeltaTable, target_size: int, column: str, above: int, max_bytes: int) -> list[DataFile]:
    """Small files to pack, with every file holding a row with ``column > above`` among them; ``[]`` if none fit.

    Decided from the ``add`` actions' statistics: every file with such a row
    must be below ``target_size`` and together at most ``max_bytes``; the other
    small files join while the total stays within ``max_bytes``. A file whose
    statistics do not say makes it ``[]``.
    """
    files = _files_with_max(dt, column)
    if not files:
        return []
    needed: list[DataFile] = []
    optional: list[DataFile] = []
    for f, high in files:
        small = f.size < target_size
        if high is not None and high > above:
            if not small:
                return []
            needed.append(f)
        elif small:
            optional.append(f)
    total = sum(f.size for f in needed)
    if total > max_bytes:
        return []
    chosen = list(needed)
    for f in sorted(optional, key=lambda f: f.size):
        if total + f.size > max_bytes:
            break
        chosen.append(f)
        total += f.size
    return chosen


def _unpruned(dataset: Any) -> Any:
    """``dataset`` without the per-file statistics delta-rs attaches to its fragments.

    With them, a filter that excludes every file (``_rhei_seq > F`` once all is
    folded) leaves zero fragments, the same UnknownPartitioning(0) as an empty
    table. Without them each file stays a fragment, and Parquet row-group
    statistics still skip the data the filter excludes. (rhei_lake's tables are
    not partitioned, so the expressions hold statistics only.)
    """
    import pyarrow.dataset as ds

    fragments = [dataset.format.make_fragment(f.path, dataset.filesystem) for f in dataset.get_fragments()]
    return ds.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)


def _local(dataset: Any, dt: DeltaTable, root: str) -> Any:
    """``dataset`` (of a local table at ``root``) reading its files through pyarrow's own local filesystem.

    delta-rs's dataset opens each file through a filesystem written in Python:
    ~10 ms of a point lookup that pyarrow's local filesystem answers in ~3. A file
    gone still raises (``FileNotFoundError``), as it must.
    """
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    filesystem = pafs.LocalFileSystem()
    fragments = [dataset.format.make_fragment(os.path.join(root, unquote(f.path)), filesystem) for f in data_files(dt)]
    return ds.FileSystemDataset(fragments, dataset.schema, dataset.format, filesystem)
