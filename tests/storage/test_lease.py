"""The writer lease: one holder at a time, on every tier.

Most tests drive time with a fake clock (``tests/support/fake_clock.py``), so
expiry, renewal and waiting happen at exact instants; one test per behaviour
runs on the real clock, as the lake does.
"""

from __future__ import annotations

import threading
import time

import pytest

from rhei_lake.errors import LeaseHeldError, LeaseLostError, StorageUnavailableError
from rhei_lake.storage.blobs import LocalBlobs
from rhei_lake.storage.lease import Lease
from rhei_lake.storage.lease_keeper import LeaseKeeper
from rhei_lake.storage.process_identity import ProcessId
from rhei_lake.storage.writer_lease import WriterLease
from tests.support.fake_clock import FakeClock


def test_second_holder_is_refused_until_expiry(lake_storage):
    clock = FakeClock()
    first = Lease(lake_storage.blobs, ttl=30, clock=clock, holder="first")
    second = Lease(lake_storage.blobs, ttl=30, clock=clock, holder="second")
    first.acquire()
    with pytest.raises(LeaseHeldError, match="first"):
        second.acquire()
    clock.advance(20)
    first.renew()
    clock.advance(20)  # would have expired without the renewal
    with pytest.raises(LeaseHeldError):
        second.acquire()
    clock.advance(31)
    second.acquire()  # expired: taken over
    with pytest.raises(LeaseLostError):
        first.renew()
    with pytest.raises(LeaseLostError):
        first.check()


def test_a_lease_expires_at_exactly_its_ttl(lake_storage):
    clock = FakeClock()
    holder = Lease(lake_storage.blobs, ttl=30, clock=clock, holder="holder", process=ProcessId("host-a", 7, 9))
    other = Lease(lake_storage.blobs, ttl=30, clock=clock, holder="other")
    holder.acquire()
    assert lake_storage.blobs.get("_rhei/leases/writer/00000000000000000001.json") == (
        b'{"owner": "%s", "holder": "holder", "expires_at": 1030.0, "released": false, '
        b'"host": "host-a", "pid": 7, "pid_namespace": 9}' % holder.owner.encode()
    )
    clock.advance(29.5)
    holder.check()
    with pytest.raises(LeaseHeldError, match=r"holder\); its lease expires in 0s"):
        other.acquire()
    clock.advance(0.5)  # the instant it expires: the holder may no longer commit, anyone may take it
    with pytest.raises(LeaseLostError):
        holder.check()
    assert other.acquire().epoch == 2
    with pytest.raises(LeaseLostError, match="taken over by other"):
        holder.renew()


def test_release_hands_over_at_once(lake_storage):
    first = Lease(lake_storage.blobs, holder="first")
    second = Lease(lake_storage.blobs, holder="second")
    first.acquire()
    first.release()
    second.acquire()
    second.check()


def test_old_records_are_pruned(lake_storage):
    lease = Lease(lake_storage.blobs, ttl=30)
    lease.acquire()
    for _ in range(10):
        lease.renew()
    assert len(lease._epochs()) <= 3
    assert lease.current().epoch == 11


def test_keeper_renews_every_third_of_the_ttl_until_stopped(lake_storage):
    clock = FakeClock()
    lease = Lease(lake_storage.blobs, ttl=30, clock=clock, holder="kept")
    lease.acquire()
    keeper = LeaseKeeper(lease)
    keeper.start()
    clock.await_waiters(1)
    clock.advance(9.5)
    assert lease.current().epoch == 1
    clock.advance(0.5)
    assert (lease.current().epoch, lease.expires_at) == (2, clock.time() + 30)
    clock.advance(100)  # ten more thirds: renewed at each, never lapsed
    assert lease.current().epoch == 12
    lease.check()
    with pytest.raises(LeaseHeldError, match="kept"):
        Lease(lake_storage.blobs, ttl=30, clock=clock).acquire()
    keeper.stop()
    assert keeper.error is None
    clock.advance(29.5)  # nobody renews now: the lease runs out 30 s after the last renewal
    lease.check()
    clock.advance(0.5)
    with pytest.raises(LeaseLostError):
        lease.check()
    assert lease.current().epoch == 12
    Lease(lake_storage.blobs, ttl=30, clock=clock).acquire()


