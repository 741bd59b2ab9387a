"""Polled rows → change events: updated_at rules and the I/U/D classification."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

import rhei_lake
from rhei_lake.capture.types import make_column
from rhei_lake.catalog import TableSpec
from rhei_lake.errors import NonMonotonicUpdateError
from rhei_lake.sync.lake_state import LastEvent
from rhei_lake.sync.polled_events import EventBuilder, is_deleted, updated_at_micros

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("value", "unit", "micros"),
    [
        (1_767_225_600, "s", T0),
        (1_767_225_600_500, "ms", T0 + 500_000),
        (T0 + 3, "us", T0 + 3),
        (1_767_225_600.25, "s", T0 + 250_000),
        (Decimal("1767225600.000001"), "s", T0 + 1),
        ("2026-01-01T00:00:00Z", "s", T0),
        ("2026-01-01 00:00:00.000007", "s", T0 + 7),
        ("2026-01-01T01:00:00+01:00", "s", T0),
        (datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-2))), "s", T0 + 7_200_000_000),
        (datetime(2026, 1, 1), "s", T0),
        (date(2026, 1, 1), "s", T0),
    ],
)
def test_updated_at_rules(value, unit, micros):
    assert updated_at_micros(value, unit) == micros


@pytest.mark.parametrize("value", [None, "soon", True, float("nan"), b"\x01", 10**18])
def test_unreadable_updated_at(value):
    with pytest.raises(ValueError):
        updated_at_micros(value)


def test_soft_delete_values():
    assert [is_deleted(v) for v in (None, False, 0, "2026-01-01", 1, True)] == [False, False, False, True, True, True]


SPEC = TableSpec(
    "t",
    (
        make_column("id", "INTEGER", table="t"),
        make_column("v", "TEXT", table="t"),
        make_column("updated_at", "INTEGER", table="t"),
        make_column("deleted_at", "INTEGER", table="t"),
    ),
    ("id",),
    source="sqlite-poll",
)
TABLE = rhei_lake.PolledTable("t", updated_at="updated_at", deleted_at="deleted_at", epoch_unit="us")


def _build(rows, last):
    builder = EventBuilder(SPEC, TABLE)
    return builder.build(
        rows,
        10,
        lambda keys: {k: last[k] for k in [(i,) for i in keys.column("id").to_pylist()] if k in last},
        clock=999,
    )


def test_classification():
    last = {
        (2,): LastEvent("I", 50, (2, "b", 50, None)),
        (3,): LastEvent("U", 50, (3, "c", 50, None)),
        (4,): LastEvent("D", 40, (4, "d", 40, None)),
        (5,): LastEvent("I", 50, (5, "e", 50, None)),
        (6,): LastEvent("I", 50, (6, "f", 50, None)),
    }
    rows = [
        (1, "a", 60, None),  # new key: I
        (2, "b", 50, None),  # same instant, same values: nothing
        (3, "C", 60, None),  # changed: U
        (4, "d", 60, None),  # deleted before, back: I
        (5, "e", 70, 1),  # soft-deleted, updated_at moved: D at 70
        (6, "f", 50, 1),  # soft-deleted without moving updated_at: D at the clock
        (7, "g", 60, 1),  # soft-deleted and never seen: nothing
    ]
    built = _build(rows, last)
    assert built.error is None and built.consumed == 7
    events = built.events.to_pylist()
    assert [(e["id"], e["_rhei_op"], e["_rhei_seq"]) for e in events] == [
        (1, "I", 11),
        (3, "U", 12),
        (4, "I", 13),
        (5, "D", 14),
        (6, "D", 15),
    ]
    stamps = [
        e["_rhei_ts"]
        for e in built.events.cast(
            pa.schema([f if f.name != "_rhei_ts" else pa.field("_rhei_ts", pa.int64()) for f in built.events.schema])
        ).to_pylist()
    ]
    assert stamps == [60, 60, 60, 70, 999]


def test_backwards_row_stops_the_batch_before_it():
    last = {(2,): LastEvent("U", 50, (2, "b", 50, None))}
    built = _build([(1, "a", 60, None), (2, "b", 40, None), (3, "c", 60, None)], last)
    assert built.consumed == 1 and built.events.num_rows == 1
    assert isinstance(built.error, NonMonotonicUpdateError) and built.error.primary_key == {"id": 2}


def test_no_lookup_means_every_live_row_is_an_insert():
    built = EventBuilder(SPEC, TABLE).build([(1, "a", 1, None), (2, "b", 1, 5)], 0, None, clock=0)
    assert built.events.column("_rhei_op").to_pylist() == ["I"] and built.consumed == 2
    assert built.events.column("_rhei_ts").to_pylist() == [datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=1)]
