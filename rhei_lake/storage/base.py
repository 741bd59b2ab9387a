"""The storage contract: one :class:`TableStore` protocol, one implementation per tier.

Compaction, sync and query code talk only to this protocol and never branch on
the URL scheme. The contract, checked by the same test suite on every tier:

* A missing table: ``exists()`` is ``False``; every other call raises
  :class:`~rhei_lake.errors.TableNotFoundError`.
* A commit is atomic: all of its rows, and its app transaction, or nothing.
* A commit carrying ``txn=AppTransaction(app_id, v, expected)`` is refused with
  :class:`~rhei_lake.errors.CommitConflictError` when the table already records
  ``app_id`` at ``v`` or higher (delta-rs itself would accept it), when it
  records anything but ``expected``, or when another writer committed the same
  ``app_id`` concurrently. The caller refreshes, drops what is already
  committed, and retries.
* Transient faults raise :class:`~rhei_lake.errors.StorageUnavailableError`;
  nothing is half-written.
* Durability once a call returns: ``memory://`` until the process exits; a local
  path and ``s3://`` until deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa

if TYPE_CHECKING:
    from datafusion import SessionContext


@dataclass(frozen=True)
class AppTransaction:
    """A watermark committed atomically with data (Delta's ``txn`` action).

    ``expected`` is the watermark the writer based its commit on (``0`` for
    none yet): the commit is refused if the table has moved past it since, so a
    writer with a stale view can never commit events twice.
    """

    app_id: str
    version: int
    expected: int | None = None


@dataclass(frozen=True)
class Merge:
    """A MERGE of a source (alias ``s``) into the table (alias ``t``), expressions in SQL.

    For each target row matched by ``on``: deleted if ``delete_when`` holds, else
    updated with ``update`` where ``update_when`` holds (always when ``None``).
    Each unmatched source row is inserted with ``insert`` where ``insert_when`` holds.
    A target row may match at most one source row.
    """

    on: str
    update: Mapping[str, str] | None = None
    update_when: str | None = None
    delete_when: str | None = None
    insert: Mapping[str, str] | None = None
    insert_when: str | None = None


LOOKUP_ROW_GROUP_ROWS = 8_192
"""Rows per Parquet row group of a table laid out for lookups (:class:`Layout`).

A lookup by key decodes one row group: on a 1M-row, ten-column history, ~2-3 ms
in DataFusion for 8K rows, ~3-7 ms for 16K-32K (delta-rs writes 1M rows to a
group). Smaller groups cost more footer and a little compression.
"""


@dataclass(frozen=True)
class Layout:
    """How a table's rows are laid out so that ``WHERE <key> = ...`` reads one row group, not the table.

    Every data file a merge, an append or a bin-pack writes holds its rows
    sorted by ``sort_by`` (what one such write stages is one sorted run), in row groups of
    ``row_group_rows`` rows, so the row groups' min/max statistics on the key
    let a reader skip all but the ones that can hold it. Correctness never
    depends on it: a file in any order reads the same, only slower.
    """

    sort_by: tuple[str, ...]
    row_group_rows: int = LOOKUP_ROW_GROUP_ROWS

    def sort(self, table: pa.Table) -> pa.Table:
        """``table``'s rows in this layout's order (stable, so equal keys keep their order)."""
        if table.num_rows < 2:
            return table
        return table.sort_by([(name, "ascending") for name in self.sort_by])


@dataclass(frozen=True)
class MergeResult:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class TableStats:
    """What maintenance reports on: the table's version, data files, bytes and rows."""

    version: int
    files: int
    bytes: int
    rows: int


@dataclass(frozen=True)
class MaintenanceResult:
    files_added: int = 0
    files_removed: int = 0
    bytes_removed: int = 0
    removed_paths: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PackedFiles:
    """What :meth:`TableStore.pack_small_files` committed: the table's new version, and its rows past ``above``."""

    version: int
    rows: pa.Table


@runtime_checkable
class TableStore(Protocol):
    """One table on one storage tier."""

    uri: str
    layout: Layout | None
    """Set by the owner of a table read by key (compaction's derived tables); ``None``: rows as written."""

    def exists(self) -> bool:
        """Whether the table exists (a definite answer; transient faults raise)."""
        ...

    def create(self, schema: pa.Schema, *, properties: Mapping[str, str]) -> None:
        """Create the empty table; CommitConflictError if it already exists."""
        ...

    def reset_empty(self, schema: pa.Schema, *, properties: Mapping[str, str]) -> None:
        """Give a table that holds no rows a new schema and properties (StorageError if it holds rows).

        For a registration whose snapshot never landed, registered again with
        other column types.
        """
        ...

    def properties(self) -> dict[str, str]:
        """The table's properties (rhei_lake keeps the :class:`TableSpec` here)."""
        ...

    def set_properties(self, properties: Mapping[str, str]) -> None: ...

    def schema(self) -> pa.Schema: ...

    def add_columns(self, fields: list[pa.Field]) -> None:
        """Schema evolution: append nullable columns; existing rows read as NULL."""
        ...

    def version(self) -> int:
        """A number that grows with every commit."""
        ...

    def app_version(self, app_id: str) -> int | None:
        """The last version committed for ``app_id``, or ``None``."""
        ...

    def last_commit_metadata(self, key: str) -> str | None:
        """The value of ``key`` in the newest commit that carried it, or ``None``."""
        ...

    def last_commit_at(self) -> float | None:
        """When the newest commit was made (epoch seconds), or ``None`` where the store keeps no time."""
        ...

    def refresh(self) -> None:
        """Load commits made by other writers since this object last looked."""
        ...

    def poll(self) -> bool:
        """Load commits made since this object last looked if there are any; whether there were.

        Finding out that there are none costs one stat or one request, whatever
        the table's history (a ``memory://`` table is always current: ``False``).
        """
        ...

    def append(
        self,
        data: pa.Table | pa.RecordBatchReader,
        *,
        txn: AppTransaction | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Append rows in one commit, with an optional app transaction and commit metadata."""
        ...

    def merge(
        self,
        source: pa.Table,
        merge: Merge,
        *,
        txn: AppTransaction | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> MergeResult: ...

    def delete(self, predicate: str, *, txn: AppTransaction | None = None) -> int:
        """Delete the rows where the SQL ``predicate`` holds; returns how many."""
        ...

    def to_arrow(self, *, filter: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """Read the table (rows where ``filter`` holds), as one Arrow table."""
        ...

    def register(self, ctx: SessionContext, name: str) -> None:
        """Make the current snapshot queryable in ``ctx`` as ``name``."""
        ...

    def stats(self) -> TableStats: ...

    def min_value(self, column: str) -> Any:
        """The smallest non-null value of ``column`` as the table's file statistics record it, reading no data.

        ``None`` when the table holds no value of it or a file records no statistics for it (then it is unknown).
        """
        ...

    def optimize(self, *, target_size: int) -> MaintenanceResult:
        """Bin-pack small files into files of about ``target_size`` bytes."""
        ...

    def pack_small_files(
        self, *, target_size: int, order_by: str, above: int, max_bytes: int, before_commit: Callable[[], None]
    ) -> PackedFiles | None:
        """Rewrite small files as one file sorted by ``order_by``, reading each once; keep its rows past ``above``.

        Packs every file holding a row with ``order_by > above``, which must all
        be small (below ``target_size``) and add up to at most ``max_bytes``,
        and the other small files while the total stays within it; so the rows
        returned are every row of the table past ``above``. ``None`` when that
        is not so, when it would pack fewer than two files, or on a tier
        without files; then nothing is read. The commit changes no rows and is
        made on the snapshot the files were planned on, with no retries
        (CommitConflictError if anyone committed since). ``before_commit``
        runs between staging and committing.
        """
        ...

    def rows_above(self, column: str, above: int, *, max_bytes: int) -> tuple[int, pa.Table] | None:
        """The loaded snapshot's version and its rows with ``column > above``, each file holding any read whole once.

        The files are chosen by their statistics and fetched concurrently, one
        request each, where a scan would ask for each file's footer and then its
        columns. ``None`` when they add up to more than ``max_bytes``, a file's
        statistics do not say, a file is gone (a scan then says so), or on a tier
        where a scan makes no requests; then nothing is read.
        """
        ...

    def vacuum(self, *, retention: timedelta, dry_run: bool = False) -> MaintenanceResult:
        """Delete files no longer referenced and older than ``retention``."""
        ...

    def checkpoint(self) -> None:
        """Write a checkpoint so readers do not replay the whole log."""
        ...
