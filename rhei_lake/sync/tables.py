"""Creating and opening a table's changelog in the lake, with its spec as metadata."""

from __future__ import annotations

import pyarrow as pa

from rhei_lake import faults
from rhei_lake.catalog import TableSpec
from rhei_lake.config import LakeConfig
from rhei_lake.errors import CommitConflictError, ConfigError, SchemaError
from rhei_lake.storage.changelog import SYNCED_APP_ID, Changelog
from rhei_lake.storage.lake_storage import TABLE_KINDS, LakeStorage
from rhei_lake.storage.recorded_spec import MODE_PROPERTY as MODE_PROPERTY
from rhei_lake.storage.recorded_spec import SPEC_PROPERTY as SPEC_PROPERTY
from rhei_lake.storage.recorded_spec import SYNC_MODES as SYNC_MODES
from rhei_lake.storage.recorded_spec import check_compatible as check_compatible
from rhei_lake.storage.recorded_spec import read_mode as read_mode
from rhei_lake.storage.recorded_spec import read_spec as read_spec


def open_changelog(storage: LakeStorage, spec: TableSpec, config: LakeConfig) -> tuple[Changelog, bool]:
    """The loaded changelog of ``spec``, created if missing; also whether it was just created.

    An existing changelog must come from the same source and have the same
    columns and key, or this raises rather than mixing two tables' events.
    """
    store = storage.table_store(spec.name, "changes")
    created = False
    if not store.exists():
        try:
            store.create(
                spec.changes_schema,
                properties={SPEC_PROPERTY: spec.to_json(), MODE_PROPERTY: config.sync_mode},
            )
            created = True
        except CommitConflictError:
            pass  # created concurrently by another process: check it below
    if not created:
        stored = read_spec(storage, spec.name)
        check_compatible(stored, spec, storage.location.url)
        stored_mode = read_mode(storage, spec.name)
        if stored_mode != config.sync_mode:
            raise ConfigError(
                f"sync_mode: table {spec.name!r} in {storage.location.url} is kept in {stored_mode} mode; "
                f"open the lake with sync_mode={stored_mode!r} or use a new storage location"
            )
        if stored.columns != spec.columns:
            apply_spec(storage, spec)  # an add_column/drop_column whose lake part did not finish
    changelog = _loaded(storage, spec.name, config)
    return changelog, created


def held_events(storage: LakeStorage, name: str, config: LakeConfig) -> int:
    """The newest event ``name``'s changelog in the lake holds (0 if it has none, or no event).

    Read without a spec: the changelog may have been made for other columns or types
    (a table registered, unregistered and now registered again).
    """
    if not storage.table_store(name, "changes").exists():
        return 0
    return _loaded(storage, name, config).watermark


def _loaded(storage: LakeStorage, name: str, config: LakeConfig) -> Changelog:
    changelog = storage.changelog(
        name,
        flush_segments=config.tail_flush_segments,
        flush_rows=config.tail_flush_rows,
        flush_interval=config.tail_flush_interval,
    )
    changelog.load()
    return changelog


def reset_unsynced(storage: LakeStorage, spec: TableSpec, config: LakeConfig) -> None:
    """Give ``spec``'s changelog ``spec``'s columns when it holds nothing yet and was made for other types.

    A registration whose snapshot was refused (a value that does not fit),
    registered again with ``types=``: its changelog was created with the old
    types and never received an event. One with events is left alone (and
    :func:`open_changelog` says what does not match).
    """
    store = storage.table_store(spec.name, "changes")
    if not store.exists():
        return
    stored = read_spec(storage, spec.name)
    if stored.columns == spec.columns and stored.primary_key == spec.primary_key:
        return
    if not stored.source_id or stored.source_id != spec.source_id:
        return
    if store.app_version(SYNCED_APP_ID) is not None or store.stats().files:
        return
    tail = storage.tail(spec.name)
    if tail is not None and tail.starts():
        return
    store.reset_empty(spec.changes_schema, properties={SPEC_PROPERTY: spec.to_json(), MODE_PROPERTY: config.sync_mode})


def apply_spec(storage: LakeStorage, spec: TableSpec) -> None:
    """Make the lake's tables of ``spec.name`` carry ``spec`` (idempotent; schema evolution's lake part).

    Every existing Delta table of the table (``changes``, ``history``,
    ``current``) gains the spec's columns it lacks; columns the spec no longer
    has stay in storage, keeping the values written before they were dropped
    (new rows hold NULL there). Then the ``rhei.table`` property records the
    spec, ``changes`` last, since readers take the spec from it.
    """
    stores = [s for s in (storage.table_store(spec.name, kind) for kind in reversed(TABLE_KINDS)) if s.exists()]
    for store in stores:
        missing = missing_fields(store.schema(), spec, store.uri)
        if missing:
            store.add_columns(missing)
    faults.point("schema.mid_apply_spec")
    text = spec.to_json()
    for store in stores:
        if store.properties().get(SPEC_PROPERTY) != text:
            store.set_properties({SPEC_PROPERTY: text})


def missing_fields(schema: pa.Schema, spec: TableSpec, where: str) -> list[pa.Field]:
    """The user columns of ``spec`` that ``schema`` lacks; SchemaError if one is there with another type."""
    present = {name.lower(): schema.field(name) for name in schema.names}
    missing = []
    for column in spec.columns:
        existing = present.get(column.name.lower())
        if existing is None:
            missing.append(pa.field(column.name, column.arrow_type, nullable=True))
        elif existing.name != column.name or existing.type != column.arrow_type:
            raise SchemaError(
                f"{where} already has a column {existing.name!r} of type {existing.type} (kept from before it was "
                f"dropped), so {column.name!r} cannot come back as {column.arrow_type}; choose another name"
            )
    return missing
