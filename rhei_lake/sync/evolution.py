"""Schema evolution of a mirrored table: add and drop columns in SQLite, its triggers and the lake.

What a change means for the data:

* **add_column**: SQLite gains a nullable column (no default: existing rows
  read NULL in SQLite and in the lake alike); each of the table's Delta tables
  gains it; older versions and events read NULL in it.
* **drop_column**: SQLite loses the column and the views stop showing it. The
  Delta tables keep it in storage, with the values written before the drop
  (rows written after it hold NULL), so nothing that was committed is lost and
  any Delta reader can still see them. A column added again later under the
  same name (and type) reads NULL in every row, version and event older than
  its addition, as SQLite's re-added column does: the spec records the
  sequence from which a column's values count (``Column.valid_from_seq``)
  and the views mask older ones.
* **renames** are refused: a rename cannot be told apart from a drop and an
  add in the change feed, and silently doing either would lose meaning.

The change runs under the source's write lock after every captured event was
committed (see :meth:`~rhei_lake.sync.trigger_sync.TriggerSync.alter`), so no
event captured with the old column layout is ever decoded with the new one.
"""

from __future__ import annotations

import re

from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.capture.types import make_column
from rhei_lake.catalog import RESERVED_PREFIX, TableSpec
from rhei_lake.errors import SchemaError
from rhei_lake.storage.lake_storage import TABLE_KINDS
from rhei_lake.sync.tables import missing_fields
from rhei_lake.sync.trigger_sync import TriggerSync

_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?: +[A-Za-z_][A-Za-z0-9_]*)*(?: *\( *\d+ *(?:, *\d+ *)?\))?$")


def add_column(sync: TriggerSync, table: str, column: str, sql_type: str) -> TableSpec:
    """Add ``column`` of declared type ``sql_type`` to mirrored ``table``; returns the new spec."""
    spec = _spec(sync, table)
    _check_new_name(spec, column)
    if not isinstance(sql_type, str) or not _TYPE_NAME.match(sql_type.strip()):
        raise SchemaError(
            f"add_column: {sql_type!r} is not a type name (such as TEXT, INTEGER, REAL, DECIMAL(10,2)); "
            "defaults and constraints are not supported, since existing rows must read NULL in SQLite and "
            "in the lake alike"
        )
    sql_type = sql_type.strip()
    new_column = make_column(column, sql_type, table=spec.name)
    new_spec = spec.with_columns(spec.columns + (new_column,))
    stores = _existing_stores(sync, spec.name)
    for store in stores:  # refuse before touching anything if the lake kept an incompatible column
        missing_fields(store.schema(), new_spec, store.uri)

    def prepare_lake() -> None:
        for store in stores:
            missing = missing_fields(store.schema(), new_spec, store.uri)
            if missing:
                store.add_columns(missing)

    ddl = f"ALTER TABLE {quote_ident(spec.name)} ADD COLUMN {quote_ident(column)} {sql_type}"
    sync.alter(spec.name, new_spec, [ddl], prepare_lake=prepare_lake)
    return sync.source.registrations()[spec.name].spec  # the column is valid from the change's sequence


def drop_column(sync: TriggerSync, table: str, column: str) -> TableSpec:
    """Drop ``column`` from mirrored ``table``; returns the new spec (its lake values stay in storage)."""
    spec = _spec(sync, table)
    matches = [c.name for c in spec.columns if c.name.lower() == str(column).lower()]
    if not matches:
        raise SchemaError(f"table {spec.name!r} has no column {column!r}; its columns are {spec.column_names}")
    name = matches[0]
    if name in spec.primary_key:
        raise SchemaError(f"cannot drop {name!r}: it is part of the primary key of {spec.name!r}")
    new_spec = spec.with_columns(tuple(c for c in spec.columns if c.name != name))
    ddl = f"ALTER TABLE {quote_ident(spec.name)} DROP COLUMN {quote_ident(name)}"
    sync.alter(spec.name, new_spec, [ddl], prepare_lake=lambda: None)
    return new_spec


def rename_column(sync: TriggerSync, table: str, column: str, new_name: str) -> TableSpec:
    """Refused: see the module notes."""
    spec = _spec(sync, table)
    raise SchemaError(
        f"renaming {spec.name}.{column} is not supported: the lake cannot tell a rename from a dropped and an "
        "added column. Add the new column, copy the values with execute(), then drop the old one"
    )


def _spec(sync: TriggerSync, table: str) -> TableSpec:
    registrations = sync.source.registrations()
    for name, registration in registrations.items():
        if name == table or name.lower() == str(table).lower():
            if not registration.ready:
                raise SchemaError(
                    f"table {name!r} is still being registered (its snapshot has not landed); finish that first "
                    f"with lake.register_table({name!r})"
                )
            sync.follow_schema(name)  # start from what SQLite has, should it have changed behind the lake's back
            return sync.source.registrations()[name].spec
    raise SchemaError(f"no mirrored table {table!r}; known: {sorted(registrations) or 'none'}")


def _check_new_name(spec: TableSpec, column: str) -> None:
    if not isinstance(column, str) or not column.strip() or "\x00" in column:
        raise SchemaError("add_column: the column name must be a non-empty string")
    if column.lower().startswith(RESERVED_PREFIX):
        raise SchemaError(f"add_column: {column!r} uses the reserved prefix {RESERVED_PREFIX!r}")
    if any(c.name.lower() == column.lower() for c in spec.columns):
        raise SchemaError(f"table {spec.name!r} already has a column {column!r}")


def _existing_stores(sync: TriggerSync, table: str) -> list:
    stores = (sync.storage.table_store(table, kind) for kind in TABLE_KINDS)
    return [store for store in stores if store.exists()]
