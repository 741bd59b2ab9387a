"""Handles between RPCs: single-use tickets, prepared statements, expiry and bounds; bound parameters."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rhei_lake.errors import QueryError
from rhei_lake.flight.metadata import like_pattern
from rhei_lake.flight.statements import PlannedQuery, PreparedStatement, StatementRegistry, bind_parameters


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _planned(tag: str) -> PlannedQuery:
    return PlannedQuery(dataframe=tag, schema=pa.schema([]))


def test_a_ticket_is_redeemed_once():
    registry = StatementRegistry()
    handle = registry.add_ticket(_planned("a"))
    assert len(handle) == 16
    assert registry.take_ticket(handle).dataframe == "a"
    assert registry.take_ticket(handle) is None
    assert registry.take_ticket(b"forged") is None


def test_handles_expire_when_unused_and_are_bounded():
    clock = Clock()
    registry = StatementRegistry(ticket_ttl=10, max_tickets=3, statement_ttl=100, clock=clock)
    old = registry.add_ticket(_planned("old"))
    clock.now = 11
    assert registry.take_ticket(old) is None, "expired"
    handles = [registry.add_ticket(_planned(str(i))) for i in range(5)]
    assert registry.open_tickets == 3
    assert registry.take_ticket(handles[0]) is None, "the oldest were dropped"
    assert registry.take_ticket(handles[4]).dataframe == "4"

    statement = registry.add_statement(PreparedStatement("SELECT 1", None, pa.schema([])))
    for _ in range(3):
        clock.now += 60
        assert registry.statement(statement) is not None, "using a statement keeps it alive"
    clock.now += 101
    assert registry.statement(statement) is None
    assert registry.open_statements == 0
    assert not registry.close_statement(statement)


def test_bind_parameters_by_position_and_name():
    params = bind_parameters(pa.record_batch({"0": [7], "who": ["ada"]}))
    assert params["1"].as_py() == 7 and params["2"].as_py() == "ada" and params["who"].as_py() == "ada"
    assert "0" not in params
    with pytest.raises(QueryError, match="exactly one row"):
        bind_parameters(pa.record_batch({"0": [1, 2]}))


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        (None, ["anything"], []),
        ("orders", ["orders"], ["orders_history", "Orders"]),
        ("ord%", ["orders", "ord"], ["xorders"]),
        ("order_", ["orders"], ["order", "orders_x"]),
        ("orders\\_%", ["orders_history"], ["ordersXhistory"]),
        ("a.b*c", ["a.b*c"], ["aXb*c"]),
    ],
)
def test_like_patterns(pattern, matches, misses):
    regex = like_pattern(pattern)
    for name in matches:
        assert regex is None or regex.fullmatch(name), name
    for name in misses:
        assert regex is not None and not regex.fullmatch(name), name
