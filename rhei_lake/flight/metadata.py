"""The lake as Flight SQL metadata: catalogs, schemas, tables, primary keys and server info.

Tools browse before they query. Every mirrored table ``t`` shows up as three
relations of DataFusion's default catalog and schema (``datafusion.public``,
so the qualified names tools generate resolve): ``t`` (type ``TABLE``, current
rows, with the source's primary key) and the views ``t_history`` and
``t_changes``. Column metadata carries the source's declared SQL type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

import rhei_lake
from rhei_lake.catalog import TableSpec
from rhei_lake.relation_names import name_clashes
from rhei_lake.flight import flight_sql_pb2 as pb
from rhei_lake.flight import protocol

CATALOG = "datafusion"
DB_SCHEMA = "public"
TABLE = "TABLE"
VIEW = "VIEW"
TABLE_TYPES = (TABLE, VIEW)
SEARCH_ESCAPE = "\\"


@dataclass(frozen=True)
class Relation:
    """One queryable name: a mirrored table's current rows, its history or its change feed."""

    name: str
    table_type: str
    schema: pa.Schema
    primary_key: tuple[str, ...] = ()


def relations(spec: TableSpec) -> list[Relation]:
    """The three relations of a mirrored table, with column metadata for tools."""
    declared = {c.name: c.declared_type for c in spec.columns}
    out = []
    for name, table_type, schema, key in (
        (spec.name, TABLE, spec.schema, spec.primary_key),
        (f"{spec.name}_history", VIEW, spec.history_schema, ()),
        (f"{spec.name}_changes", VIEW, spec.changes_schema, ()),
    ):
        fields = [
            f.with_metadata(
                {
                    "ARROW:FLIGHT:SQL:CATALOG_NAME": CATALOG,
                    "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME": DB_SCHEMA,
                    "ARROW:FLIGHT:SQL:TABLE_NAME": name,
                    "ARROW:FLIGHT:SQL:TYPE_NAME": declared.get(f.name) or str(f.type),
                    "ARROW:FLIGHT:SQL:IS_READ_ONLY": "1",
                    "ARROW:FLIGHT:SQL:IS_SEARCHABLE": "1",
                    "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE": "1" if pa.types.is_string(f.type) else "0",
                    "ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT": "0",
                }
            )
            for f in schema
        ]
        out.append(Relation(name, table_type, pa.schema(fields), tuple(key)))
    return out


def like_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """A SQL LIKE pattern (``%``, ``_``, escaped by a backslash) as a regex; None matches all."""
    if pattern is None:
        return None
    parts, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == SEARCH_ESCAPE and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def _matches(pattern: re.Pattern[str] | None, value: str) -> bool:
    return pattern is None or pattern.fullmatch(value) is not None


def _optional(message, name: str) -> str | None:
    return getattr(message, name) if message.HasField(name) else None


