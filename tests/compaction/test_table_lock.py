"""Compactions of one table take turns across processes; other tables are not held up."""

from __future__ import annotations

import threading
import time

import pytest

from rhei_lake.compaction.table_lock import compaction_lock
from rhei_lake.errors import LeaseHeldError, LeaseLostError
from rhei_lake.storage.blobs import LocalBlobs
from rhei_lake.storage.lease import Lease
from rhei_lake.storage.lease_keeper import LeaseKeeper
from tests.support.fake_clock import FakeClock


def test_a_second_compaction_of_a_table_waits_for_the_first(tmp_path):
    """On the real clock: the waiter polls while the holder's keeper renews."""
    blobs = LocalBlobs(str(tmp_path))
    events: list[str] = []
    first_in = threading.Event()

    def first() -> None:
        with compaction_lock(blobs, "orders", ttl=1.0):
            events.append("first in")
            first_in.set()
            time.sleep(0.5)  # longer than a third of the TTL: the lease is renewed meanwhile
            events.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with compaction_lock(blobs, "orders", ttl=1.0):
        events.append("second in")
    thread.join()
    assert events == ["first in", "first out", "second in"]


def test_waiting_too_long_names_the_table_and_other_tables_are_free(tmp_path):
    blobs = LocalBlobs(str(tmp_path))
    clock = FakeClock()
    with compaction_lock(blobs, "orders", clock=clock):
        clock.await_waiters(1)
        started = clock.time()
        with pytest.raises(LeaseHeldError, match="'orders' is being compacted by another process .* for more than 30s"):
            with compaction_lock(blobs, "orders", wait=30, clock=clock):  # the holder's keeper renews meanwhile
                pass
        assert clock.time() - started == 30
        with compaction_lock(blobs, "customers", wait=0, clock=clock):
            pass
    with compaction_lock(blobs, "orders", wait=0, clock=clock):  # released
        pass


def test_a_compaction_that_stalled_past_its_lease_stops_before_its_next_rewrite(tmp_path, monkeypatch):
    """Two bin-packings of a table must not overlap: one whose lease another compaction took over stops."""
    blobs = LocalBlobs(str(tmp_path))
    clock = FakeClock()
    monkeypatch.setattr(LeaseKeeper, "start", lambda self: None)  # a stalled process renews nothing
    with compaction_lock(blobs, "orders", clock=clock) as held:
        held.check()  # held: nothing to say
        clock.advance(20)  # the lease's TTL: lapsed at this very instant
        held.check()  # lapsed, but nobody took it: renewed
        clock.advance(20)
        other = Lease(blobs, "compact-orders", ttl=5.0, clock=clock)
        other.acquire()  # another compaction takes the lapsed lease over
        with pytest.raises(LeaseLostError, match="'orders': this compaction lost the table's lease"):
            held.check()
        other.release()


def test_compact_checks_the_lease_before_it_bin_packs(tmp_path, monkeypatch):
    import rhei_lake
    from rhei_lake.compaction import table_lock

    checks: list[str] = []

    def lost(self) -> None:
        checks.append(self.table)
        raise LeaseLostError(f"table {self.table!r}: lost")

    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("orders")
        lake.execute("INSERT INTO orders VALUES (1, 'a')")
        lake.sync_now()
        monkeypatch.setattr(table_lock.HeldTable, "check", lost)
        with pytest.raises(LeaseLostError, match="'orders': lost"):
            lake.compact()
        assert checks == ["orders"]
        monkeypatch.undo()
        lake.compact()  # what the stopped run committed is whole: the next run finishes
        assert lake.query("SELECT id, v FROM orders").to_pylist() == [{"id": 1, "v": "a"}]
