"""A :class:`~rhei_lake.storage.base.Merge` evaluated in Arrow and DataFusion, part by part.

Both tiers merge through this one evaluator, so a merge means the same on
``memory://`` and on Delta tables. It applies a merge to the target one part
at a time (the memory tier passes its whole table, the Delta tier a group of
data files), because a target row's fate depends only on the source rows it
matches: each part comes back with the rows it keeps and its updated rows, and
which files held a matched row. The source rows no part matched are inserted
once at the end (:meth:`MergeEvaluator.inserts`).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake._shared.identifiers import quote_ident
from rhei_lake.catalog import int_range
from rhei_lake.errors import StorageError, raise_storage
from rhei_lake.storage.base import Merge

ROW_ID = "__rhei_rid"
SOURCE_ID = "__rhei_sid"
FILE_ID = "__rhei_file"
"""Optional column of a target part: which data file each row came from (any integer)."""


def run_sql(tables: Mapping[str, pa.Table], sql: str, schema: pa.Schema | None = None) -> pa.Table:
    """Run ``sql`` (written by rhei_lake, never by its caller) over in-memory ``tables``."""
    from datafusion import SessionContext

    ctx = SessionContext()
    for name, table in tables.items():
        batches = table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]
        ctx.register_record_batches(name, [batches])
    try:
        result = ctx.sql(sql).to_arrow_table()
    except Exception as exc:  # never the caller's SQL: the engine writes it
        raise_storage(exc, where=f"evaluating {sql!r}")
    if schema is not None:
        result = conform(result, schema)
    return result


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns of ``schema`` in its order and types (DataFusion may answer with view types)."""
    if not table.num_rows:
        return schema.empty_table()
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def _keep(table: pa.Table, mask: pa.ChunkedArray | pa.Array) -> pa.Table:
    """The rows of ``table`` where ``mask`` holds: ``table`` itself, not a copy, when it holds everywhere.

    A merge that touches every file of a part (the usual case: a fold's keys
    are spread over the whole table) would otherwise copy the part once more.
    """
    mask = mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
    if mask.null_count == 0 and mask.true_count == len(mask):
        return table
    return table.filter(mask)


class MergeEvaluator:
    """Applies one merge of ``source`` to a target given in parts; see the module docstring."""

    def __init__(self, source: pa.Table, merge: Merge, schema: pa.Schema) -> None:
        self.merge = merge
        self.schema = schema
        self.source = source.append_column(SOURCE_ID, int_range(0, source.num_rows))
        self.updated = 0
        self.deleted = 0
        self.inserted = 0
        self._matched_sources: list[pa.Array] = []

    def apply(self, target: pa.Table) -> tuple[pa.Table, set[int]]:
        """The rows of ``target``'s touched files after the merge, and those files' ids.

        A file is touched when one of its rows matched a source row; rows of
        other files are not returned (they stay as they are). Without a
        :data:`FILE_ID` column the whole part counts as one file (id 0).
        """
        merge, schema = self.merge, self.schema
        if FILE_ID not in target.column_names:
            target = target.append_column(FILE_ID, pa.repeat(pa.scalar(0, pa.int64()), target.num_rows))
        t = target.append_column(ROW_ID, int_range(0, target.num_rows))
        quoted = [quote_ident(n) for n in schema.names]
        delete_expr = f"coalesce(({merge.delete_when}), false)" if merge.delete_when else "false"
        update_when = f"coalesce(({merge.update_when}), false)" if merge.update_when else "true"
        update_cols = []
        for name, q in zip(schema.names, quoted, strict=True):
            expr = (merge.update or {}).get(name)
            update_cols.append(f"({expr}) AS {q}" if expr is not None else f"t.{q} AS {q}")
        matched = run_sql(
            {"t": t, "s": self.source},
            f"SELECT t.{ROW_ID}, t.{FILE_ID}, s.{SOURCE_ID}, {delete_expr} AS __del, "
            f"({'true' if merge.update is not None else 'false'} AND {update_when}) AS __upd, "
            + ", ".join(update_cols)
            + f" FROM t JOIN s ON {merge.on}",
        )
        if not matched.num_rows:
            return schema.empty_table(), set()
        rids = matched.column(ROW_ID)
        if len(pc.unique(rids)) != len(rids):
            raise StorageError("merge: a target row matched more than one source row")
        self._matched_sources.append(matched.column(SOURCE_ID).combine_chunks())
        deleted = matched.column("__del")
        updated = pc.and_(pc.invert(deleted), matched.column("__upd"))
        self.deleted += int(pc.sum(deleted).as_py() or 0)
        self.updated += int(pc.sum(updated).as_py() or 0)

        touched = pc.unique(matched.column(FILE_ID))
        in_touched = _keep(t, pc.is_in(t.column(FILE_ID), value_set=touched))
        replaced = matched.filter(pc.or_(deleted, updated)).column(ROW_ID)
        kept = _keep(in_touched, pc.invert(pc.is_in(in_touched.column(ROW_ID), value_set=replaced)))
        new_versions = matched.filter(updated)
        rows = pa.concat_tables([conform(kept, schema), conform(new_versions, schema)])
        return rows, set(touched.to_pylist())

    def inserts(self) -> pa.Table:
        """The rows to insert: source rows that matched no target row (where ``insert_when`` holds)."""
        merge, schema = self.merge, self.schema
        if merge.insert is None:
            return schema.empty_table()
        unmatched = self.source
        if self._matched_sources:
            seen = pa.chunked_array(self._matched_sources, pa.int64()).combine_chunks()
            unmatched = unmatched.filter(pc.invert(pc.is_in(unmatched.column(SOURCE_ID), value_set=seen)))
        where = f"WHERE {merge.insert_when}" if merge.insert_when else ""
        cols = ", ".join(
            f"({merge.insert[name]}) AS {quote_ident(name)}" if name in merge.insert else f"NULL AS {quote_ident(name)}"
            for name in schema.names
        )
        rows = run_sql({"s": unmatched}, f"SELECT {cols} FROM s {where}", schema)
        self.inserted += rows.num_rows
        return rows
