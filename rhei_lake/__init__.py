"""rhei_lake: SQLite/PostgreSQL → Delta Lake, a durable, queryable, time-travelling mirror.

>>> import rhei_lake
>>> with rhei_lake.open(oltp_path=path, storage="memory://") as lake:  # doctest: +SKIP
...     lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
...     lake.register_table("t")
...     lake.execute("INSERT INTO t VALUES (1, 'a')")
...     lake.sync_now()
...     lake.query("SELECT * FROM t")
...     lake.compact()                       # fold the change feed into t_history, tidy files
"""

from typing import TYPE_CHECKING, Any

from rhei_lake.errors import (
    CommitConflictError,
    ConfigError,
    CorruptStorageError,
    DatabaseBindingError,
    LakeClosedError,
    LeaseHeldError,
    LeaseLostError,
    NonMonotonicUpdateError,
    QueryError,
    ReadOnlySourceError,
    RheiError,
    SchemaChangedError,
    SchemaError,
    SourceError,
    SourceUnavailableError,
    StorageAccessError,
    StorageError,
    StorageUnavailableError,
    TableNotFoundError,
    TableNotReadyError,
    TypeMismatchError,
    WatermarkError,
    WriteRefusedError,
)

# The rest is imported on first use, so that importing the package (as `rh --help`
# does) does not load pyarrow, DataFusion and delta-rs.
_LAZY = {
    "open": "rhei_lake.lake",
    "Lake": "rhei_lake.lake",
    "ReturnedRows": "rhei_lake.lake",
    "LakeConfig": "rhei_lake.config",
    "PolledTable": "rhei_lake.capture.polled_table",
    "TableSpec": "rhei_lake.catalog",
    "Column": "rhei_lake.catalog",
    "CompactionReport": "rhei_lake.compaction.report",
    "TableCompactionReport": "rhei_lake.compaction.report",
    "Route": "rhei_lake.query.router",
    "RestoreReport": "rhei_lake.restore",
    "SyncReport": "rhei_lake.sync.report",
    "TableSyncReport": "rhei_lake.sync.report",
    "SyncStatus": "rhei_lake.sync.status",
    "TableStatus": "rhei_lake.sync.status",
    "LoopStatus": "rhei_lake.sync.status",
    "ErrorInfo": "rhei_lake.sync.status",
    "detach_database": "rhei_lake.sync.binding",
    "DetachReport": "rhei_lake.sync.binding",
}

if TYPE_CHECKING:
    from rhei_lake.capture.polled_table import PolledTable
    from rhei_lake.catalog import Column, TableSpec
    from rhei_lake.compaction.report import CompactionReport, TableCompactionReport
    from rhei_lake.config import LakeConfig
    from rhei_lake.lake import Lake, ReturnedRows, open
    from rhei_lake.query.router import Route
    from rhei_lake.restore import RestoreReport
    from rhei_lake.sync.binding import DetachReport, detach_database
    from rhei_lake.sync.report import SyncReport, TableSyncReport
    from rhei_lake.sync.status import ErrorInfo, LoopStatus, SyncStatus, TableStatus


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rhei_lake' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "__version__",
    "open",
    "detach_database",
    "DetachReport",
    "Lake",
    "ReturnedRows",
    "LakeConfig",
    "PolledTable",
    "TableSpec",
    "Column",
    "SyncReport",
    "TableSyncReport",
    "SyncStatus",
    "TableStatus",
    "LoopStatus",
    "ErrorInfo",
    "Route",
    "RestoreReport",
    "CompactionReport",
    "TableCompactionReport",
    "RheiError",
    "ConfigError",
    "LakeClosedError",
    "SourceError",
    "SchemaError",
    "SchemaChangedError",
    "TypeMismatchError",
    "NonMonotonicUpdateError",
    "SourceUnavailableError",
    "ReadOnlySourceError",
    "DatabaseBindingError",
    "StorageError",
    "StorageUnavailableError",
    "StorageAccessError",
    "CommitConflictError",
    "TableNotFoundError",
    "WatermarkError",
    "CorruptStorageError",
    "LeaseHeldError",
    "LeaseLostError",
    "QueryError",
    "WriteRefusedError",
    "TableNotReadyError",
]
