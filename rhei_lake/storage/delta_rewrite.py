"""Rewriting data files of a Delta table in one commit, with plain Arrow types, without delta-rs's MERGE.

delta-rs 1.6.6 scans tables with DataFusion's view types, and its MERGE, DELETE
and UPDATE write the rows they rewrite with them: the Arrow schema embedded in
those files says ``string_view`` / ``binary_view`` where the Delta schema says
``string`` / ``binary``, and readers that trust the embedded schema refuse the
files (Daft 0.7: ``Unsupported Arrow DataType: Utf8View``). Its Python API
offers no session setting to turn that off (``schema_force_view_types`` is
fixed on, for the target scan and so for the written files). Its appends,
predicate overwrites and ``optimize`` write the table's own plain types.

So a rewrite here is done in three steps, each by delta-rs's public API:

1. read the data files concerned with pyarrow (the table's schema: plain
   types, columns added since a file was written read as NULL);
2. write the new rows as a fresh Delta table in a directory inside the table
   (``rhei-rewrite-<uuid>/``): delta-rs's own writer, so the files and their
   statistics are exactly what an append would write. That staging table's
   log is read for its ``add`` actions, then deleted;
3. commit to the table, in **one** commit, those ``add`` actions with the
   paths made relative to the table, a ``remove`` for every file replaced,
   and the app transaction (``create_write_transaction``). The commit is made
   with no retries: if anyone committed since the snapshot that was read, it
   fails with CommitConflictError and the caller starts over from a fresh
   snapshot (delta-rs's rebase would not notice that a concurrent ``optimize``
   had already replaced a file this commit removes).

A crash before step 3 leaves unreferenced files in ``rhei-rewrite-*``, which
vacuum deletes like any data file no commit kept (the directory name does not
start with ``_`` or ``.``, which vacuum would treat as hidden).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from rhei_lake.errors import StorageError, StorageUnavailableError

if TYPE_CHECKING:
    from deltalake import DeltaTable

STAGING_PREFIX = "rhei-rewrite-"
"""Directory (inside the table) that one rewrite's new data files are written to."""

READ_GROUP_BYTES = 256 * 1024 * 1024
"""Data files are read in groups of about this many (compressed) bytes: bounds a rewrite's memory."""

READ_CONCURRENCY = 16
"""Files :meth:`FileRewriter.read_whole` fetches at once."""

_COPIED_PROPERTIES = ("delta.dataSkippingNumIndexedCols", "delta.dataSkippingStatsColumns", "delta.targetFileSize")
_LOG_DIR = "_delta_log"


@dataclass(frozen=True)
class DataFile:
    """One data file of a snapshot, as its ``add`` action names it."""

    path: str
    size: int
    rows: int | None


