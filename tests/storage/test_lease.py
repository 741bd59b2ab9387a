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
