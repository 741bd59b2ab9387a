"""A table's current rows held in memory, brought forward event batch by event batch.

docs/design.md defines ``t`` as the versions still open: for a key with change
events past some state, its last event decides (gone if a delete, that image
otherwise); every other key keeps its row. :func:`apply_events` computes
exactly that from the previous rows and the new events, copying only the
chunks that hold a changed key, so keeping ``t`` current costs what the new
events touch, not a re-evaluation of the merge-on-read views.

Keys whose equality Arrow's hashing and DataFusion's ``=`` could disagree on
(floating point: ``-0.0``/``0.0``, NaN) are applied by DataFusion itself, with
the SQL of mirror mode's ``t``, so every key type means what the views mean.
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake.catalog import OP, OP_DELETE, TableSpec, int_range
from rhei_lake.storage.changelog import register_arrow

CHUNK_ROWS = 65_536
"""Rows per chunk when the rows are (re)packed; a changed key copies only its chunk."""
_MAX_CHUNKS = 64  # past this many (small) chunks, the rows are repacked once

_HASHABLE = (
    pa.types.is_integer,
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
    pa.types.is_date,
    pa.types.is_timestamp,
    pa.types.is_time,
    pa.types.is_boolean,
    pa.types.is_decimal,
)


def rows_schema(spec: TableSpec) -> pa.Schema:
    """The schema of ``t``: the user columns."""
    return spec.schema


def conform_rows(rows: pa.Table, spec: TableSpec) -> pa.Table:
    """``rows`` (``t`` as a query produced it, view types included) with exactly the schema of ``t``."""
    schema = rows_schema(spec)
    rows = rows.select(schema.names)
    return rows if rows.schema == schema else rows.cast(schema)


def collect_rows(stream, spec: TableSpec) -> pa.Table:
    """``t`` from a DataFusion record batch stream, conformed and packed batch by batch.

    Never holds the stream's whole output beside its converted copy: the peak
    is the rows plus one chunk.
    """
    schema = rows_schema(spec)
    chunks: list[pa.RecordBatch] = []
    pending: list[pa.RecordBatch] = []
    pending_rows = 0

    def pack() -> None:
        nonlocal pending, pending_rows
        if pending:
            table = pa.Table.from_batches(pending).combine_chunks()
            chunks.extend(conform_rows(table, spec).to_batches())
        pending, pending_rows = [], 0

    for batch in stream:
        batch = batch.to_pyarrow()
        if batch.num_rows:
            pending.append(batch)
            pending_rows += batch.num_rows
        if pending_rows >= CHUNK_ROWS:
            pack()
    pack()
    return pa.Table.from_batches(chunks, schema=schema)


def _hashable_key(spec: TableSpec) -> bool:
    return all(any(check(spec.column(key).arrow_type) for check in _HASHABLE) for key in spec.primary_key)


def apply_events(rows: pa.Table, events: pa.Table, spec: TableSpec) -> pa.Table:
    """``rows`` after ``events`` (change-feed rows in ``_rhei_seq`` order): the new current rows."""
    if events.num_rows == 0:
        return rows
    if not _hashable_key(spec):
        return _apply_in_sql(rows, events, spec)
    schema = rows_schema(spec)
    latest = _last_per_key(events, spec)
    kept = _without_keys(rows.to_batches(), latest, spec)
    alive = latest.filter(pc.not_equal(latest.column(OP), OP_DELETE)).select(schema.names).cast(schema)
    batches = kept + alive.to_batches(max_chunksize=CHUNK_ROWS)
    table = pa.Table.from_batches([b for b in batches if b.num_rows], schema=schema)
    if table.num_columns and len(table.column(0).chunks) > _MAX_CHUNKS:
        table = pa.Table.from_batches(table.combine_chunks().to_batches(max_chunksize=CHUNK_ROWS), schema=schema)
    return table


def _last_per_key(events: pa.Table, spec: TableSpec) -> pa.Table:
    """Each key's last event (events are in ``_rhei_seq`` order)."""
    keys = list(spec.primary_key)
    position = "__rhei_position"
    numbered = events.select(keys).append_column(position, int_range(0, events.num_rows))
    last = numbered.group_by(keys, use_threads=False).aggregate([(position, "max")])
    return events.take(last.column(f"{position}_max"))


def _without_keys(batches: list[pa.RecordBatch], latest: pa.Table, spec: TableSpec) -> list[pa.RecordBatch]:
    """The batches without the rows of the keys in ``latest``; untouched batches are kept as they are."""
    keys = list(spec.primary_key)
    out = []
    for batch in batches:
        candidates = None
        for key in keys:
            column = batch.column(key)
            matches = pc.is_in(column, value_set=latest.column(key).combine_chunks().cast(column.type))
            candidates = matches if candidates is None else pc.and_(candidates, matches)
        if not pc.any(candidates).as_py():
            out.append(batch)
            continue
        if len(keys) == 1:
            out.append(batch.filter(pc.invert(candidates)))
            continue
        # Each key column matched some event's value: whether the whole key did, a join says.
        table = pa.Table.from_batches([batch])
        survivors = table.join(latest.select(keys), keys=keys, join_type="left anti", use_threads=False)
        out.extend(survivors.select(batch.schema.names).cast(batch.schema).to_batches())
    return out


def _apply_in_sql(rows: pa.Table, events: pa.Table, spec: TableSpec) -> pa.Table:
    from datafusion import SessionContext

    from rhei_lake.query import views

    ctx = SessionContext()
    register_arrow(ctx, "__rhei_rows", rows)
    register_arrow(ctx, "__rhei_events", events)
    # The rows hold no _rhei_seq to mask a re-added column by: they are masked already, and
    # events newer than them are newer than any column's re-adding.
    unmasked = spec.with_columns(tuple(replace(c, valid_from_seq=0) for c in spec.columns))
    sources = views.ViewSources("__rhei_events", current="__rhei_rows", unfolded="__rhei_events")
    return conform_rows(ctx.sql(views.mirror_current_sql(unmasked, sources)).to_arrow_table(), spec)
