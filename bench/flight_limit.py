"""The limit of Flight SQL serving: DataFusion over an in-memory table behind a bare ``pyarrow.flight`` server.

``get_flight_info`` plans the SQL (the command bytes) on a MemTable of the
same rows and ``do_get`` streams DataFusion's batches with the same IPC
compression: the same two round trips a Flight SQL client makes, with nothing
of rhei_lake in between.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable

import pyarrow as pa
import pyarrow.flight as flight


class BareFlightServer(flight.FlightServerBase):
    """Serves SQL over one in-memory table named ``table``."""

    def __init__(self, rows: pa.Table, table: str, compression: str | None) -> None:
        from datafusion import SessionContext

        super().__init__("grpc://127.0.0.1:0")
        self._ctx = SessionContext()
        self._ctx.register_record_batches(table, [rows.to_batches()])
        self._options = pa.ipc.IpcWriteOptions(compression=None if compression in (None, "none") else compression)
        self._pending: dict[bytes, tuple] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve, daemon=True)
        self._thread.start()

    @property
    def location(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        df = self._ctx.sql(descriptor.command.decode())
        schema = df.schema()
        token = secrets.token_bytes(16)
        with self._lock:
            self._pending[token] = (df, schema)
        return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(token, [])], -1, -1)

    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> flight.GeneratorStream:
        with self._lock:
            df, schema = self._pending.pop(ticket.ticket)
        return flight.GeneratorStream(schema, (b.to_pyarrow() for b in df.execute_stream()), options=self._options)

    def close(self) -> None:
        self.shutdown()
        self._thread.join(timeout=10)


def flight_sql_command(sql: str) -> bytes:
    """The descriptor command of a Flight SQL ``CommandStatementQuery``."""
    from rhei_lake.flight import flight_sql_pb2 as pb
    from rhei_lake.flight import protocol

    return protocol.pack(pb.CommandStatementQuery(query=sql))


def fetch(client: flight.FlightClient, command: bytes) -> int:
    """Run one query the Flight way (GetFlightInfo, then DoGet of its one endpoint); rows received."""
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    return client.do_get(info.endpoints[0].ticket).read_all().num_rows


def queries_per_second(clients: int, seconds: float, make_runner: Callable[[], Callable[[], int | None]]) -> float:
    """``clients`` threads each repeating its own runner for ``seconds`` (after one warm-up run): queries/s."""
    from bench.bench_flight_sql import run_clients

    def warmed() -> Callable[[], int]:
        run = make_runner()
        run()  # connections, caches, the first plan
        return lambda: run() or 0

    return run_clients(clients, seconds, warmed)[0]
