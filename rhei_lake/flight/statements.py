"""Statements between the RPCs that carry them: planned queries awaiting DoGet, prepared statements.

A query is planned once, at ``GetFlightInfo``: the plan is bound to the lake
as it is then, and its ticket redeems that same plan at ``DoGet``, so a query
is never run twice and its rows match the schema already announced. Both kinds
of handle are random, expire when unused, and are bounded in number, so a
client that never comes back costs nothing for long.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from rhei_lake.errors import QueryError
from rhei_lake.query.engine import normalize_schema
from rhei_lake.flight.sql_text import number_placeholders, parse_statement
from rhei_lake.timeutil import from_micros

DEFAULT_TICKET_TTL = 300.0
DEFAULT_MAX_TICKETS = 1024
DEFAULT_STATEMENT_TTL = 3600.0
DEFAULT_MAX_STATEMENTS = 4096
#: A prepared statement executed within this many seconds reuses the plan made to prepare it.
FIRST_PLAN_REUSE = 2.0


@dataclass
class PlannedQuery:
    """A DataFusion plan and the schema its stream will have."""

    dataframe: Any
    schema: pa.Schema
    sql: str = ""
    planned_at: float = field(default_factory=time.monotonic)


@dataclass
class PreparedStatement:
    """A client's prepared query: its SQL, ``as_of`` and the parameters last bound to it."""

    sql: str
    as_of: int | None
    schema: pa.Schema
    params: dict[str, pa.Scalar] | None = None
    first_plan: PlannedQuery | None = field(default=None, repr=False)
    """The plan made when it was prepared, reused by an immediate first execution."""


class Planner:
    """Turns a client's SQL into a :class:`PlannedQuery` over the lake's views."""

    def __init__(self, dataframe: Callable[..., Any]) -> None:
        self._dataframe = dataframe  # Lake.dataframe

    def prepare(self, text: str) -> PreparedStatement:
        """Parse the ``as_of`` hint, number ``?`` placeholders and plan once to learn the schema."""
        statement = parse_statement(text)
        sql, _count = number_placeholders(statement.sql)
        planned = self._plan(sql, statement.as_of, None)
        return PreparedStatement(sql, statement.as_of, planned.schema, first_plan=planned)

    def plan(self, text: str) -> PlannedQuery:
        statement = self.prepare(text)
        assert statement.first_plan is not None
        return statement.first_plan

    def execute(self, statement: PreparedStatement) -> PlannedQuery:
        """A fresh plan of a prepared statement with its bound parameters."""
        first, statement.first_plan = statement.first_plan, None
        if first is not None and statement.params is None and time.monotonic() - first.planned_at < FIRST_PLAN_REUSE:
            return first
        return self._plan(statement.sql, statement.as_of, statement.params)

    def _plan(self, sql: str, as_of: int | None, params: dict[str, pa.Scalar] | None) -> PlannedQuery:
        df = self._dataframe(sql, as_of=from_micros(as_of) if as_of is not None else None, params=params)
        try:
            schema = df.schema()
        except Exception as exc:
            raise QueryError(f"cannot determine the result schema: {exc}") from exc
        return PlannedQuery(df, normalize_schema(schema), sql)


def bind_parameters(batch: pa.RecordBatch | pa.Table) -> dict[str, pa.Scalar]:
    """Placeholder values from one bound row: column ``i`` is ``$i+1`` and ``$<column name>``."""
    if batch.num_rows != 1:
        raise QueryError(f"a query binds exactly one row of parameters, got {batch.num_rows}")
    params: dict[str, pa.Scalar] = {}
    for i, name in enumerate(batch.schema.names):
        value = batch.column(i)[0]
        params[str(i + 1)] = value
        if name and not name.isdigit():
            params[name] = value
    return params


class _Expiring:
    """Handles to values, dropped when unused for ``ttl`` seconds or when more than ``limit`` are held."""

    def __init__(self, ttl: float, limit: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._limit = limit
        self._clock = clock
        self._items: OrderedDict[bytes, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, value: Any) -> bytes:
        handle = secrets.token_bytes(16)
        with self._lock:
            self._expire()
            self._items[handle] = (self._clock(), value)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
        return handle

    def get(self, handle: bytes, *, remove: bool = False) -> Any | None:
        with self._lock:
            self._expire()
            entry = self._items.pop(handle, None) if remove else self._items.get(handle)
            if entry is None:
                return None
            if not remove:
                self._items[handle] = (self._clock(), entry[1])
                self._items.move_to_end(handle)
            return entry[1]

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)

    def _expire(self) -> None:
        cutoff = self._clock() - self._ttl
        while self._items:
            handle, (touched, _value) = next(iter(self._items.items()))
            if touched >= cutoff:
                break
            del self._items[handle]


class StatementRegistry:
    """The server's open handles: tickets of planned queries and prepared statements."""

    def __init__(
        self,
        *,
        ticket_ttl: float = DEFAULT_TICKET_TTL,
        max_tickets: int = DEFAULT_MAX_TICKETS,
        statement_ttl: float = DEFAULT_STATEMENT_TTL,
        max_statements: int = DEFAULT_MAX_STATEMENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tickets = _Expiring(ticket_ttl, max_tickets, clock)
        self._statements = _Expiring(statement_ttl, max_statements, clock)

    def add_ticket(self, planned: PlannedQuery) -> bytes:
        return self._tickets.add(planned)

    def take_ticket(self, handle: bytes) -> PlannedQuery | None:
        """The planned query of a ticket, which it redeems (None: unknown, used or expired)."""
        return self._tickets.get(handle, remove=True)

    def add_statement(self, statement: PreparedStatement) -> bytes:
        return self._statements.add(statement)

    def statement(self, handle: bytes) -> PreparedStatement | None:
        return self._statements.get(handle)

    def close_statement(self, handle: bytes) -> bool:
        return self._statements.get(handle, remove=True) is not None

    @property
    def open_tickets(self) -> int:
        return len(self._tickets)

    @property
    def open_statements(self) -> int:
        return len(self._statements)