def test_a_keeper_that_finds_its_lease_taken_over_stops_and_says_so(lake_storage):
    clock = FakeClock()
    lease = Lease(lake_storage.blobs, ttl=30, clock=clock)
    lease.acquire()
    keeper = LeaseKeeper(lease)
    keeper.start()
    clock.await_waiters(1)
    skewed = FakeClock(start=clock.time() + 31)  # a machine whose clock runs 31 s ahead sees the lease expired
    Lease(lake_storage.blobs, ttl=30, clock=skewed, holder="thief").acquire()
    clock.advance(10)  # the keeper's next round finds the thief's record, and stops
    assert isinstance(keeper.error, LeaseLostError) and "thief" in str(keeper.error)
    assert clock.waiters == 0
    clock.advance(30)
    assert lease.current().holder == "thief"
    keeper.stop()


class _FailingPuts(LocalBlobs):
    """A local store whose next ``failures`` creates fail as an unreachable store would."""

    failures = 0

    def put_if_absent(self, key: str, data: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailableError("the store is unreachable (injected)")
        super().put_if_absent(key, data)


def test_a_keeper_retries_a_failed_renewal_at_its_next_round(tmp_path):
    clock = FakeClock()
    blobs = _FailingPuts(str(tmp_path))
    lease = Lease(blobs, ttl=30, clock=clock)
    lease.acquire()
    keeper = LeaseKeeper(lease)
    keeper.start()
    clock.await_waiters(1)
    blobs.failures = 2
    clock.advance(20)  # both renewals so far failed on the store: the lease still runs out at 30 s
    assert (lease.current().epoch, lease.expires_at) == (1, 1_030.0)
    clock.advance(9.5)
    lease.check()
    clock.advance(0.5)  # the third try, at the very instant it would lapse, gets through
    assert (lease.current().epoch, lease.expires_at) == (2, 1_060.0)
    assert keeper.error is None
    lease.check()
    keeper.stop()


def test_keeper_renews_in_the_background(tmp_path):
    """The keeper on the real clock, the one the lake uses (on one tier: the fake-clock tests cover them all)."""
    blobs = LocalBlobs(str(tmp_path))
    lease = Lease(blobs, ttl=0.3)
    lease.acquire()
    keeper = LeaseKeeper(lease)
    keeper.start()
    time.sleep(0.8)
    keeper.stop()
    lease.check()
    assert keeper.error is None
    assert lease.current().epoch >= 3


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_holder_that_died_on_this_machine_is_not_waited_for(lake_storage):
    here = ProcessId.current()
    dead = Lease(
        lake_storage.blobs, ttl=3600, holder="crashed", process=ProcessId(here.host, _dead_pid(), here.pid_namespace)
    )
    dead.acquire()
    taker = Lease(lake_storage.blobs, ttl=30)
    taker.acquire()  # taken over at once, long before the TTL
    taker.release()

    elsewhere = Lease(
        lake_storage.blobs,
        ttl=3600,
        holder="other host",
        process=ProcessId("another-host", _dead_pid(), here.pid_namespace),
    )
    elsewhere.acquire()
    with pytest.raises(LeaseHeldError, match="other host"):
        Lease(lake_storage.blobs, ttl=30).acquire()  # a PID on another machine says nothing


def test_writer_lease_waits_its_turn_renews_a_lapsed_lease_and_detects_a_takeover(lake_storage):
    clock = FakeClock()
    first = WriterLease(lake_storage.blobs, ttl=0.5, clock=clock)
    first.acquire()
    clock.await_waiters(1)
    with pytest.raises(LeaseHeldError):
        WriterLease(lake_storage.blobs, ttl=0.5, wait=0, clock=clock).acquire()
    waiting = WriterLease(lake_storage.blobs, ttl=0.5, wait=10, clock=clock)
    started = clock.time()
    clock.call_at(started + 0.3, first.release)
    waiting.acquire()
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2])  # backoff doubles; the first poll after the release wins
    assert clock.time() - started == pytest.approx(0.35)
    waiting.ensure()

    waiting._keeper.stop()  # a stalled process: nobody renews
    clock.advance(0.5)  # lapsed at this very instant, but nobody took it
    epoch = waiting.lease.epoch
    waiting.ensure()  # renewed
    assert waiting.lease.epoch == epoch + 1
    clock.advance(0.5)
    Lease(lake_storage.blobs, ttl=30, clock=clock, holder="thief").acquire()
    with pytest.raises(LeaseLostError, match="thief"):
        waiting.ensure()
    waiting.release()


