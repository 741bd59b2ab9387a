"""Arrow types as rhei_lake hands them out: ``string``/``binary``, whatever view types a scan produced."""

from __future__ import annotations

import pyarrow as pa

_VIEW_TYPES = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with ``string_view``/``binary_view`` fields as ``string``/``binary``."""
    fields = [
        pa.field(f.name, _VIEW_TYPES[f.type], f.nullable, f.metadata) if f.type in _VIEW_TYPES else f for f in schema
    ]
    return pa.schema(fields, metadata=schema.metadata)


def normalize_types(table: pa.Table) -> pa.Table:
    """Results use ``string``/``binary`` whatever view types the scan produced."""
    schema = normalize_schema(table.schema)
    if schema.equals(table.schema):
        return table
    return table.cast(schema)
