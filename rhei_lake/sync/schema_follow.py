"""Following a mirrored table's schema change made outside rhei_lake (see :mod:`rhei_lake.capture.schema_watch`).

Once per sync the source says whether SQLite's schema cookie moved; if it did,
each mirrored table is judged. A change that is refused stops the sync with a
:class:`~rhei_lake.errors.SchemaChangedError`, after everything captured before
it is committed. A change that is followed runs in one SQLite write transaction
(:meth:`~rhei_lake.capture.trigger_source.TriggerSource.follow_schema`):

1. commit every captured event, in the layout the lake mirrors;
2. judge the table again (nothing can change it now);
3. give the lake's Delta tables the columns the table gained;
4. diff the table's rows against the lake's current rows (:func:`diff_rows`; the
   lake's are read before the lock when nothing of the table lands meanwhile):
   the writes capture missed become events, one per key that differs, stamped
   with the time of the follow;
5. reserve their sequence numbers, store them, reinstall the triggers, record
   the new spec; commit.

The derived events reach the lake right after, and at the latest before any
event captured after them (they wait in SQLite until then, so a crash loses
none). History keeps every version committed before the change; what the
blind writes did in between shows as one change per row, at the follow.
"""

from __future__ import annotations

import pyarrow as pa

from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import TableSpec
from rhei_lake.compaction.derived import DerivedTable, SyncMode
from rhei_lake.query.engine import QueryEngine, QueryTable
from rhei_lake.storage.changelog import Changelog
from rhei_lake.storage.lake_storage import TABLE_KINDS, LakeStorage
from rhei_lake.sync.row_diff import diff_rows
from rhei_lake.sync.tables import missing_fields


def lake_rows(storage: LakeStorage, spec: TableSpec, changelog: Changelog, mode: SyncMode) -> pa.Table:
    """The table's current rows as the lake's ``t`` view answers (folded or not, either sync mode)."""
    derived = DerivedTable(storage, spec, mode)
    derived.load()
    engine = QueryEngine(lambda _only: {spec.name: QueryTable.of(spec, changelog, derived)}, lambda: [spec.name])
    return engine.query(f"SELECT * FROM {q(spec.name)}")


def add_lake_columns(storage: LakeStorage, spec: TableSpec) -> None:
    """Give each existing Delta table of ``spec`` the columns it lacks (harmless if the rest fails)."""
    for kind in TABLE_KINDS:
        store = storage.table_store(spec.name, kind)
        if store.exists():
            missing = missing_fields(store.schema(), spec, store.uri)
            if missing:
                store.add_columns(missing)


class LakeSide:
    """The lake's half of a follow: its current rows of the table, read before the SQLite lock when possible.

    The lake's state of a table only changes when events of it are committed,
    so rows read at a watermark are still exact under the lock if the
    watermark has not moved (after a rebuild no trigger captures anything; an
    added column's triggers may, and then the rows are read again).
    """

    def __init__(self, storage: LakeStorage, changelog: Changelog, mode: SyncMode, mirrored: TableSpec) -> None:
        self.storage = storage
        self.changelog = changelog
        self.mode = mode
        self._early = (changelog.watermark, mirrored, lake_rows(storage, mirrored, changelog, mode))

    def events(self, mirrored: TableSpec, spec: TableSpec, rows: pa.Table) -> pa.Table:
        """The events that bring the lake's copy (mirrored as ``mirrored``) to ``rows`` (in ``spec``)."""
        watermark, early_spec, early_rows = self._early
        if (watermark, early_spec) != (self.changelog.watermark, mirrored):
            early_rows = lake_rows(self.storage, mirrored, self.changelog, self.mode)
        add_lake_columns(self.storage, spec)
        return diff_rows(spec, early_rows, rows)