def test_writer_lease_gives_up_after_its_wait_while_the_holder_keeps_renewing(lake_storage):
    clock = FakeClock()
    holder = WriterLease(lake_storage.blobs, ttl=0.75, clock=clock)
    holder.acquire()
    clock.await_waiters(1)
    started = clock.time()
    with pytest.raises(LeaseHeldError, match=r"waited 5s\)$"):
        WriterLease(lake_storage.blobs, ttl=0.75, wait=5, clock=clock).acquire()
    # backoff doubles up to 1 s between polls, and the last pause ends at the deadline
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 0.45])
    assert clock.time() - started == pytest.approx(5)
    holder.ensure()  # renewed every third of its TTL (0.25 s) all along: twenty renewals in 5 s
    assert holder.lease.epoch == 21
    assert lake_storage.blobs.list(holder.lease.prefix + "queue/") == []
    holder.release()


def test_writer_lease_waits_renews_a_lapsed_lease_and_detects_a_takeover(tmp_path):
    """The same on the real clock, the one the lake uses (on one tier: the fake-clock test covers them all)."""
    blobs = LocalBlobs(str(tmp_path))
    first = WriterLease(blobs, ttl=0.5)
    first.acquire()
    second = WriterLease(blobs, ttl=0.5, wait=0)
    with pytest.raises(LeaseHeldError):
        second.acquire()
    waiting = WriterLease(blobs, ttl=0.5, wait=10)
    threading.Timer(0.3, first.release).start()
    started = time.monotonic()
    waiting.acquire()
    assert 0.2 < time.monotonic() - started < 5
    waiting.ensure()

    waiting._keeper.stop()  # a stalled process: nobody renews
    time.sleep(0.6)
    waiting.ensure()  # lapsed but not taken: renewed
    waiting.lease.expires_at = 0
    thief = Lease(blobs, ttl=30, holder="thief")
    time.sleep(0.6)
    thief.acquire()
    with pytest.raises(LeaseLostError, match="thief"):
        waiting.ensure()
    waiting.release()


def test_a_free_lease_goes_to_the_process_that_waited_first(lake_storage):
    clock = FakeClock()
    holder = Lease(lake_storage.blobs, clock=clock, holder="holder")
    early = Lease(lake_storage.blobs, clock=clock, holder="early")
    late = Lease(lake_storage.blobs, clock=clock, holder="late")
    holder.acquire()
    for waiter in (early, late):
        with pytest.raises(LeaseHeldError, match="holder"):
            waiter.acquire()
        waiter.join_queue()
        clock.advance(0.5)
    holder.release()
    with pytest.raises(LeaseHeldError, match="2 other process"):
        holder.acquire()  # letting go and asking again at once does not jump the queue
    with pytest.raises(LeaseHeldError, match="1 other process"):
        late.acquire()
    early.acquire()
    assert not [i for i in lake_storage.blobs.list(early.prefix + "queue/") if early.owner in i.key]
    early.release()
    late.acquire()
    late.release()
    holder.acquire()  # the queue is empty again