class LakeMetadata:
    """Answers the metadata commands from a lake's catalog."""

    def __init__(self, lake: rhei_lake.Lake) -> None:
        self._lake = lake

    def relations(self) -> list[Relation]:
        self._lake.refresh()
        names = self._lake.tables()
        ambiguous = {clash.name for clash in name_clashes(names)}  # answer to no query: not listed either
        out = [r for name in names for r in relations(self._lake.table_spec(name)) if r.name.lower() not in ambiguous]
        return sorted(out, key=lambda r: r.name)

    def answer(self, cmd) -> pa.Table:
        """The result of a metadata command (see :func:`result_schema` for which)."""
        return getattr(self, _COMMANDS[type(cmd)][1])(cmd)

    def catalogs(self, cmd: pb.CommandGetCatalogs) -> pa.Table:
        return pa.table({"catalog_name": [CATALOG]}, schema=protocol.CATALOGS_SCHEMA)

    def db_schemas(self, cmd: pb.CommandGetDbSchemas) -> pa.Table:
        rows = [(CATALOG, DB_SCHEMA)] if self._in_schema(cmd, "db_schema_filter_pattern") else []
        return _table(protocol.DB_SCHEMAS_SCHEMA, rows)

    def _in_schema(self, cmd, schema_field: str) -> bool:
        catalog = _optional(cmd, "catalog")
        if catalog is not None and catalog != CATALOG:
            return False
        return _matches(like_pattern(_optional(cmd, schema_field)), DB_SCHEMA)

    def tables(self, cmd: pb.CommandGetTables) -> pa.Table:
        rows = []
        if self._in_schema(cmd, "db_schema_filter_pattern"):
            name_pattern = like_pattern(_optional(cmd, "table_name_filter_pattern"))
            types = {t.upper() for t in cmd.table_types}
            for rel in self.relations():
                if _matches(name_pattern, rel.name) and (not types or rel.table_type in types):
                    row = (CATALOG, DB_SCHEMA, rel.name, rel.table_type)
                    rows.append(row + (protocol.serialize_schema(rel.schema),) if cmd.include_schema else row)
        schema = protocol.TABLES_WITH_SCHEMA_SCHEMA if cmd.include_schema else protocol.TABLES_SCHEMA
        return _table(schema, rows)

    def table_types(self, cmd: pb.CommandGetTableTypes) -> pa.Table:
        return pa.table({"table_type": list(TABLE_TYPES)}, schema=protocol.TABLE_TYPES_SCHEMA)

    def primary_keys(self, cmd: pb.CommandGetPrimaryKeys) -> pa.Table:
        rows = []
        catalog, db_schema = _optional(cmd, "catalog"), _optional(cmd, "db_schema")
        if catalog in (None, CATALOG) and db_schema in (None, DB_SCHEMA):
            for rel in self.relations():
                if rel.name == cmd.table:
                    rows += [
                        (CATALOG, DB_SCHEMA, rel.name, column, seq, f"{rel.name}_pkey")
                        for seq, column in enumerate(rel.primary_key, start=1)
                    ]
        return _table(protocol.PRIMARY_KEYS_SCHEMA, rows)

    def foreign_keys(self, cmd) -> pa.Table:
        """Imported keys, exported keys and cross references: the lake has no foreign keys."""
        return protocol.FOREIGN_KEYS_SCHEMA.empty_table()

    def xdbc_type_info(self, cmd: pb.CommandGetXdbcTypeInfo) -> pa.Table:
        """No type catalogue is offered; tools fall back to the column metadata."""
        return protocol.XDBC_TYPE_INFO_SCHEMA.empty_table()

    def sql_info(self, cmd: pb.CommandGetSqlInfo) -> pa.Table:
        wanted = set(cmd.info)
        items = sorted((k, v) for k, v in server_info().items() if not wanted or k in wanted)
        return sql_info_table(items)


_COMMANDS: dict[type, tuple[pa.Schema | None, str]] = {
    pb.CommandGetCatalogs: (protocol.CATALOGS_SCHEMA, "catalogs"),
    pb.CommandGetDbSchemas: (protocol.DB_SCHEMAS_SCHEMA, "db_schemas"),
    pb.CommandGetTables: (None, "tables"),  # the schema depends on include_schema
    pb.CommandGetTableTypes: (protocol.TABLE_TYPES_SCHEMA, "table_types"),
    pb.CommandGetPrimaryKeys: (protocol.PRIMARY_KEYS_SCHEMA, "primary_keys"),
    pb.CommandGetSqlInfo: (protocol.SQL_INFO_SCHEMA, "sql_info"),
    pb.CommandGetImportedKeys: (protocol.FOREIGN_KEYS_SCHEMA, "foreign_keys"),
    pb.CommandGetExportedKeys: (protocol.FOREIGN_KEYS_SCHEMA, "foreign_keys"),
    pb.CommandGetCrossReference: (protocol.FOREIGN_KEYS_SCHEMA, "foreign_keys"),
    pb.CommandGetXdbcTypeInfo: (protocol.XDBC_TYPE_INFO_SCHEMA, "xdbc_type_info"),
}


def result_schema(cmd) -> pa.Schema | None:
    """The result schema of a metadata command; None for any other message."""
    if isinstance(cmd, pb.CommandGetTables):
        return protocol.TABLES_WITH_SCHEMA_SCHEMA if cmd.include_schema else protocol.TABLES_SCHEMA
    entry = _COMMANDS.get(type(cmd))
    return entry[0] if entry else None


def _table(schema: pa.Schema, rows: Iterable[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) or [()] * len(schema)
    return pa.table([pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)], schema=schema)


class Int32(int):
    """An info value sent as ``int32_bitmask`` (an ordinal or a bitmask), not a bigint."""


