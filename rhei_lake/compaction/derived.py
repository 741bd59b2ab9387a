"""The table compaction derives from a change feed: ``<table>/history`` or ``<table>/current``.

A temporal table keeps SCD2 versions in ``history`` (user columns +
``_rhei_valid_from``, ``_rhei_valid_to``, ``_rhei_seq``); a mirrored table keeps
only the current rows in ``current`` (user columns + ``_rhei_seq`` of the event
that wrote the row). Either records the highest ``_rhei_seq`` folded into it as
the ``rhei.folded`` app transaction, in the same commit as the rows, and carries
the table's spec in its ``rhei.table`` property like the change feed, so a
reader with nothing but the storage URL can interpret it.
"""

from __future__ import annotations

import threading
from typing import Literal

import pyarrow as pa

from rhei_lake.catalog import SEQ, TableSpec
from rhei_lake.errors import CommitConflictError, SchemaError
from rhei_lake.storage.base import Layout, TableStore
from rhei_lake.storage.lake_storage import LakeStorage
from rhei_lake.storage.recorded_spec import MODE_PROPERTY, SPEC_PROPERTY, check_compatible, read_mode

FOLDED_APP_ID = "rhei.folded"

SyncMode = Literal["temporal", "mirror"]


def current_schema(spec: TableSpec) -> pa.Schema:
    """A row of ``<table>/current``: the user columns and the sequence of the event that wrote it."""
    return pa.schema(list(spec.schema) + [pa.field(SEQ, pa.int64(), nullable=False)])


def layout_of(spec: TableSpec, mode: SyncMode) -> Layout | None:
    """How the derived table is laid out: by primary key (then version, in history), so lookups by key prune."""
    if not spec.primary_key:
        return None
    return Layout(tuple(spec.primary_key) + ((SEQ,) if mode == "temporal" else ()))


class DerivedTable:
    """The ``history`` (temporal) or ``current`` (mirror) Delta table of one mirrored table.

    Existence is cached once seen (a table is never dropped while a lake is
    open), so asking before every query costs nothing; :meth:`load` re-reads
    the store, which picks up commits other processes made.
    """

    def __init__(self, storage: LakeStorage, spec: TableSpec, mode: SyncMode) -> None:
        self.spec = spec
        self.mode: SyncMode = mode
        self.kind: Literal["history", "current"] = "history" if mode == "temporal" else "current"
        self.store: TableStore = storage.table_store(spec.name, self.kind)
        self.store.layout = layout_of(spec, mode)
        self._url = storage.location.url
        self._exists = False
        self._lock = threading.Lock()

    @property
    def schema(self) -> pa.Schema:
        return self.spec.history_schema if self.mode == "temporal" else current_schema(self.spec)

    def exists(self) -> bool:
        """Whether the table was created (by this or another process, as last loaded)."""
        return self._exists

    def load(self) -> None:
        """Look for the table and load its newest snapshot."""
        with self._lock:
            if not self._exists:
                self._exists = self.store.exists()
                if self._exists:
                    self._check_spec()
            if self._exists:
                self.store.refresh()

    def poll(self) -> bool:
        """Pick up commits another process made (a compaction job's), cheaply; whether there were any."""
        with self._lock:
            if not self._exists:
                self._exists = self.store.exists()
                if self._exists:
                    self._check_spec()
                return self._exists
            return self.store.poll()

    def ensure(self) -> None:
        """Create the table if it does not exist yet (a concurrent creator is fine)."""
        with self._lock:
            if self._exists or self.store.exists():
                self._exists = True
                return
            try:
                self.store.create(
                    self.schema, properties={SPEC_PROPERTY: self.spec.to_json(), MODE_PROPERTY: self.mode}
                )
            except CommitConflictError:
                self.store.refresh()  # created concurrently by another compaction
            self._exists = True
            self._check_spec()

    def _check_spec(self) -> None:
        properties = self.store.properties()
        if SPEC_PROPERTY not in properties:
            raise SchemaError(f"{self.store.uri} is a Delta table rhei_lake did not write")
        check_compatible(TableSpec.from_json(properties[SPEC_PROPERTY]), self.spec, self._url)

    @property
    def folded(self) -> int:
        """The highest ``_rhei_seq`` folded in (0 before the first fold)."""
        if not self._exists:
            return 0
        return self.store.app_version(FOLDED_APP_ID) or 0


class DerivedTables:
    """The derived table of every mirrored table of one lake, created on demand."""

    def __init__(self, storage: LakeStorage) -> None:
        self.storage = storage
        self._tables: dict[str, DerivedTable] = {}
        self._lock = threading.Lock()

    def get(self, spec: TableSpec, mode: SyncMode | None = None) -> DerivedTable:
        """The derived table of ``spec``; ``mode`` defaults to the one its change feed records."""
        with self._lock:
            table = self._tables.get(spec.name)
            if table is None or table.spec != spec:
                resolved = mode or read_mode(self.storage, spec.name)
                table = DerivedTable(self.storage, spec, resolved)  # type: ignore[arg-type]
                table.load()
                self._tables[spec.name] = table
            return table

    def load_all(self) -> None:
        """Reload every derived table known so far (picks up other processes' compactions)."""
        with self._lock:
            tables = list(self._tables.values())
        for table in tables:
            table.load()
