"""The Flight SQL service: the protocol's RPCs answered from a lake, read-only.

``GetFlightInfo`` plans a query (the SQL's ``as_of`` hint included) and hands
back a ticket; ``DoGet`` redeems it by streaming DataFusion's record batches
as they are produced, never holding a whole result. Prepared statements
(``CreatePreparedStatement``, parameters bound with ``DoPut``,
``ClosePreparedStatement``) and the metadata commands tools browse with are
supported; updates, ingestion, Substrait and transactions are refused.

Each RPC runs on its own gRPC thread, and DataFusion runs with the GIL
released, so a slow client holds up only its own stream; a client that goes
away ends its stream at the next batch, which drops the DataFusion stream and
the work behind it.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

import rhei_lake
from rhei_lake.errors import RheiError, WriteRefusedError, translate_query_error
from rhei_lake.flight import flight_sql_pb2 as pb
from rhei_lake.flight import protocol
from rhei_lake.flight.metadata import LakeMetadata, result_schema
from rhei_lake.flight.statements import PlannedQuery, Planner, StatementRegistry, bind_parameters
from rhei_lake.flight.status import HandleNotFound, ServerClosing, to_flight_error

log = logging.getLogger("rhei_lake.server")

_WRITES = (
    pb.CommandStatementUpdate,
    pb.CommandPreparedStatementUpdate,
    pb.CommandStatementIngest,
)
_TRANSACTION_ACTIONS = (
    protocol.BEGIN_TRANSACTION,
    protocol.END_TRANSACTION,
    protocol.BEGIN_SAVEPOINT,
    protocol.END_SAVEPOINT,
)


def _flight_errors(method: Callable) -> Callable:
    """Run an RPC handler, turning any failure into the Flight status the client should see."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            raise to_flight_error(exc) from exc

    return wrapper


def _refuse_write(what: str) -> WriteRefusedError:
    return WriteRefusedError(f"{what} is not accepted; only queries are (SELECT, WITH, EXPLAIN)")


