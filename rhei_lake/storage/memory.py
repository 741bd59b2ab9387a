"""The ``memory://`` tier: tables as Arrow record batches in this process.

Volatile by design (everything is gone at exit) and the fastest tier. deltalake's
own ``memory://`` gives every call a fresh empty store, so this is ours. Merges
and deletes are evaluated by DataFusion over the in-memory batches, so SQL
predicates mean exactly what they mean on the Delta tier.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from rhei_lake.errors import CommitConflictError, StorageError, TableNotFoundError
from rhei_lake.storage.base import (
    AppTransaction,
    Layout,
    MaintenanceResult,
    Merge,
    MergeResult,
    PackedFiles,
    TableStats,
)
from rhei_lake.storage.merging import MergeEvaluator, run_sql

if TYPE_CHECKING:
    from datafusion import SessionContext

_SEAL_ROWS = 65_536
_SEAL_BATCHES = 128


class MemoryTableStore:
    """A :class:`~rhei_lake.storage.base.TableStore` holding Arrow batches in memory."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.layout: Layout | None = None  # rows are scanned from memory: nothing to lay out
        self._lock = threading.RLock()
        self._schema: pa.Schema | None = None
        self._properties: dict[str, str] = {}
        self._sealed: list[pa.RecordBatch] = []
        self._open: list[pa.RecordBatch] = []
        self._open_rows = 0
        self._version = -1
        self._txns: dict[str, int] = {}
        self._commit_metadata: dict[str, str] = {}

    # -- table lifecycle -------------------------------------------------
    def exists(self) -> bool:
        return self._schema is not None

    def _require(self) -> pa.Schema:
        if self._schema is None:
            raise TableNotFoundError(f"{self.uri}: no table here")
        return self._schema

    def create(self, schema: pa.Schema, *, properties: Mapping[str, str]) -> None:
        with self._lock:
            if self._schema is not None:
                raise CommitConflictError(f"{self.uri}: table already exists")
            self._schema = schema
            self._properties = dict(properties)
            self._version = 0

    def reset_empty(self, schema: pa.Schema, *, properties: Mapping[str, str]) -> None:
        with self._lock:
            self._require()
            if any(b.num_rows for b in self._all_batches()):
                raise StorageError(f"{self.uri}: the table holds rows; its schema cannot be replaced")
            self._replace([], schema)
            self._properties = dict(properties)
            self._version += 1

    def properties(self) -> dict[str, str]:
        self._require()
        return dict(self._properties)

    def set_properties(self, properties: Mapping[str, str]) -> None:
        with self._lock:
            self._require()
            self._properties.update(properties)
            self._version += 1

    def schema(self) -> pa.Schema:
        return self._require()

    def add_columns(self, fields: list[pa.Field]) -> None:
        with self._lock:
            schema = self._require()
            for f in fields:
                if f.name in schema.names:
                    raise StorageError(f"{self.uri}: column {f.name!r} already exists")
            new_schema = pa.schema(list(schema) + [f.with_nullable(True) for f in fields])
            widened = []
            for batch in self._all_batches():
                arrays = list(batch.columns) + [pa.nulls(batch.num_rows, f.type) for f in fields]
                widened.append(pa.RecordBatch.from_arrays(arrays, schema=new_schema))
            self._replace(widened, new_schema)
            self._version += 1

    def version(self) -> int:
        self._require()
        return self._version

    def app_version(self, app_id: str) -> int | None:
        self._require()
        return self._txns.get(app_id)

    def last_commit_metadata(self, key: str) -> str | None:
        self._require()
        return self._commit_metadata.get(key)

    def last_commit_at(self) -> float | None:
        return None  # an in-process store: the lake that commits here tracks its own commits

    def refresh(self) -> None:
        """Nothing to load: every writer shares this object."""

    def poll(self) -> bool:
        return False  # shared by every reader in the process: always current

    # -- writes ----------------------------------------------------------
    def _check_txn(self, txn: AppTransaction | None) -> None:
        if txn is None:
            return
        current = self._txns.get(txn.app_id)
        if current is not None and current >= txn.version:
            raise CommitConflictError(
                f"{self.uri}: {txn.app_id} is already at {current}, refusing to commit {txn.version}"
            )
        if txn.expected is not None and (current or 0) != txn.expected:
            raise CommitConflictError(
                f"{self.uri}: {txn.app_id} moved to {current} since this writer read {txn.expected}"
            )

    def _finish_commit(self, txn: AppTransaction | None, metadata: Mapping[str, str] | None) -> None:
        if txn is not None:
            self._txns[txn.app_id] = txn.version
        if metadata:
            self._commit_metadata.update(metadata)
        self._version += 1

    def append(
        self,
        data: pa.Table | pa.RecordBatchReader,
        *,
        txn: AppTransaction | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        schema = self._require()
        if isinstance(data, pa.RecordBatchReader):
            with self._lock:
                self._check_txn(txn)  # a stream refused by its watermark is not read (its source not started)
            data = data.read_all()
        if data.schema != schema:
            data = _cast(data, schema, self.uri)
        batches = data.to_batches()
        with self._lock:
            self._check_txn(txn)
            for batch in batches:
                if batch.num_rows:
                    self._open.append(batch)
                    self._open_rows += batch.num_rows
            if self._open_rows >= _SEAL_ROWS or len(self._open) >= _SEAL_BATCHES:
                self._seal()
            self._finish_commit(txn, metadata)

    def _seal(self) -> None:
        if self._open:
            combined = pa.Table.from_batches(self._open).combine_chunks()
            self._sealed.extend(combined.to_batches())
            self._open = []
            self._open_rows = 0

    def _all_batches(self) -> list[pa.RecordBatch]:
        with self._lock:
            return self._sealed + self._open

    def _replace(self, batches: list[pa.RecordBatch], schema: pa.Schema | None = None) -> None:
        if schema is not None:
            self._schema = schema
        self._sealed = [b for b in batches if b.num_rows]
        self._open = []
        self._open_rows = 0

    def merge(
        self,
        source: pa.Table,
        merge: Merge,
        *,
        txn: AppTransaction | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> MergeResult:
        with self._lock:
            schema = self._require()
            self._check_txn(txn)
            target = self.to_arrow()
            evaluator = MergeEvaluator(source, merge, schema)
            rows, touched = evaluator.apply(target)
            new_table = pa.concat_tables([rows if touched else target, evaluator.inserts()])
            self._replace(new_table.to_batches())
            self._finish_commit(txn, metadata)
            return MergeResult(inserted=evaluator.inserted, updated=evaluator.updated, deleted=evaluator.deleted)

    def delete(self, predicate: str, *, txn: AppTransaction | None = None) -> int:
        with self._lock:
            schema = self._require()
            self._check_txn(txn)
            target = self.to_arrow()
            kept = run_sql({"t": target}, f"SELECT * FROM t WHERE NOT coalesce(({predicate}), false)", schema)
            removed = target.num_rows - kept.num_rows
            if removed or txn is not None:
                self._replace(kept.to_batches())
                self._finish_commit(txn, None)
            return removed

    # -- reads -----------------------------------------------------------
    def to_arrow(self, *, filter: str | None = None, columns: list[str] | None = None) -> pa.Table:
        schema = self._require()
        table = pa.Table.from_batches(self._all_batches(), schema=schema)
        if filter:
            table = run_sql({"t": table}, f"SELECT * FROM t WHERE {filter}", schema)
        if columns is not None:
            table = table.select(columns)
        return table

    def register(self, ctx: SessionContext, name: str) -> None:
        schema = self._require()
        batches = self._all_batches() or [pa.RecordBatch.from_pylist([], schema=schema)]
        if ctx.table_exist(name):
            ctx.deregister_table(name)
        ctx.register_record_batches(name, [batches])

    # -- maintenance -----------------------------------------------------
    def stats(self) -> TableStats:
        self._require()
        batches = self._all_batches()
        return TableStats(
            version=self._version,
            files=len(batches),
            bytes=sum(b.nbytes for b in batches),
            rows=sum(b.num_rows for b in batches),
        )

    def min_value(self, column: str) -> Any:
        import pyarrow.compute as pc

        self._require()
        batches = self._all_batches()
        if not batches or column not in batches[0].schema.names:
            return None
        return pc.min(pa.Table.from_batches(batches).column(column)).as_py()

    def optimize(self, *, target_size: int) -> MaintenanceResult:
        with self._lock:
            before = len(self._all_batches())
            table = pa.Table.from_batches(self._all_batches(), schema=self._require()).combine_chunks()
            self._replace(table.to_batches(max_chunksize=max(1024, target_size // 64)))
            after = len(self._sealed)
            if before != after:
                self._version += 1
            return MaintenanceResult(files_added=after, files_removed=before)

    def pack_small_files(
        self, *, target_size: int, order_by: str, above: int, max_bytes: int, before_commit: Callable[[], None]
    ) -> PackedFiles | None:
        return None  # rows held in memory: nothing to fetch, so nothing to save

    def rows_above(self, column: str, above: int, *, max_bytes: int) -> tuple[int, pa.Table] | None:
        return None  # rows held in memory: a scan fetches nothing

    def vacuum(self, *, retention: timedelta, dry_run: bool = False) -> MaintenanceResult:
        self._require()
        return MaintenanceResult()

    def checkpoint(self) -> None:
        self._require()


def _cast(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    try:
        return table.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise StorageError(f"{where}: rows do not match the table schema: {exc}") from exc


class MemoryLakeRegistry:
    """Process-wide registry so ``memory://NAME`` lakes are shared by name."""

    _lock = threading.Lock()
    _stores: dict[str, MemoryTableStore] = {}

    @classmethod
    def store(cls, uri: str) -> MemoryTableStore:
        with cls._lock:
            store = cls._stores.get(uri)
            if store is None:
                store = cls._stores[uri] = MemoryTableStore(uri)
            return store

    @classmethod
    def drop_lake(cls, root: str) -> None:
        prefix = f"memory://{root}/"
        with cls._lock:
            for key in [k for k in cls._stores if k.startswith(prefix)]:
                del cls._stores[key]
