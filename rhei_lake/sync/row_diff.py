"""The change events that turn one set of rows into another, matched by primary key.

Used when capture was blind for a while (a table rebuilt or altered behind
rhei_lake's back): the table as SQLite holds it is diffed against the lake's
current rows. A key only in the lake becomes a ``D`` (with the lake's image),
a key only in SQLite an ``I``, a key in both whose values differ a ``U``; a key
whose row is the same gets no event. Values are compared exactly: NULL equals
NULL, and floats by their bits (so ``-0.0`` differs from ``0.0``, and a NaN
equals the same NaN).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import OP, OP_DELETE, OP_INSERT, OP_UPDATE, TableSpec
from rhei_lake.compaction.versions import key_match
from rhei_lake.errors import StorageError

_LAKE, _SOURCE = "_rhei_lake_rows", "_rhei_source_rows"
_PRESENT = "_rhei_present"  # a column each side has: NULL on the other side's rows of a full outer join
_FLOATS = (pa.float16(), pa.float32(), pa.float64())


def diff_rows(spec: TableSpec, lake: pa.Table, source: pa.Table) -> pa.Table:
    """Events (``spec``'s user columns + ``_rhei_op``) that turn ``lake`` into ``source``: deletes, updates, inserts.

    ``lake`` may lack columns of ``spec`` (they read NULL) or hold others (ignored).
    """
    from datafusion import SessionContext

    lake, source = _comparable(spec, lake), _comparable(spec, source)
    ctx = SessionContext()
    for name, table in ((_LAKE, lake), (_SOURCE, source)):
        ctx.register_record_batches(name, [table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]])
    keys = key_match(spec, _LAKE, _SOURCE)
    others = [c for c in spec.columns if c.name not in spec.primary_key]
    differs = (
        " OR ".join(
            f"({_SOURCE}.{q(_compared(c.name, c.arrow_type))} IS DISTINCT FROM {_LAKE}.{q(_compared(c.name, c.arrow_type))})"
            for c in others
        )
        or "FALSE"
    )
    only_lake, only_source = f"{_SOURCE}.{q(_PRESENT)} IS NULL", f"{_LAKE}.{q(_PRESENT)} IS NULL"
    values = ", ".join(
        f"CASE WHEN {only_lake} THEN {_LAKE}.{q(c)} ELSE {_SOURCE}.{q(c)} END AS {q(c)}" for c in spec.column_names
    )
    op = f"CASE WHEN {only_lake} THEN '{OP_DELETE}' WHEN {only_source} THEN '{OP_INSERT}' ELSE '{OP_UPDATE}' END"
    sql = (
        f"SELECT {values}, {op} AS {q(OP)} FROM {_SOURCE} FULL OUTER JOIN {_LAKE} ON {keys} "
        f"WHERE {only_lake} OR {only_source} OR {differs}"
    )
    try:
        rows = ctx.sql(sql).to_arrow_table()
    except Exception as exc:  # noqa: BLE001 - DataFusion raises plain exceptions
        raise StorageError(f"table {spec.name!r}: could not compare SQLite's rows with the lake's: {exc}") from exc
    schema = pa.schema([*spec.schema, pa.field(OP, pa.string(), nullable=False)])
    events = pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in schema], schema=schema)
    order = {OP_DELETE: 0, OP_UPDATE: 1, OP_INSERT: 2}
    rank = pc.index_in(events.column(OP), pa.array(list(order)))
    return events.take(pc.sort_indices(pa.table({"r": rank}), sort_keys=[("r", "ascending")]))


def _compared(name: str, dtype: pa.DataType) -> str:
    return f"_rhei_bits_{name}" if dtype in _FLOATS else name


def _comparable(spec: TableSpec, table: pa.Table) -> pa.Table:
    """``table`` with exactly ``spec``'s columns and types, plus each float column's bits as an integer."""
    present = set(table.schema.names)
    arrays, fields = [], []
    for column in spec.columns:
        field = pa.field(column.name, column.arrow_type)
        array = (
            table.column(column.name).cast(column.arrow_type)
            if column.name in present
            else pa.nulls(table.num_rows, column.arrow_type)
        )
        arrays.append(array)
        fields.append(field)
        if column.arrow_type in _FLOATS:
            arrays.append(_bits(array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array))
            fields.append(pa.field(_compared(column.name, column.arrow_type), pa.int64()))
    arrays.append(pa.repeat(pa.scalar(True), table.num_rows))
    fields.append(pa.field(_PRESENT, pa.bool_()))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _bits(array: pa.Array) -> pa.Array:
    """A float array's values reinterpreted as integers of the same width (NULLs stay NULL)."""
    width = {2: pa.int16(), 4: pa.int32(), 8: pa.int64()}[array.type.byte_width]
    return array.view(width).cast(pa.int64())
