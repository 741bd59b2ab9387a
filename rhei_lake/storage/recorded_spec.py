"""The spec and sync mode a table's changelog records in its Delta metadata, and whether a source still fits them.

Every layer that opens a table reads these (sync when it follows a source,
compaction and the query layer when they find the tables of a lake), so they
live with the storage they describe.
"""

from __future__ import annotations

from rhei_lake.catalog import TableSpec
from rhei_lake.errors import SchemaError, WatermarkError
from rhei_lake.storage.lake_storage import LakeStorage

SPEC_PROPERTY = "rhei.table"
MODE_PROPERTY = "rhei.sync_mode"
SYNC_MODES = ("temporal", "mirror")


def read_spec(storage: LakeStorage, table: str) -> TableSpec:
    """The spec recorded in ``table``'s changelog metadata."""
    props = storage.table_store(table, "changes").properties()
    if SPEC_PROPERTY not in props:
        raise SchemaError(f"{table!r} in {storage.location.url} is a Delta table rhei_lake did not write")
    return TableSpec.from_json(props[SPEC_PROPERTY])


def read_mode(storage: LakeStorage, table: str) -> str:
    """How ``table`` is kept: ``temporal`` (history) or ``mirror`` (current rows only)."""
    return _mode(storage.table_store(table, "changes").properties(), table)


def _mode(properties: dict[str, str], table: str) -> str:
    mode = properties.get(MODE_PROPERTY, "temporal")  # lakes written before the property existed
    if mode not in SYNC_MODES:
        raise SchemaError(f"table {table!r} records an unknown sync mode {mode!r}; upgrade rhei_lake")
    return mode


def check_compatible(stored: TableSpec, wanted: TableSpec, url: str) -> None:
    """Raise unless a source whose table is ``wanted`` may go on writing the changelog that records ``stored``."""
    if stored.source_id and wanted.source_id and stored.source_id != wanted.source_id:
        raise WatermarkError(
            f"table {wanted.name!r} in {url} was mirrored from a different database "
            f"(source id {stored.source_id}, this one is {wanted.source_id}); "
            "use a new storage location for this database"
        )
    # In trigger mode the source's registry is the authority on columns (only add_column/drop_column
    # change it), so a difference is an evolution whose lake part did not finish: open_changelog completes it.
    evolved = (
        wanted.source == stored.source == "sqlite-trigger"
        and bool(stored.source_id)
        and stored.source_id == wanted.source_id
        and stored.name == wanted.name
    )
    if stored.primary_key != wanted.primary_key or (stored.columns != wanted.columns and not evolved):
        way = (
            "evolve it with add_column/drop_column or use a new storage location"
            if wanted.source == "sqlite-trigger"
            else "mirror it to a new storage location (a polled table's columns are fixed when it is first synced)"
        )
        raise SchemaError(
            f"table {wanted.name!r} in {url} has columns {stored.column_names} and key {list(stored.primary_key)}, "
            f"but the source now has {wanted.column_names} and key {list(wanted.primary_key)}; {way}"
        )
