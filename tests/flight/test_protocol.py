"""The Flight SQL messages: the protocol's package and commands, packed as clients pack them."""

from __future__ import annotations

import re

import pytest

from rhei_lake.flight import flight_sql_pb2 as pb
from rhei_lake.flight import protocol


def test_messages_are_the_flight_sql_protocol():
    assert pb.DESCRIPTOR.package == "arrow.flight.protocol.sql"
    needed = {
        "CommandStatementQuery",
        "CommandStatementUpdate",
        "TicketStatementQuery",
        "CommandPreparedStatementQuery",
        "ActionCreatePreparedStatementRequest",
        "ActionCreatePreparedStatementResult",
        "ActionClosePreparedStatementRequest",
        "CommandGetCatalogs",
        "CommandGetDbSchemas",
        "CommandGetTables",
        "CommandGetTableTypes",
        "CommandGetSqlInfo",
        "CommandGetPrimaryKeys",
        "CommandGetXdbcTypeInfo",
    }
    assert needed <= set(pb.DESCRIPTOR.message_types_by_name)
    assert "SqlInfo" in pb.DESCRIPTOR.enum_types_by_name


def test_commands_round_trip_through_any():
    cmd = pb.CommandGetTables(table_name_filter_pattern="o%", include_schema=True)
    data = protocol.pack(cmd)
    assert b"type.googleapis.com/arrow.flight.protocol.sql.CommandGetTables" in data
    assert protocol.unpack(data) == cmd


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SELECT 1", "not a Flight SQL command"),
        (protocol.pack(pb.ActionCreatePreparedStatementResult()), "not a Flight SQL command"),
        (b"", "not a Flight SQL command: (empty)"),
    ],
)
def test_unknown_bytes_are_protocol_errors(data, message):
    with pytest.raises(protocol.ProtocolError, match=re.escape(message)):
        protocol.unpack(data)


def test_generated_module_is_compiled_from_the_vendored_proto():
    """``make proto`` stamps the proto's digest; a changed proto without a recompile fails here."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256((root / "proto" / "FlightSql.proto").read_bytes()).hexdigest()
    header = Path(pb.__file__).read_text().split('"""', 1)[0]
    assert f"sha256 {digest}" in header


def test_protobuf_floor_is_the_generated_code_version():
    """The generated module refuses an older protobuf runtime at import, so the dependency floor is its gencode version."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    gencode = re.search(r"# Protobuf Python Version: (\d+\.\d+)", Path(pb.__file__).read_text())
    assert gencode is not None
    requirements = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    (protobuf,) = [r for r in requirements if r.startswith("protobuf")]
    assert f">={gencode.group(1)}," in protobuf