def test_a_ticket_not_refreshed_lapses(lake_storage):
    clock = FakeClock()
    gone = Lease(lake_storage.blobs, clock=clock, holder="gone")
    gone.join_queue()  # then the waiter died without leaving the queue
    other = Lease(lake_storage.blobs, clock=clock, holder="other")
    with pytest.raises(LeaseHeldError, match="waited for it first"):
        other.acquire()
    clock.advance(4)
    gone.join_queue()  # a refresh keeps its place (and replaces the old ticket)
    [ticket] = lake_storage.blobs.list(gone.prefix + "queue/")
    assert ticket.key.endswith(f"{1_000_000_000:020d}-{gone.owner}-{1_009_000_000:020d}.json")
    clock.advance(4.5)
    with pytest.raises(LeaseHeldError):
        other.acquire()
    clock.advance(0.5)  # 5 s after the refresh, to the microsecond: lapsed
    other.acquire()


def test_a_waiter_that_died_on_this_machine_holds_up_nobody(lake_storage):
    here = ProcessId.current()
    dead = Lease(lake_storage.blobs, holder="crashed", process=ProcessId(here.host, _dead_pid(), here.pid_namespace))
    dead.join_queue()  # then killed while it waited
    elsewhere = Lease(
        lake_storage.blobs, holder="elsewhere", process=ProcessId("another-host", _dead_pid(), here.pid_namespace)
    )
    elsewhere.join_queue()
    restarted = Lease(lake_storage.blobs)
    with pytest.raises(LeaseHeldError, match="1 other process"):  # a PID on another machine says nothing
        restarted.acquire()
    elsewhere.leave_queue()
    restarted.acquire()
    assert lake_storage.blobs.list(restarted.prefix + "queue/") == []


def test_a_holder_in_a_tight_loop_cannot_starve_a_waiter(lake_storage):
    hot = Lease(lake_storage.blobs, ttl=30, holder="hot")
    stop = threading.Event()
    turns = {"hot": 0}

    def hot_loop() -> None:
        while not stop.is_set():
            hot.acquire_within(30)
            turns["hot"] += 1
            time.sleep(0.01)  # short work, then at once asks again
            hot.release()

    thread = threading.Thread(target=hot_loop)
    thread.start()
    try:
        while turns["hot"] < 3:
            time.sleep(0.01)
        waiter = Lease(lake_storage.blobs, ttl=30, holder="waiter")
        for _ in range(3):
            started = time.monotonic()
            waiter.acquire_within(10)
            assert time.monotonic() - started < 5, "the waiter was starved"
            waiter.release()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert turns["hot"] > 3


def test_acquire_within_gives_up_at_its_deadline_and_leaves_the_queue(lake_storage):
    clock = FakeClock()
    Lease(lake_storage.blobs, ttl=30, clock=clock, holder="holder").acquire()
    waiter = Lease(lake_storage.blobs, clock=clock, holder="waiter")
    with pytest.raises(LeaseHeldError, match="holder"):
        waiter.acquire_within(0.3)
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.15])
    assert clock.time() == pytest.approx(1_000.3)
    assert lake_storage.blobs.list(waiter.prefix + "queue/") == []


def test_acquire_within_gives_up_and_leaves_the_queue(tmp_path):
    """The same on the real clock (on one tier: the fake-clock test covers them all)."""
    blobs = LocalBlobs(str(tmp_path))
    Lease(blobs, ttl=30, holder="holder").acquire()
    waiter = Lease(blobs, holder="waiter")
    started = time.monotonic()
    with pytest.raises(LeaseHeldError, match="holder"):
        waiter.acquire_within(0.3)
    assert 0.25 < time.monotonic() - started < 3
    assert blobs.list(waiter.prefix + "queue/") == []
