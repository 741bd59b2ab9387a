"""The differential fuzzer's oracle can fail: values judged by storage class and bits, lost or altered
versions caught after a sync."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rhei_lake.catalog import VALID_TO
from tests.support.fuzz_machine import FuzzFailure, LakeFuzz, machine_for
from tests.support.fuzz_oracle import NULL, Comparator, Lenient
from tests.support.fuzz_tables import TABLES
from tests.support.fuzz_values import ValueJudge, exact


@pytest.fixture
def judge():
    judge = ValueJudge()
    yield judge
    judge.close()


def test_reals_are_compared_by_their_bits(judge):
    assert judge.lake_token(0.1, "REAL") == judge.sqlite_token(0.1, "stored")
    assert judge.lake_token(math.nextafter(0.1, 1.0), "REAL") != judge.sqlite_token(0.1, "stored")
    assert exact(-0.0) != exact(0.0)


def test_a_lake_value_must_store_back_as_the_same_value(judge):
    # JSON has NUMERIC affinity: the text '42' stores as the integer SQLite holds, '42.5' does not.
    assert judge.lake_token("42", "JSON") == judge.sqlite_token(42, "stored")
    assert judge.lake_token("42.5", "JSON") != judge.sqlite_token(42, "stored")
    # A float64 cannot stand for an integer beyond 2**53.
    assert judge.lake_token(float(2**53 + 1), "NUMERIC") != judge.sqlite_token(2**53 + 1, "stored")
    # TEXT keeps text as it is: '1' and 1 are one stored value, ' 1' another.
    assert judge.lake_token("1", "TEXT") == judge.sqlite_token("1", "stored")
    assert judge.lake_token(" 1", "TEXT") != judge.sqlite_token("1", "stored")


def test_instants_dates_and_decimals_compare_by_meaning(judge):
    moment = datetime(2026, 1, 1, 10, tzinfo=UTC)
    for spelling in ("2026-01-01 10:00:00", "2026-01-01T12:00:00+02:00", 1767261600):
        assert judge.lake_token(moment, "DATETIME") == judge.sqlite_token(spelling, "instant")
    assert judge.lake_token(moment, "DATETIME") != judge.sqlite_token("2026-01-01 10:00:01", "instant")
    assert judge.lake_token(Decimal("1.500"), "DECIMAL(12,3)") == judge.sqlite_token(1.5, "decimal")
    assert judge.lake_token(Decimal("1.501"), "DECIMAL(12,3)") != judge.sqlite_token(1.5, "decimal")


def test_rows_are_compared_as_multisets_with_lenient_cells():
    a, b = ("integer", 1), ("text", "x")
    missing, unexpected = Comparator.difference([(a, b), (a, b)], [(a, b)])
    assert (missing, unexpected) == ([1], [])
    missing, unexpected = Comparator.difference([(a, Lenient({b, NULL}))], [(a, NULL)])
    assert (missing, unexpected) == ([], [])
    missing, unexpected = Comparator.difference([(a, Lenient({b, NULL}))], [(a, ("text", "y"))])
    assert (missing, unexpected) == ([0], [0])


@pytest.fixture
def machine(tmp_path):
    """A fuzzer program driven by hand: items with one row updated twice, synced, checked."""
    machine: LakeFuzz = machine_for(frozenset({"dml", "compact"}), tmp_path)()
    machine.start([t for t in TABLES if t.name == "items"], lambda table, columns: [])
    lake_conn = machine.conns[0]
    for sql in (
        "INSERT INTO items (id, name, price) VALUES (1, 'a', 0.1)",
        "UPDATE items SET price = 0.2 WHERE id = 1",
        "UPDATE items SET name = 'b' WHERE id = 1",
        "INSERT INTO items (id, name) VALUES (2, 'c')",
    ):
        machine.run(lake_conn, sql)
        machine.observe()
    machine.sync_and_check()
    yield machine
    machine.close_all()


def test_a_lost_closed_version_is_caught(machine):
    machine.lake.compact()
    history = machine.lake.storage.table_store("items", "history")
    history.delete(f"{VALID_TO} IS NOT NULL AND id = 1")
    machine.lake.refresh()
    machine.touch_all()
    with pytest.raises(FuzzFailure, match=r"items_history alive at instant #\d+ .*\n.*only in SQLite: \(id=1"):
        machine.sync_and_check()


def test_a_value_one_bit_off_is_caught(machine):
    machine.lake.flush()
    changes = machine.lake.storage.table_store("items", "changes")
    rows = changes.to_arrow()
    price = rows.column("price").to_pylist()
    bent = [math.nextafter(p, 1.0) if p == 0.2 else p for p in price]
    changes.delete("price IS NOT NULL")
    changes.append(
        rows.set_column(rows.schema.get_field_index("price"), "price", pa.array(bent, pa.float64())).filter(
            pc.is_valid(rows.column("price"))
        )
    )
    machine.lake.refresh()
    machine.touch_all()
    with pytest.raises(FuzzFailure, match=r"price=0\.20000000000000004\[9b9999999999c93f\]"):
        machine.sync_and_check(final=True)