def server_info() -> dict[int, object]:
    """What ``GetSqlInfo`` reports about this server, by ``SqlInfo`` id."""
    info = pb.SqlInfo.Value
    case = pb.SqlSupportedCaseSensitivity.Value
    subqueries = sum(
        1 << pb.SqlSupportedSubqueries.Value(n)
        for n in ("SQL_SUBQUERIES_IN_COMPARISONS", "SQL_SUBQUERIES_IN_EXISTS", "SQL_SUBQUERIES_IN_INS")
    )
    return {
        info("FLIGHT_SQL_SERVER_NAME"): "rhei_lake",
        info("FLIGHT_SQL_SERVER_VERSION"): rhei_lake.__version__,
        info("FLIGHT_SQL_SERVER_ARROW_VERSION"): pa.__version__,
        info("FLIGHT_SQL_SERVER_READ_ONLY"): True,
        info("FLIGHT_SQL_SERVER_SQL"): True,
        info("FLIGHT_SQL_SERVER_SUBSTRAIT"): False,
        info("FLIGHT_SQL_SERVER_TRANSACTION"): Int32(
            pb.SqlSupportedTransaction.Value("SQL_SUPPORTED_TRANSACTION_NONE")
        ),
        info("FLIGHT_SQL_SERVER_CANCEL"): False,
        info("FLIGHT_SQL_SERVER_BULK_INGESTION"): False,
        info("SQL_DDL_CATALOG"): False,
        info("SQL_DDL_SCHEMA"): False,
        info("SQL_DDL_TABLE"): False,
        info("SQL_IDENTIFIER_CASE"): Int32(case("SQL_CASE_SENSITIVITY_LOWERCASE")),
        info("SQL_IDENTIFIER_QUOTE_CHAR"): '"',
        info("SQL_ALL_TABLES_ARE_SELECTABLE"): True,
        info("SQL_NULL_ORDERING"): Int32(pb.SqlNullOrdering.Value("SQL_NULLS_SORTED_HIGH")),
        info("SQL_SEARCH_STRING_ESCAPE"): SEARCH_ESCAPE,
        info("SQL_SUPPORTS_COLUMN_ALIASING"): True,
        info("SQL_NULL_PLUS_NULL_IS_NULL"): True,
        info("SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY"): True,
        info("SQL_SUPPORTED_GROUP_BY"): Int32(0b11),
        info("SQL_OUTER_JOINS_SUPPORT_LEVEL"): Int32(pb.SqlOuterJoinsSupportLevel.Value("SQL_FULL_OUTER_JOINS")),
        info("SQL_SCHEMA_TERM"): "schema",
        info("SQL_CATALOG_TERM"): "catalog",
        info("SQL_CATALOG_AT_START"): True,
        info("SQL_SELECT_FOR_UPDATE_SUPPORTED"): False,
        info("SQL_STORED_PROCEDURES_SUPPORTED"): False,
        info("SQL_SUPPORTED_SUBQUERIES"): Int32(subqueries),
        info("SQL_CORRELATED_SUBQUERIES_SUPPORTED"): True,
        info("SQL_SUPPORTED_UNIONS"): Int32(0b11),
        info("SQL_TRANSACTIONS_SUPPORTED"): False,
        info("SQL_BATCH_UPDATES_SUPPORTED"): False,
        info("SQL_SAVEPOINTS_SUPPORTED"): False,
        info("SQL_NAMED_PARAMETERS_SUPPORTED"): True,
    }


_STRING, _BOOL, _BIGINT, _INT32, _STRING_LIST = 0, 1, 2, 3, 4


def sql_info_table(items: list[tuple[int, object]]) -> pa.Table:
    """``(info id, value)`` pairs as the ``GetSqlInfo`` result (a dense union of value kinds)."""
    children: dict[int, list] = {code: [] for code in range(6)}
    type_ids, offsets = [], []
    for _key, value in items:
        if isinstance(value, bool):
            code = _BOOL
        elif isinstance(value, Int32):
            code = _INT32
        elif isinstance(value, int):
            code = _BIGINT
        elif isinstance(value, str):
            code = _STRING
        else:
            code = _STRING_LIST
        type_ids.append(code)
        offsets.append(len(children[code]))
        children[code].append(value)
    child_arrays = [pa.array(children[code], type=protocol.SQL_INFO_VALUE_TYPE.field(code).type) for code in range(6)]
    values = pa.Array.from_buffers(
        protocol.SQL_INFO_VALUE_TYPE,
        len(items),
        [None, pa.array(type_ids, pa.int8()).buffers()[1], pa.array(offsets, pa.int32()).buffers()[1]],
        children=child_arrays,
    )
    names = pa.array([k for k, _v in items], pa.uint32())
    return pa.Table.from_arrays([names, values], schema=protocol.SQL_INFO_SCHEMA)
