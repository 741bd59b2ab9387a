"""Network access to a lake: an Arrow Flight SQL server for ADBC, JDBC and DBeaver clients.

>>> from rhei_lake.server import serve_flight
>>> with rhei_lake.open(storage="./lake") as lake, serve_flight(lake, port=50051) as server:  # doctest: +SKIP
...     server.serve_forever()

The protocol's message classes come from the ``altertable-flightsql`` package
(MIT), which ships them generated from Apache Arrow's ``FlightSql.proto``
(package ``arrow.flight.protocol.sql``); rhei_lake depends on it rather than
carrying generated code of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rhei_lake.server.service import FlightService, serve_flight

__all__ = ["serve_flight", "FlightService"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `rh` reads the [serve] settings (service_config) on every start,
    # and must not load the Flight stack for that.
    if name in __all__:
        from rhei_lake.server import service

        return getattr(service, name)
    raise AttributeError(f"module 'rhei_lake.server' has no attribute {name!r}")
