"""The writer lease: one holder at a time, on every tier."""

from __future__ import annotations

import pytest

from rhei_lake.errors import LeaseHeldError, LeaseLostError
from rhei_lake.storage.lease import Lease, LeaseKeeper


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_second_holder_is_refused_until_expiry(lake_storage):
    clock = Clock()
    first = Lease(lake_storage.blobs, ttl=30, clock=clock, holder="first")
    second = Lease(lake_storage.blobs, ttl=30, clock=clock, holder="second")
    first.acquire()
    with pytest.raises(LeaseHeldError, match="first"):
        second.acquire()
    clock.now += 20
    first.renew()
    clock.now += 20  # would have expired without the renewal
    with pytest.raises(LeaseHeldError):
        second.acquire()
    clock.now += 31
    second.acquire()  # expired: taken over
    with pytest.raises(LeaseLostError):
        first.renew()
    with pytest.raises(LeaseLostError):
        first.check()


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


def test_keeper_renews_in_the_background(lake_storage):
    import time

    lease = Lease(lake_storage.blobs, ttl=0.3)
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
    from rhei_lake.storage.lease import ProcessId

    here = ProcessId.current()
    dead = Lease(lake_storage.blobs, ttl=3600, holder="crashed", process=ProcessId(here.host, _dead_pid(), here.pid_namespace))
    dead.acquire()
    taker = Lease(lake_storage.blobs, ttl=30)
    taker.acquire()  # taken over at once, long before the TTL
    taker.release()

    elsewhere = Lease(lake_storage.blobs, ttl=3600, holder="other host",
                      process=ProcessId("another-host", _dead_pid(), here.pid_namespace))
    elsewhere.acquire()
    with pytest.raises(LeaseHeldError, match="other host"):
        Lease(lake_storage.blobs, ttl=30).acquire()  # a PID on another machine says nothing


def test_writer_lease_waits_renews_a_lapsed_lease_and_detects_a_takeover(lake_storage):
    import threading
    import time

    from rhei_lake.storage.lease import WriterLease

    first = WriterLease(lake_storage.blobs, ttl=0.5)
    first.acquire()
    second = WriterLease(lake_storage.blobs, ttl=0.5, wait=0)
    with pytest.raises(LeaseHeldError):
        second.acquire()
    waiting = WriterLease(lake_storage.blobs, ttl=0.5, wait=10)
    threading.Timer(0.3, first.release).start()
    started = time.monotonic()
    waiting.acquire()
    assert 0.2 < time.monotonic() - started < 5
    waiting.ensure()

    waiting._keeper.stop()  # a stalled process: nobody renews
    time.sleep(0.6)
    waiting.ensure()  # lapsed but not taken: renewed
    waiting.lease.expires_at = 0
    thief = Lease(lake_storage.blobs, ttl=30, holder="thief")
    time.sleep(0.6)
    thief.acquire()
    with pytest.raises(LeaseLostError, match="thief"):
        waiting.ensure()
    waiting.release()


def test_a_free_lease_goes_to_the_process_that_waited_first(lake_storage):
    clock = Clock()
    holder = Lease(lake_storage.blobs, clock=clock, holder="holder")
    early = Lease(lake_storage.blobs, clock=clock, holder="early")
    late = Lease(lake_storage.blobs, clock=clock, holder="late")
    holder.acquire()
    for waiter in (early, late):
        with pytest.raises(LeaseHeldError, match="holder"):
            waiter.acquire()
        waiter.join_queue()
        clock.now += 0.5
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
    clock = Clock()
    gone = Lease(lake_storage.blobs, clock=clock, holder="gone")
    gone.join_queue()  # then the waiter died without leaving the queue
    other = Lease(lake_storage.blobs, clock=clock, holder="other")
    with pytest.raises(LeaseHeldError, match="waited for it first"):
        other.acquire()
    clock.now += 4
    gone.join_queue()  # a refresh keeps its place (and replaces the old ticket)
    assert len(lake_storage.blobs.list(gone.prefix + "queue/")) == 1
    clock.now += 4
    with pytest.raises(LeaseHeldError):
        other.acquire()
    clock.now += 2
    other.acquire()


def test_a_waiter_that_died_on_this_machine_holds_up_nobody(lake_storage):
    from rhei_lake.storage.lease import ProcessId

    here = ProcessId.current()
    dead = Lease(lake_storage.blobs, holder="crashed", process=ProcessId(here.host, _dead_pid(), here.pid_namespace))
    dead.join_queue()  # then killed while it waited
    elsewhere = Lease(lake_storage.blobs, holder="elsewhere",
                      process=ProcessId("another-host", _dead_pid(), here.pid_namespace))
    elsewhere.join_queue()
    restarted = Lease(lake_storage.blobs)
    with pytest.raises(LeaseHeldError, match="1 other process"):  # a PID on another machine says nothing
        restarted.acquire()
    elsewhere.leave_queue()
    restarted.acquire()
    assert lake_storage.blobs.list(restarted.prefix + "queue/") == []


def test_a_holder_in_a_tight_loop_cannot_starve_a_waiter(lake_storage):
    import threading
    import time

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


def test_acquire_within_gives_up_and_leaves_the_queue(lake_storage):
    import time

    Lease(lake_storage.blobs, ttl=30, holder="holder").acquire()
    waiter = Lease(lake_storage.blobs, holder="waiter")
    started = time.monotonic()
    with pytest.raises(LeaseHeldError, match="holder"):
        waiter.acquire_within(0.3)
    assert 0.25 < time.monotonic() - started < 3
    assert lake_storage.blobs.list(waiter.prefix + "queue/") == []
