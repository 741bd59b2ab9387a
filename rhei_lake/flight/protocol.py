"""Flight SQL on the wire: commands packed in ``google.protobuf.Any``, action names, result schemas.

Clients put a Flight SQL message, packed in an ``Any``, into a
``FlightDescriptor.cmd``, a ``Ticket`` or an ``Action`` body; :func:`unpack`
turns those bytes back into the message. The result schemas are the ones the
protocol fixes (Arrow's ``FlightSql.proto``, and the reference clients check them field
by field, nullability included).
"""

from __future__ import annotations

import pyarrow as pa
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from rhei_lake.flight import flight_sql_pb2 as pb

#: Every Flight SQL message a client may send, by its fully qualified name.
_MESSAGES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        pb.CommandStatementQuery,
        pb.CommandStatementUpdate,
        pb.CommandStatementSubstraitPlan,
        pb.CommandStatementIngest,
        pb.CommandPreparedStatementQuery,
        pb.CommandPreparedStatementUpdate,
        pb.CommandGetCatalogs,
        pb.CommandGetDbSchemas,
        pb.CommandGetTables,
        pb.CommandGetTableTypes,
        pb.CommandGetSqlInfo,
        pb.CommandGetPrimaryKeys,
        pb.CommandGetExportedKeys,
        pb.CommandGetImportedKeys,
        pb.CommandGetCrossReference,
        pb.CommandGetXdbcTypeInfo,
        pb.TicketStatementQuery,
        pb.ActionCreatePreparedStatementRequest,
        pb.ActionCreatePreparedSubstraitPlanRequest,
        pb.ActionClosePreparedStatementRequest,
        pb.ActionBeginTransactionRequest,
        pb.ActionEndTransactionRequest,
        pb.ActionBeginSavepointRequest,
        pb.ActionEndSavepointRequest,
        pb.ActionCancelQueryRequest,
    )
}

_TYPE_PREFIX = "type.googleapis.com/"

# Action types (DoAction) of the Flight SQL protocol.
CREATE_PREPARED_STATEMENT = "CreatePreparedStatement"
CLOSE_PREPARED_STATEMENT = "ClosePreparedStatement"
CREATE_PREPARED_SUBSTRAIT_PLAN = "CreatePreparedSubstraitPlan"
BEGIN_TRANSACTION = "BeginTransaction"
END_TRANSACTION = "EndTransaction"
BEGIN_SAVEPOINT = "BeginSavepoint"
END_SAVEPOINT = "EndSavepoint"
CANCEL_QUERY = "CancelQuery"


class ProtocolError(ValueError):
    """Bytes that are not a Flight SQL message this server knows."""


def pack(message: Message) -> bytes:
    """``message`` packed in an ``Any`` and serialized, as Flight SQL carries it."""
    envelope = any_pb2.Any()
    envelope.Pack(message)
    return envelope.SerializeToString()


def unpack(data: bytes) -> Message:
    """The Flight SQL message in serialized ``Any`` bytes."""
    envelope = any_pb2.Any()
    try:
        envelope.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError("not a Flight SQL command (expected a protobuf Any)") from exc
    name = envelope.type_url.removeprefix(_TYPE_PREFIX)
    cls = _MESSAGES.get(name)
    if cls is None:
        raise ProtocolError(f"not a Flight SQL command: {envelope.type_url or '(empty)'}")
    message = cls()
    try:
        envelope.Unpack(message)
    except DecodeError as exc:
        raise ProtocolError(f"malformed {name}") from exc
    return message


def serialize_schema(schema: pa.Schema) -> bytes:
    """An IPC-encapsulated schema, as ``dataset_schema`` and ``table_schema`` carry it."""
    return schema.serialize().to_pybytes()


def _utf8(name: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, pa.string(), nullable=nullable)


CATALOGS_SCHEMA = pa.schema([_utf8("catalog_name", False)])
DB_SCHEMAS_SCHEMA = pa.schema([_utf8("catalog_name"), _utf8("db_schema_name", False)])
TABLES_SCHEMA = pa.schema(
    [_utf8("catalog_name"), _utf8("db_schema_name"), _utf8("table_name", False), _utf8("table_type", False)]
)
TABLES_WITH_SCHEMA_SCHEMA = TABLES_SCHEMA.append(pa.field("table_schema", pa.binary(), nullable=False))
TABLE_TYPES_SCHEMA = pa.schema([_utf8("table_type", False)])
PRIMARY_KEYS_SCHEMA = pa.schema(
    [
        _utf8("catalog_name"),
        _utf8("db_schema_name"),
        _utf8("table_name", False),
        _utf8("column_name", False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        _utf8("key_name"),
    ]
)
FOREIGN_KEYS_SCHEMA = pa.schema(
    [
        _utf8("pk_catalog_name"),
        _utf8("pk_db_schema_name"),
        _utf8("pk_table_name", False),
        _utf8("pk_column_name", False),
        _utf8("fk_catalog_name"),
        _utf8("fk_db_schema_name"),
        _utf8("fk_table_name", False),
        _utf8("fk_column_name", False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        _utf8("fk_key_name"),
        _utf8("pk_key_name"),
        pa.field("update_rule", pa.uint8(), nullable=False),
        pa.field("delete_rule", pa.uint8(), nullable=False),
    ]
)
SQL_INFO_VALUE_TYPE = pa.dense_union(
    [
        pa.field("string_value", pa.string(), nullable=False),
        pa.field("bool_value", pa.bool_(), nullable=False),
        pa.field("bigint_value", pa.int64(), nullable=False),
        pa.field("int32_bitmask", pa.int32(), nullable=False),
        pa.field("string_list", pa.list_(pa.string()), nullable=False),
        pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())), nullable=False),
    ],
    type_codes=[0, 1, 2, 3, 4, 5],
)
SQL_INFO_SCHEMA = pa.schema(
    [pa.field("info_name", pa.uint32(), nullable=False), pa.field("value", SQL_INFO_VALUE_TYPE, nullable=False)]
)
XDBC_TYPE_INFO_SCHEMA = pa.schema(
    [
        _utf8("type_name", False),
        pa.field("data_type", pa.int32(), nullable=False),
        pa.field("column_size", pa.int32()),
        _utf8("literal_prefix"),
        _utf8("literal_suffix"),
        pa.field("create_params", pa.list_(pa.field("item", pa.string(), nullable=False))),
        pa.field("nullable", pa.int32(), nullable=False),
        pa.field("case_sensitive", pa.bool_(), nullable=False),
        pa.field("searchable", pa.int32(), nullable=False),
        pa.field("unsigned_attribute", pa.bool_()),
        pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
        pa.field("auto_increment", pa.bool_()),
        _utf8("local_type_name"),
        pa.field("minimum_scale", pa.int32()),
        pa.field("maximum_scale", pa.int32()),
        pa.field("sql_data_type", pa.int32(), nullable=False),
        pa.field("datetime_subcode", pa.int32()),
        pa.field("num_prec_radix", pa.int32()),
        pa.field("interval_precision", pa.int32()),
    ]
)