class LakeFlightSqlServer(flight.FlightServerBase):
    """A Flight SQL server over one lake's views; see :func:`rhei_lake.server.serve_flight`."""

    def __init__(
        self,
        lake: rhei_lake.Lake,
        location: str,
        *,
        compression: str | None = "zstd",
        tls_certificates: list | None = None,
        middleware: dict | None = None,
        registry: StatementRegistry | None = None,
    ) -> None:
        super().__init__(location, tls_certificates=tls_certificates, middleware=middleware)
        self._lake = lake
        self._planner = Planner(lake.dataframe)
        self._metadata = LakeMetadata(lake)
        self._registry = registry or StatementRegistry()
        self._write_options = pa.ipc.IpcWriteOptions(compression=compression)
        self._closing = threading.Event()
        self._active = 0
        self._active_lock = threading.Lock()

    # -- observability ---------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Streams being sent, tickets not yet redeemed, prepared statements open."""
        with self._active_lock:
            active = self._active
        return {
            "active_streams": active,
            "open_tickets": self._registry.open_tickets,
            "open_statements": self._registry.open_statements,
        }

    def begin_shutdown(self) -> None:
        """Refuse new work and end open streams at their next batch."""
        self._closing.set()

    # -- commands --------------------------------------------------------
    def _command(self, descriptor: flight.FlightDescriptor):
        if descriptor.descriptor_type != flight.DescriptorType.CMD:
            raise protocol.ProtocolError("Flight SQL needs a command descriptor, not a path")
        return protocol.unpack(descriptor.command)

    def _statement(self, handle: bytes):
        statement = self._registry.statement(handle)
        if statement is None:
            raise HandleNotFound("no such prepared statement (closed or expired); prepare it again")
        return statement

    def _check_open(self) -> None:
        if self._closing.is_set():
            raise ServerClosing("the server is shutting down")

    def _plan(self, cmd) -> PlannedQuery | None:
        """The plan of a query command; None for a metadata command."""
        if isinstance(cmd, pb.CommandStatementQuery):
            if cmd.HasField("transaction_id"):
                raise NotImplementedError("transactions are not supported (the server is read-only)")
            return self._planner.plan(cmd.query)
        if isinstance(cmd, pb.CommandPreparedStatementQuery):
            return self._planner.execute(self._statement(cmd.prepared_statement_handle))
        if isinstance(cmd, _WRITES):
            raise _refuse_write(type(cmd).__name__)
        if isinstance(cmd, pb.CommandStatementSubstraitPlan):
            raise NotImplementedError("Substrait plans are not supported; send SQL")
        if result_schema(cmd) is None:
            raise protocol.ProtocolError(f"{type(cmd).__name__} is not a command to run")
        return None

    @_flight_errors
    def get_flight_info(self, context, descriptor):
        self._check_open()
        cmd = self._command(descriptor)
        planned = self._plan(cmd)
        if planned is None:
            schema, ticket = result_schema(cmd), descriptor.command
        else:
            handle = self._registry.add_ticket(planned)
            schema, ticket = planned.schema, protocol.pack(pb.TicketStatementQuery(statement_handle=handle))
        return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)

    @_flight_errors
    def get_schema(self, context, descriptor):
        self._check_open()
        cmd = self._command(descriptor)
        if isinstance(cmd, pb.CommandPreparedStatementQuery):
            return flight.SchemaResult(self._statement(cmd.prepared_statement_handle).schema)
        schema = result_schema(cmd)
        if schema is None:
            planned = self._plan(cmd)
            assert planned is not None
            schema = planned.schema
        return flight.SchemaResult(schema)

    @_flight_errors
    def do_get(self, context, ticket):
        self._check_open()
        cmd = protocol.unpack(ticket.ticket)
        if isinstance(cmd, pb.TicketStatementQuery):
            planned = self._registry.take_ticket(cmd.statement_handle)
            if planned is None:
                raise HandleNotFound("unknown ticket (already used or expired); run the query again")
            return flight.GeneratorStream(planned.schema, self._stream(planned, context), options=self._write_options)
        if result_schema(cmd) is None:
            raise protocol.ProtocolError(f"{type(cmd).__name__} is not a ticket this server issued")
        return flight.RecordBatchStream(self._metadata.answer(cmd), options=self._write_options)

    def _stream(self, planned: PlannedQuery, context) -> Iterator[pa.RecordBatch]:
        with self._active_lock:
            self._active += 1
        try:
            stream = planned.dataframe.execute_stream()
            for batch in stream:
                if self._closing.is_set():
                    raise ServerClosing("the server is shutting down")
                if context.is_cancelled():
                    return
                rows = batch.to_pyarrow()
                yield rows if rows.schema.equals(planned.schema) else rows.cast(planned.schema)
        except Exception as exc:
            if not isinstance(exc, (RheiError, ServerClosing)):
                exc = translate_query_error(exc, sql=planned.sql)
            raise to_flight_error(exc) from exc
        finally:
            with self._active_lock:
                self._active -= 1

    # -- writes: only parameters for prepared queries ---------------------
    @_flight_errors
    def do_put(self, context, descriptor, reader, writer):
        self._check_open()
        cmd = self._command(descriptor)
        if not isinstance(cmd, pb.CommandPreparedStatementQuery):
            if isinstance(cmd, (*_WRITES, pb.CommandStatementQuery)):
                raise _refuse_write(type(cmd).__name__)
            raise protocol.ProtocolError(f"DoPut does not take {type(cmd).__name__}")
        statement = self._statement(cmd.prepared_statement_handle)
        bound = reader.read_all()
        statement.params = bind_parameters(bound) if bound.num_columns else None
        result = pb.DoPutPreparedStatementResult(prepared_statement_handle=cmd.prepared_statement_handle)
        writer.write(pa.py_buffer(result.SerializeToString()))

    @_flight_errors
    def list_flights(self, context, criteria):
        raise NotImplementedError("ListFlights: send Flight SQL commands (GetTables lists the tables)")

    @_flight_errors
    def do_exchange(self, context, descriptor, reader, writer):
        raise NotImplementedError("DoExchange is not part of Flight SQL")

    # -- actions ---------------------------------------------------------
    def list_actions(self, context):
        return [
            (protocol.CREATE_PREPARED_STATEMENT, "Prepare a query; returns its handle and result schema"),
            (protocol.CLOSE_PREPARED_STATEMENT, "Release a prepared statement"),
        ]

    @_flight_errors
    def do_action(self, context, action):
        self._check_open()
        kind = action.type
        if kind == protocol.CREATE_PREPARED_STATEMENT:
            request = self._action_request(action, pb.ActionCreatePreparedStatementRequest)
            if request.HasField("transaction_id"):
                raise NotImplementedError("transactions are not supported (the server is read-only)")
            statement = self._planner.prepare(request.query)
            handle = self._registry.add_statement(statement)
            result = pb.ActionCreatePreparedStatementResult(
                prepared_statement_handle=handle,
                dataset_schema=protocol.serialize_schema(statement.schema),
            )
            return [flight.Result(protocol.pack(result))]
        if kind == protocol.CLOSE_PREPARED_STATEMENT:
            request = self._action_request(action, pb.ActionClosePreparedStatementRequest)
            self._registry.close_statement(request.prepared_statement_handle)
            return []
        if kind in _TRANSACTION_ACTIONS:
            raise NotImplementedError("transactions are not supported (the server is read-only)")
        raise NotImplementedError(f"unknown action {kind!r}")

    @staticmethod
    def _action_request(action: flight.Action, cls: type):
        body = action.body.to_pybytes() if action.body is not None else b""
        request = protocol.unpack(body)
        if not isinstance(request, cls):
            raise protocol.ProtocolError(f"{action.type} expects {cls.__name__}, got {type(request).__name__}")
        return request
