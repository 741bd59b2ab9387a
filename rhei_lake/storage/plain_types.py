"""Parquet every reader can read: plain Arrow types in every data file of a lake's Delta tables.

delta-rs 1.6.6 scans tables with DataFusion's view types, and its MERGE, DELETE
and UPDATE write the files they rewrite with them: the Arrow schema embedded in
those files says ``string_view`` / ``binary_view``, while the Delta schema says
``string`` / ``binary``. Readers that trust the embedded schema refuse such
files (Daft 0.7: ``Unsupported Arrow DataType: Utf8View``). Its plain appends,
predicate overwrites and ``optimize`` write the table's own (plain) types.

So after a rewrite, the files it added that carry view types are rewritten once
more through a predicate overwrite: ``_rhei_seq IN (one value per such file)``
with exactly the rows that predicate matches as the data. delta-rs rewrites
every file holding a matching row with plain types and adds the rows back:
the table's rows are unchanged, one commit, and a reader of any snapshot sees
either the old files or the new ones. The rows are read with the same
predicate from the same snapshot, so the commit keeps the data as it is even
if ``_rhei_seq`` were not unique.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from rhei_lake._shared.identifiers import quote_ident
from rhei_lake.catalog import SEQ

if TYPE_CHECKING:
    from deltalake import DeltaTable

log = logging.getLogger("rhei_lake.storage")

PLAIN_TYPES_KEY = "rhei.plain_types"
"""Commit metadata of a rewrite to plain types: how many files it rewrote."""

_VIEW_TYPES = (pa.string_view(), pa.binary_view())


def has_view_types(schema: pa.Schema) -> bool:
    """Whether any field of ``schema`` (nested ones included) is a view type."""
    return any(_is_view(field.type) for field in schema)


def _is_view(data_type: pa.DataType) -> bool:
    if data_type in _VIEW_TYPES or pa.types.is_list_view(data_type) or pa.types.is_large_list_view(data_type):
        return True
    return any(_is_view(data_type.field(i).type) for i in range(data_type.num_fields))


def file_seq_minimums(dt: DeltaTable) -> dict[str, int | None]:
    """Each data file of the loaded snapshot (path relative to the table), with its lowest ``_rhei_seq``."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return {}
    column = f"min.{SEQ}"
    minimums = actions.column(column).to_pylist() if column in actions.column_names else [None] * actions.num_rows
    return dict(zip(actions.column("path").to_pylist(), minimums, strict=True))


class PlainTypes:
    """Finds the data files of one Delta table that carry view types, and rewrites them plain.

    Files are immutable, so a file once seen to be plain is never read again.
    """

    def __init__(self, uri: str, options: Mapping[str, str] | None) -> None:
        self.uri = uri
        self._options = dict(options or {})
        self._plain: set[str] = set()
        self._fs: Any = None

    def _filesystem(self) -> Any:
        if self._fs is None:
            import pyarrow.fs as pafs
            from deltalake.fs import DeltaStorageHandler

            self._fs = pafs.PyFileSystem(DeltaStorageHandler(self.uri, self._options or None))
        return self._fs

    def view_typed(self, paths: Iterable[str]) -> list[str]:
        """Those of ``paths`` (relative to the table) whose embedded Arrow schema has view types."""
        import pyarrow.parquet as pq

        found = []
        for path in paths:
            if path in self._plain:
                continue
            with self._filesystem().open_input_file(path) as handle:
                schema = pq.read_schema(handle)
            if has_view_types(schema):
                found.append(path)
            else:
                self._plain.add(path)
        return found

    def rewrite(
        self, dt: DeltaTable, paths: Iterable[str], *, commit_properties: Callable[[dict[str, str]], Any]
    ) -> int:
        """Rewrite the view-typed files among ``paths`` with plain types, in one commit; returns how many.

        ``commit_properties(metadata)`` gives the commit's ``CommitProperties``.
        """
        minimums = file_seq_minimums(dt)
        doomed = self.view_typed(p for p in paths if p in minimums)
        seqs = sorted({minimums[p] for p in doomed if minimums[p] is not None})
        if len(seqs) < len(doomed):
            log.warning("%s: %d view-typed files without _rhei_seq statistics stay as they are", self.uri,
                        len(doomed) - len(seqs))
        if not seqs:
            return 0
        import pyarrow.compute as pc
        from deltalake import write_deltalake

        schema = pa.schema(dt.schema().to_arrow())
        rows = dt.to_pyarrow_dataset().to_table(filter=pc.field(SEQ).isin(pa.array(seqs, pa.int64())))
        rows = pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in schema], schema=schema)
        predicate = f"{quote_ident(SEQ)} IN ({', '.join(str(int(s)) for s in seqs)})"
        write_deltalake(
            dt, rows, mode="overwrite", predicate=predicate,
            commit_properties=commit_properties({PLAIN_TYPES_KEY: str(len(doomed))}),
        )
        log.info("%s: rewrote %d files written with view types", self.uri, len(doomed))
        return len(doomed)
