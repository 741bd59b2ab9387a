"""rhei_lake errors as Flight statuses: the one place a server failure becomes what the client sees.

================================  ==================  ======================================
error                             gRPC status         meaning for the client
================================  ==================  ======================================
WriteRefusedError (DDL/DML/SET)   PERMISSION_DENIED   the server is read-only
QueryError, ConfigError           UNKNOWN             the SQL or its as_of hint is wrong
unknown command or handle         UNKNOWN             a protocol message this server refuses
unsupported feature               UNKNOWN             e.g. transactions, Substrait
transient error, closed lake      UNAVAILABLE         retry later
any other RheiError               INTERNAL            with rhei_lake's message
anything else                     INTERNAL            generic message; details in the log
================================  ==================  ======================================

Only ``pyarrow.flight.FlightError`` subclasses reach the client as their
message alone: pyarrow appends the server's Python traceback to any other
exception (``INVALID_ARGUMENT`` and ``NOT_FOUND`` would need ``ArrowInvalid``
and ``ArrowKeyError``), so client mistakes are sent as ``FlightServerError``
(gRPC ``UNKNOWN``) with a message saying what was wrong.
"""

from __future__ import annotations

import logging

import pyarrow.flight as flight

from rhei_lake.errors import ConfigError, LakeClosedError, QueryError, RheiError, WriteRefusedError
from rhei_lake.flight.protocol import ProtocolError

log = logging.getLogger("rhei_lake.server")


class HandleNotFound(LookupError):
    """A ticket or prepared-statement handle the server does not hold (unknown, used or expired)."""


class ServerClosing(Exception):
    """The server is shutting down and ends its streams."""


def to_flight_error(exc: BaseException) -> flight.FlightError:
    """The Flight error (status and clean message) the client should see for ``exc``."""
    if isinstance(exc, flight.FlightError):
        return exc
    if isinstance(exc, WriteRefusedError):
        detail = str(exc).removeprefix("the analytic path is read-only: ").removeprefix("Error during planning: ")
        return flight.FlightUnauthorizedError(f"read-only: rhei_lake's Flight SQL server runs queries only ({detail})")
    if isinstance(exc, (QueryError, ConfigError)):
        return flight.FlightServerError(f"invalid query: {exc}")
    if isinstance(exc, (ProtocolError, HandleNotFound)):
        return flight.FlightServerError(str(exc))
    if isinstance(exc, NotImplementedError):
        return flight.FlightServerError(f"not supported: {exc}")
    if isinstance(exc, ServerClosing):
        return flight.FlightUnavailableError(str(exc) or "the server is shutting down")
    if isinstance(exc, RheiError):
        if exc.transient or isinstance(exc, LakeClosedError):
            return flight.FlightUnavailableError(str(exc))
        return flight.FlightInternalError(str(exc))
    log.error("unexpected error in a Flight SQL call", exc_info=exc)
    return flight.FlightInternalError(f"internal error ({type(exc).__name__}); see the server log")