def data_files(dt: DeltaTable) -> list[DataFile]:
    """The data files of ``dt``'s loaded snapshot."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return []
    rows = actions.column("num_records").to_pylist() if "num_records" in actions.column_names else None
    return [
        DataFile(path, int(size), None if rows is None or rows[i] is None else int(rows[i]))
        for i, (path, size) in enumerate(
            zip(actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist(), strict=True)
        )
    ]


def recorded(schema: pa.Schema, batches: Iterable[pa.RecordBatch], raised: list[BaseException]) -> pa.RecordBatchReader:
    """``batches`` as a reader for delta-rs, noting in ``raised`` what iterating them raises, as it
    raises it: delta-rs hands back an error of its own, an Arrow error quoting the text."""

    def guarded() -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except BaseException as exc:
            raised.append(exc)
            raise

    return pa.RecordBatchReader.from_batches(schema, guarded())


def check_rewritable(dt: DeltaTable, where: str) -> None:
    """Refuse tables whose files a plain read and rewrite would get wrong (rhei_lake creates none)."""
    protocol = dt.protocol()
    features = set(protocol.reader_features or []) | set(protocol.writer_features or [])
    config = dt.metadata().configuration
    unsupported = sorted(features & {"deletionVectors", "columnMapping", "changeDataFeed", "rowTracking"})
    if config.get("delta.enableChangeDataFeed", "false").lower() == "true":
        unsupported.append("delta.enableChangeDataFeed")
    if config.get("delta.columnMapping.mode", "none") != "none":
        unsupported.append("delta.columnMapping.mode")
    if dt.metadata().partition_columns:  # their values live in the log, not in the files read here
        unsupported.append("partition columns")
    if unsupported:
        raise StorageError(f"{where}: rhei_lake cannot rewrite a table with {', '.join(unsupported)}")


class FileRewriter:
    """Reads, stages and swaps data files of one Delta table (see the module docstring)."""

    def __init__(self, uri: str, options: Mapping[str, str]) -> None:
        self.uri = uri.rstrip("/")
        self._options = dict(options)
        self._fs: Any = None

    def filesystem(self) -> Any:
        """A pyarrow file system rooted at the table (paths relative to it)."""
        if self._fs is None:
            import pyarrow.fs as pafs
            from deltalake.fs import DeltaStorageHandler

            self._fs = pafs.PyFileSystem(DeltaStorageHandler(self.uri, self._options or None))
        return self._fs

    # -- reading -----------------------------------------------------------
    def read(self, files: Iterable[DataFile], schema: pa.Schema) -> Iterator[tuple[DataFile, pa.Table]]:
        """Each file's rows in ``schema`` (view types read as plain, missing columns as NULL).

        A file whose size is not the one its ``add`` action records raises
        StorageUnavailableError: delta-rs's file handler answers a failed
        request (a 503) with an empty file rather than an error.
        """
        import pyarrow.parquet as pq

        for f in files:
            with self.filesystem().open_input_file(f.path) as handle:
                size = handle.size()
                if size != f.size:
                    raise StorageUnavailableError(
                        f"{self.uri}/{f.path}: the store returned {size} bytes, the Delta log records {f.size}"
                    )
                yield f, pq.read_table(handle, schema=schema)

    def read_whole(
        self, files: list[DataFile], schema: pa.Schema, *, fetch: Callable[[str], bytes | None] | None = None
    ) -> list[pa.Table]:
        """Each file's rows in ``schema``, like :meth:`read`, but each file read whole, all at once.

        :meth:`read` lets Parquet seek (a size request and two or three ranged
        reads per file on S3); this reads every file whole, concurrently, and
        checks its length against its ``add`` action. ``fetch`` (a path
        relative to the table, to its bytes or ``None`` when missing) reads a
        file in one request where the file handler would ask for its size first.
        """
        import pyarrow.parquet as pq
        from concurrent.futures import ThreadPoolExecutor

        def read(f: DataFile) -> pa.Table:
            if fetch is not None and "%" not in f.path:  # an escaped path is the file handler's to decode
                data = fetch(f.path)
                if data is None:
                    raise StorageUnavailableError(f"{self.uri}/{f.path}: the Delta log names a file the store lacks")
            else:
                with self.filesystem().open_input_stream(f.path) as handle:
                    data = handle.read()
            if len(data) != f.size:
                raise StorageUnavailableError(
                    f"{self.uri}/{f.path}: the store returned {len(data)} bytes, the Delta log records {f.size}"
                )
            return pq.read_table(pa.BufferReader(data), schema=schema)

        if len(files) <= 1:
            return [read(f) for f in files]
        with ThreadPoolExecutor(max_workers=min(len(files), READ_CONCURRENCY)) as pool:
            return list(pool.map(read, files))

    @staticmethod
    def groups(files: Iterable[DataFile], limit: int = READ_GROUP_BYTES) -> Iterator[list[DataFile]]:
        """``files`` in runs of about ``limit`` bytes (a bigger file is a run of its own)."""
        group: list[DataFile] = []
        size = 0
        for f in files:
            if group and size + f.size > limit:
                yield group
                group, size = [], 0
            group.append(f)
            size += f.size
        if group:
            yield group

    # -- staging -----------------------------------------------------------
    def stage(
        self,
        dt: DeltaTable,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        *,
        writer_properties: Any = None,
        fetch: Callable[[str], bytes | None] | None = None,
    ) -> list[Any]:
        """Write ``batches`` as new data files inside the table; their ``AddAction`` s (nothing committed).

        An exception raised while ``batches`` is iterated is raised as it was.
        ``fetch`` (see :meth:`read_whole`) reads the staging log in one request.
        """
        from deltalake import PostCommitHookProperties, write_deltalake

        failure: list[BaseException] = []
        directory = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        config = dt.metadata().configuration
        try:
            write_deltalake(
                f"{self.uri}/{directory}",
                recorded(schema, batches, failure),
                mode="error",
                writer_properties=writer_properties,
                configuration={k: config[k] for k in _COPIED_PROPERTIES if k in config} or None,
                storage_options=self._options or None,
                post_commithook_properties=PostCommitHookProperties(
                    create_checkpoint=False, cleanup_expired_logs=False
                ),
            )
        except Exception:
            if failure:
                raise failure[0] from None
            raise
        return self._adds_of_staging(directory, fetch)

    def _adds_of_staging(self, directory: str, fetch: Callable[[str], bytes | None] | None) -> list[Any]:
        from deltalake.transaction import AddAction

        fs = self.filesystem()
        log = f"{directory}/{_LOG_DIR}/{0:020d}.json"
        entry = fetch(log) if fetch is not None else None
        if entry is None:
            with fs.open_input_stream(log) as handle:
                entry = handle.read()
        # Lines end at b"\n" only: str.splitlines() also splits at U+2028, \x1c and the like,
        # which a string in a file's min/max statistics may hold unescaped.
        lines = entry.split(b"\n")
        adds = []
        for line in lines:
            action = json.loads(line) if line.strip() else {}
            add = action.get("add")
            if add is None:
                continue
            adds.append(
                AddAction(
                    path=f"{directory}/{add['path']}",
                    size=int(add["size"]),
                    partition_values=add.get("partitionValues") or {},
                    modification_time=int(add["modificationTime"]),
                    data_change=True,
                    stats=add.get("stats") or "",
                )
            )
        fs.delete_dir(f"{directory}/{_LOG_DIR}")
        return adds

    # -- committing ----------------------------------------------------------
    def commit(
        self,
        dt: DeltaTable,
        adds: list[Any],
        removed: Iterable[DataFile],
        *,
        commit_properties: Callable[[int], Any],
        data_change: bool = True,
    ) -> None:
        """Swap ``removed`` for ``adds`` in one commit on top of ``dt``'s snapshot.

        ``commit_properties(max_retries)`` gives the commit's ``CommitProperties``.
        ``data_change=False`` marks a rewrite that leaves the rows as they were.
        """
        from deltalake.transaction import AddAction, RemoveAction

        now = int(time.time() * 1000)
        actions: list[Any] = [
            AddAction(a.path, a.size, a.partition_values, a.modification_time, data_change, a.stats) for a in adds
        ]
        actions += [RemoveAction(f.path, data_change, now, f.size, {}) for f in removed]
        dt.create_write_transaction(actions, mode="append", schema=dt.schema(), commit_properties=commit_properties(0))
        dt.update_incremental()
