"""Clients for the server tests: the real ADBC driver, and a raw Flight client for protocol details."""

from __future__ import annotations

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf import any_pb2

from rhei_lake.flight import FlightService
from rhei_lake.flight import flight_sql_pb2 as pb
from rhei_lake.flight.protocol import pack


def adbc_connect(server: FlightService | str, *, token: str | None = None, **db_kwargs: str):
    """A DB-API connection through the ADBC Flight SQL driver (autocommit: the server has no transactions)."""
    location = server if isinstance(server, str) else server.location
    options = dict(db_kwargs)
    if token is not None:
        options[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    return flight_sql.connect(location, db_kwargs=options, autocommit=True)


def query(server: FlightService, sql: str, params=None, **kwargs) -> pa.Table:
    with adbc_connect(server, **kwargs) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


class RawClient:
    """Flight SQL messages sent by hand, for what the DB-API does not expose."""

    def __init__(self, server: FlightService, *, token: str | None = None) -> None:
        self.client = flight.FlightClient(server.location)
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        self.options = flight.FlightCallOptions(headers=headers)

    def info(self, command) -> flight.FlightInfo:
        return self.client.get_flight_info(flight.FlightDescriptor.for_command(pack(command)), self.options)

    def fetch(self, command) -> pa.Table:
        info = self.info(command)
        return pa.concat_tables(
            [self.client.do_get(endpoint.ticket, self.options).read_all() for endpoint in info.endpoints]
        )

    def action(self, kind: str, message=None, result_type=None) -> list:
        """Run an action; its results unpacked as ``result_type`` messages."""
        body = pack(message) if message is not None else b""
        results = []
        for result in self.client.do_action(flight.Action(kind, body), self.options):
            envelope = any_pb2.Any()
            envelope.ParseFromString(result.body.to_pybytes())
            results.append(result_type() if result_type else None)
            if result_type:
                assert envelope.Unpack(results[-1])
        return results

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["adbc_connect", "query", "RawClient", "pb"]
